"""Audit reports: text (grouped or sectioned), json, sarif, junit (the one JUnit writer), github, markdown;
baselines."""

from dbguard_pipeline.report.baseline import apply_baseline, load_baseline, render_baseline
from dbguard_pipeline.report.json import render_json
from dbguard_pipeline.report.junit import audit_junit
from dbguard_pipeline.report.render import FORMATS, render, use_color
from dbguard_pipeline.report.sarif import to_sarif
from dbguard_pipeline.report.text import render_text

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
