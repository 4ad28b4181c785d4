"""Audit reports: text, json, sarif, junit (the one JUnit writer)."""

from dbguard_pipeline.report.json import render_json
from dbguard_pipeline.report.junit import audit_junit
from dbguard_pipeline.report.render import FORMATS, render
from dbguard_pipeline.report.sarif import to_sarif
from dbguard_pipeline.report.text import render_text

__all__ = ["FORMATS", "audit_junit", "render", "render_json", "render_text", "to_sarif"]
