"""dbguard introspect: write the JSON schema snapshot."""

from __future__ import annotations

import argparse
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = "Write the JSON schema snapshot of a database (tables, columns, constraints, indexes, RLS, policies, grants, views, functions)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument("--schema", action="append", metavar="S", help="only this schema (repeatable)")
    parser.add_argument("--out", metavar="FILE", help="write the snapshot here (default: standard output)")


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline import services
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import NotFoundError
    from dbguard_pipeline.model.snapshot_json import dump_snapshot

    config = load_config(args.config)
    dsn = services.resolve_dsn(args.dsn)
    snapshot = services.introspect(dsn, config, args.schema)
    if args.schema:
        missing = [s for s in args.schema if s not in snapshot.schemas]
        if missing:
            raise NotFoundError(f"schema not found in {snapshot.database}: {', '.join(missing)}")
    write_output(dump_snapshot(snapshot) + "\n", args.out)
    if args.out:
        s = snapshot.summary()
        print(
            f"wrote {args.out}: {s['tables']} tables, {s['policies']} policies, {s['views']} views, "
            f"{s['functions']} functions from {snapshot.database}",
            file=sys.stderr,
        )
    return 0
