"""Reports from one AuditResult: text for people (:mod:`.text`), json (:mod:`.json`), sarif for GitHub code
scanning (:mod:`.sarif`) and junit for CI (:mod:`.junit`).

Nothing here reads the database or a DSN: no password can reach a report.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.report.json import dumps, render_json
from dbguard_pipeline.report.junit import audit_junit
from dbguard_pipeline.report.sarif import to_sarif
from dbguard_pipeline.report.text import render_text

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

FORMATS = ("text", "json", "sarif", "junit")


def render(result: AuditResult, fmt: str = "text", *, fail_on: str = "critical", color: Optional[bool] = None) -> str:
    """The report as a string. ``color=None``: colour when standard output is a terminal (and NO_COLOR is
    not set)."""
    if fmt == "text":
        if color is None:
            color = _stdout_is_tty() and not os.environ.get("NO_COLOR")
        return render_text(result, color=color, fail_on=fail_on)
    if fmt == "json":
        return render_json(result)
    if fmt == "sarif":
        return dumps(to_sarif(result))
    if fmt == "junit":
        return audit_junit(result, fail_on=fail_on)
    raise DbguardError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
