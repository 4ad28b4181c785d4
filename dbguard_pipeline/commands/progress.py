"""Progress on standard error while a long command works: a rich spinner naming the phase (introspection,
data metrics and rules, ...) when standard error is a terminal, nothing otherwise (CI logs and pipes stay
clean), nothing with ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional


class Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._status: Optional[Any] = None

    def phase(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(*, quiet: bool = False, color: bool = True) -> Iterator[Progress]:
    p = Progress(enabled=not quiet and stderr_is_terminal())
    if not p.enabled:
        yield p
        return
    from rich.console import Console

    console = Console(file=sys.stderr, no_color=not color, highlight=False)
    with console.status("starting", spinner="dots") as status:
        p._status = status
        yield p
