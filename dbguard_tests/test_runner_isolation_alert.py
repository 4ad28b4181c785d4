"""Issue #13, item 13: a failing isolation_report carries its reason (and the database) into the failure event
the alert sensor reads, like the other assets."""
from __future__ import annotations

import dagster as dg
import psycopg
import pytest

from dbguard_pipeline.defs.isolation import isolation_checks, isolation_report
from dbguard_pipeline.defs.resources import PostgresResource

from .dagster_support import event_log_text, step_failures, write_config


def _materialize(dsn: str, config_path: str | None = None):
    with dg.instance_for_test() as instance:
        result = dg.materialize([isolation_report, *isolation_checks], instance=instance, raise_on_error=False,
                                resources={"database": PostgresResource(dsn=dsn, config_path=config_path)})
        return result, event_log_text(instance, result.run_id)


@pytest.mark.security
def test_an_unreachable_database_fails_the_probe_with_its_reason():
    result, log = _materialize("postgresql://app:Iso-Down-pw-7@127.0.0.1:1/prod")
    assert not result.success
    msg = step_failures(result)["isolation_report"]
    assert msg.startswith("isolation probe failed: cannot connect to app@127.0.0.1:1/prod"), msg
    assert "\n" not in msg and "Iso-Down-pw-7" not in log


@pytest.mark.integration
def test_a_database_error_during_the_probe_fails_with_its_reason(demo_dsn, tmp_path):
    cfg = write_config(tmp_path / "dbguard.yaml", statement_timeout_ms=300, lock_timeout_ms=10_000)
    blocker = psycopg.connect(demo_dsn)
    try:
        blocker.execute("LOCK TABLE pg_catalog.pg_policy IN ACCESS EXCLUSIVE MODE")  # the catalog hangs
        result, _ = _materialize(demo_dsn, cfg)
    finally:
        blocker.close()
    assert not result.success
    msg = step_failures(result)["isolation_report"]
    assert msg.startswith("isolation probe failed: ") and "timeout" in msg and "\n" not in msg, msg
    assert "Error occurred while executing" not in msg
