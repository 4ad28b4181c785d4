"""dbguard demo: embedded PostgreSQL + the demo database + what the audit finds."""
from __future__ import annotations

import sys
import time

DESCRIPTION = ("Start the embedded PostgreSQL (data directory in the cache folder, reused across runs), "
               "load the demo database afresh and print what dbguard finds.")


def add_arguments(parser):
    parser.add_argument("--keep", action="store_true", help="reuse the demo database as it is instead of reloading it")
    parser.add_argument("--print-dsn", action="store_true", help="print the demo database URL and exit")


def run(args) -> int:
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.pg.embedded import dbguard_home
    from dbguard_pipeline.pg.dsn import describe_dsn
    from dbguard_pipeline.demo import ensure_demo_database

    t0 = time.perf_counter()
    dsn = ensure_demo_database(reset=not args.keep)
    if args.print_dsn:
        print(dsn)
        return 0
    print(f"demo database ready: {describe_dsn(dsn)} (data directory {dbguard_home() / 'pgdata'}, "
          f"{time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    try:
        from dbguard_pipeline.audit import run_audit_for_demo
    except ImportError:
        run_audit_for_demo = None
    if run_audit_for_demo is not None:
        return run_audit_for_demo(dsn)
    snap = introspect(dsn)
    s = snap.summary()
    print(f"{snap.database} on PostgreSQL {snap.server_version}: {s['tables']} tables, "
          f"{s['tables_with_rls']} with RLS, {s['tables_without_rls']} without, {s['policies']} policies")
    for t in snap.tables:
        rls = "RLS on " if t.rls_enabled else "RLS off"
        print(f"  {t.qualified:<40} {rls}  {len(t.policies)} policies  ~{max(t.row_estimate, 0)} rows")
    return 0
