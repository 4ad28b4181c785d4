"""dbguard analyze: what row level security costs each tenant table, measured as the app role, with the
causes read from the plans and fixes proven faster on a scratch copy. No Dagster here."""
from dbguard_pipeline.analyze.report import AnalyzeReport, Cause, Suggestion, TableResult
from dbguard_pipeline.analyze.run import WARN_OVERHEAD, Options, analyze
from dbguard_pipeline.analyze.session import AnalyzeRefused
from dbguard_pipeline.analyze.suggest import plan_index, plan_optimize_policy

__all__ = ["WARN_OVERHEAD", "AnalyzeRefused", "AnalyzeReport", "Cause", "Options", "Suggestion", "TableResult",
           "analyze", "plan_index", "plan_optimize_policy"]
