"""Policy expressions read on the PostgreSQL parse tree (typed pglast nodes): see analyzer.py."""

from dbguard_pipeline.policy.analyzer import (
    TENANT,
    Analyzer,
    ExprAnalysis,
    always_true,
    analyzer_for,
    per_row_calls,
    pins_tenant,
    unsafe_setting_casts,
)
from dbguard_pipeline.policy.context import ContextKind
from dbguard_pipeline.policy.restriction import Level

__all__ = [
    "TENANT",
    "Analyzer",
    "ContextKind",
    "ExprAnalysis",
    "Level",
    "always_true",
    "analyzer_for",
    "per_row_calls",
    "pins_tenant",
    "unsafe_setting_casts",
]
