"""dbguard demo: embedded PostgreSQL + the demo database + what the audit finds."""

from __future__ import annotations

import argparse
import sys
import time

DESCRIPTION = (
    "Start the embedded PostgreSQL (data directory in the cache folder, reused across runs), "
    "load the demo database afresh and print what dbguard finds."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="reuse the demo database as it is instead of reloading it")
    parser.add_argument("--print-dsn", action="store_true", help="print the demo database URL and exit")


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.demo import ensure_demo_database
    from dbguard_pipeline.pg.dsn import describe_dsn
    from dbguard_pipeline.pg.embedded import dbguard_home

    t0 = time.perf_counter()
    dsn = ensure_demo_database(reset=not args.keep)
    if args.print_dsn:
        print(dsn)
        return 0
    print(
        f"demo database ready: {describe_dsn(dsn)} (data directory {dbguard_home() / 'pgdata'}, "
        f"{time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )
    return report_audit(dsn)


def report_audit(dsn: str) -> int:
    """Audit the demo database with the default config, print the text report, return the exit code
    (1: critical findings, as the demo has)."""
    from dbguard_pipeline import services
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.report import render

    result = services.audit(dsn, Config())
    sys.stdout.write(render(result, "text", color=None))
    sys.stdout.flush()
    return result.exit_code("critical")
