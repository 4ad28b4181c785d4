"""dbguard introspect: write the JSON schema snapshot."""
from __future__ import annotations

import sys

from ..cli import add_database_arguments

DESCRIPTION = "Write the JSON schema snapshot of a database (tables, columns, constraints, indexes, RLS, policies, grants, views, functions)."


def add_arguments(parser):
    add_database_arguments(parser)
    parser.add_argument("--schema", action="append", metavar="S", help="only this schema (repeatable)")
    parser.add_argument("--out", metavar="FILE", help="write the snapshot here (default: standard output)")


def run(args) -> int:
    from ..catalog import introspect
    from ..config import load_config
    from ..db import resolve_dsn
    from ..model import dump_snapshot
    from ..output import write_output

    config = load_config(args.config)
    dsn = resolve_dsn(args.dsn)
    snapshot = introspect(dsn, args.schema, statement_timeout_ms=config.statement_timeout_ms,
                          lock_timeout_ms=config.lock_timeout_ms)
    if args.schema:
        missing = [s for s in args.schema if s not in snapshot.schemas]
        if missing:
            from ..errors import NotFoundError

            raise NotFoundError(f"schema not found in {snapshot.database}: {', '.join(missing)}")
    write_output(dump_snapshot(snapshot) + "\n", args.out)
    if args.out:
        s = snapshot.summary()
        print(f"wrote {args.out}: {s['tables']} tables, {s['policies']} policies, {s['views']} views, "
              f"{s['functions']} functions from {snapshot.database}", file=sys.stderr)
    return 0
