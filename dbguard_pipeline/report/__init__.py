"""Audit reports: text, json, sarif, junit."""
from dbguard_pipeline.report.render import render, to_sarif

__all__ = ['render', 'to_sarif']
