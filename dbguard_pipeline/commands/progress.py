"""Progress on standard error while a long command works, when standard error is a terminal: a spinner naming
the phase ("introspecting the schema"), and a bar with counts for the loops the core ticks
(:mod:`dbguard_pipeline.progress`): "data metrics: tables 120/300", "probes: tables 12/40", "round trips:
fixes 3/9". Nothing when standard error is not a terminal (CI logs and pipes stay clean) and nothing with
``--quiet``. The bar is transient: it is erased when the command ends, so the report is all that stays.

Drawn with ``rich`` (a core dependency, pinned in requirements.lock); without it, plain ``\\r`` lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class Progress:
    """What a command tells the user while it works: ``phase(text)`` (no count) and ``count(label, done,
    total)`` (the core's ticks arrive here)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def phase(self, text: str) -> None:
        pass

    def count(self, label: str, done: int, total: int) -> None:
        pass


class _RichProgress(Progress):
    def __init__(self, bar: Any):
        super().__init__(True)
        self._bar = bar
        self._task = bar.add_task("starting", total=None, counts="")

    def phase(self, text: str) -> None:
        self._bar.update(self._task, description=text, total=None, completed=0, counts="", refresh=True)

    def count(self, label: str, done: int, total: int) -> None:
        self._bar.update(
            self._task, description=label, total=max(total, 1), completed=done, counts=f"{done}/{total}", refresh=True
        )


class _PlainProgress(Progress):
    """One line rewritten in place with ``\\r`` (no rich)."""

    def __init__(self, stream: TextIO):
        super().__init__(True)
        self._stream = stream
        self._width = 0

    def _show(self, text: str) -> None:
        pad = max(self._width - len(text), 0)
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()
        self._width = len(text)

    def phase(self, text: str) -> None:
        self._show(text + " ...")

    def count(self, label: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        self._show(f"{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")

    def clear(self) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(*, quiet: bool = False, color: bool = True) -> Iterator[Progress]:
    """Listen to the core's ticks while the block runs; draw them only on a terminal and without ``quiet``."""
    from dbguard_pipeline.progress import listening

    if quiet or not stderr_is_terminal():
        yield Progress(enabled=False)
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichBar
    except ImportError:
        plain = _PlainProgress(sys.stderr)
        with listening(plain.count):
            try:
                yield plain
            finally:
                plain.clear()
        return
    console = Console(file=sys.stderr, no_color=not color, highlight=False)
    with RichBar(
        SpinnerColumn("dots"),
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        shown: Progress = _RichProgress(bar)
        with listening(shown.count):
            yield shown
