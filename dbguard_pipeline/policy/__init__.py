"""Policy expressions read on the PostgreSQL parse tree (pglast)."""
from dbguard_pipeline.policy.analyzer import (TENANT, Analyzer, ExprAnalysis, always_true, analyzer_for,
                                              per_row_calls, pins_tenant, unsafe_setting_casts)

__all__ = ["TENANT", "Analyzer", "ExprAnalysis", "always_true", "analyzer_for", "per_row_calls", "pins_tenant",
           "unsafe_setting_casts"]
