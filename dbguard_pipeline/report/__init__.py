"""Audit reports: text (grouped or sectioned), json, sarif, junit (the one JUnit writer), github, markdown;
baselines."""

from typing import TYPE_CHECKING, Any

from dbguard_pipeline.report.baseline import apply_baseline, load_baseline, render_baseline
from dbguard_pipeline.report.json import render_json
from dbguard_pipeline.report.render import FORMATS, render, use_color

if TYPE_CHECKING:
    from dbguard_pipeline.report.junit import audit_junit
    from dbguard_pipeline.report.sarif import to_sarif
    from dbguard_pipeline.report.text import render_text

_LAZY = {
    "audit_junit": "dbguard_pipeline.report.junit",
    "to_sarif": "dbguard_pipeline.report.sarif",
    "render_text": "dbguard_pipeline.report.text",
}


def __getattr__(name: str) -> Any:
    """The junit, sarif and sectioned-text writers load when first used (``validate --format json`` needs none)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS",
    "apply_baseline",
    "audit_junit",
    "load_baseline",
    "render",
    "render_baseline",
    "render_json",
    "render_text",
    "to_sarif",
    "use_color",
]
