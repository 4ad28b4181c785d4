"""Wall time of the audit through Dagster: one full nightly run of the demo database, and a fleet run of
three databases (copies of the demo) in one run with the multiprocess executor.

    python -m bench.bench_dagster [--repeat 3]

Each run uses a persistent throwaway instance (SQLite in a temporary DAGSTER_HOME), as `dagster dev` or a
deployment does. ``execute_job`` with the job's own executor is what a launched run does (one process per
step); ``execute_in_process`` is shown alongside as the floor (no process start-up).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import dagster as dg
    import yaml
    from psycopg import sql

    from dbguard_pipeline.demo import DEMO_DATABASE, ensure_demo_database
    from dbguard_pipeline.pg.dsn import with_database
    from dbguard_pipeline.pg.embedded import embedded_dsn
    from dbguard_pipeline.pg.session import connect

    demo = ensure_demo_database()
    server = embedded_dsn("postgres")
    fleet = {}
    with connect(server, autocommit=True) as conn:
        for name in ("bench_fleet_a", "bench_fleet_b", "bench_fleet_c"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(DEMO_DATABASE))
            )
            fleet[name] = with_database(server, name)
    tmp = tempfile.mkdtemp(prefix="dbguard-bench-dagster-")
    cfg = os.path.join(tmp, "dbguard.yaml")
    with open(cfg, "w", encoding="utf-8") as fh:
        yaml.safe_dump({"databases": [{"name": n, "dsn_env": f"BENCH_{n.upper()}"} for n in fleet]}, fh)
    os.environ.update({f"BENCH_{n.upper()}": dsn for n, dsn in fleet.items()})
    os.environ["DBGUARD_CONFIG"] = cfg
    os.environ["DBGUARD_DATABASE_URL"] = demo

    home = os.path.join(tmp, "dagster_home")
    os.makedirs(home)
    with open(os.path.join(home, "dagster.yaml"), "w", encoding="utf-8") as fh:
        fh.write("telemetry:\n  enabled: false\n")

    from dbguard_pipeline.defs.definitions import resolve_job

    def recon(name):
        return dg.build_reconstructable_job(
            "dbguard_pipeline.defs.definitions", "resolve_job", reconstructable_args=(name,)
        )

    rows = []
    with dg.DagsterInstance.from_config(home) as instance:
        for label, fn in [
            (
                "demo, nightly_audit_job, in process",
                lambda: resolve_job("nightly_audit_job").execute_in_process(instance=instance, raise_on_error=False),
            ),
            (
                "demo, nightly_audit_job, multiprocess (as launched)",
                lambda: dg.execute_job(recon("nightly_audit_job"), instance=instance, raise_on_error=False),
            ),
            (
                "3 databases, fleet_audit_job, multiprocess (as launched)",
                lambda: dg.execute_job(recon("fleet_audit_job"), instance=instance, raise_on_error=False),
            ),
            (
                "3 databases, fleet_audit_job, in process",
                lambda: resolve_job("fleet_audit_job").execute_in_process(instance=instance, raise_on_error=False),
            ),
        ]:
            times = [_timed(fn) for _ in range(args.repeat)]
            rows.append((label, statistics.median(times), min(times)))
    with connect(server, autocommit=True) as conn:
        for name in fleet:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    print("| run | median s | best s |")
    print("|---|---|---|")
    for label, med, best in rows:
        print(f"| {label} | {med:.2f} | {best:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
