"""How far a long loop of the core is, for whoever listens: ``tick("tables", 120, 300)``.

The core reports counts (data metrics per table and per reference, probes per table, fixes planned and
round-tripped per fix); it never draws anything. The CLI (``commands/progress.py``) listens while it runs a
command and draws a bar on standard error when that is a terminal; nothing listens otherwise (Dagster, the
pytest plugin, library callers), and then a tick costs one context-variable lookup. The listener is held in a
``ContextVar``: it follows the caller's context, and a thread started by the core does not inherit it (such a
thread's ticks are dropped, never mis-attributed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional

Listener = Callable[[str, int, int], None]  # (what is counted, done, total)

_listener: ContextVar[Optional[Listener]] = ContextVar("dbguard_progress", default=None)


def tick(label: str, done: int, total: int) -> None:
    """``done`` of ``total`` ``label`` (e.g. "tables") are finished; a no-op when nobody listens."""
    listener = _listener.get()
    if listener is not None:
        listener(label, done, total)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def muted() -> Iterator[None]:
    """Inner loops stay silent (the probe a fix's round trip runs must not take over the fixes' count)."""
    token = _listener.set(None)
    try:
        yield
    finally:
        _listener.reset(token)
