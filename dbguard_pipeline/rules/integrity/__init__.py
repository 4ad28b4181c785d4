"""Data rules: they read the measured metrics (:mod:`dbguard_pipeline.pg.metrics`), never the database.

A table or reference that could not be measured produces no finding here: it is listed as *not measured*
in the audit result (``AuditResult.not_measured``) and in every report format, never counted as clean.
"""
