"""Rules over the Great Expectations suites declared in dbguard.yaml (run by
:func:`dbguard_pipeline.pg.expectations.run_expectations` and attached to the metrics)."""
