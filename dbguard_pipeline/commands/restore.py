"""dbguard restore: put a backup's rows back (in place, one transaction) or dry-run it in a scratch database."""

from __future__ import annotations

import argparse
import json
import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Restore a backup folder written by dbguard backup. In place (the default), the backed-up tables' rows are "
    "replaced in one transaction (foreign keys re-checked, triggers not fired); the tables must still have the "
    "columns they had. --into-scratch restores into a temporary database instead, verifies and drops it. "
    "--verify recomputes row counts and checksums and compares them with the manifest: a difference rolls the "
    "restore back. The dump's sha256 is checked first. Exit code 0 identical, 1 different, 2 error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the backup folder (or its manifest.json)")
    add_database_arguments(parser)
    parser.add_argument(
        "--verify", action="store_true", help="compare row counts and checksums with the manifest before committing"
    )
    parser.add_argument(
        "--into-scratch",
        action="store_true",
        help="restore into a temporary database (a dry run; always verified), then drop it",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up when the tables stay locked by others this long (default 10)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.backup import restore
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.services import resolve_dsn

    if args.lock_timeout <= 0:
        raise DbguardError("--lock-timeout must be more than 0 seconds")
    load_config(args.config)  # validates the file; the restore needs nothing from it
    dsn = resolve_dsn(args.dsn)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else (lambda _line: None)
    result = restore(
        args.path,
        dsn,
        verify=args.verify,
        scratch=args.into_scratch,
        log=log,
        lock_timeout_ms=int(args.lock_timeout * 1000),
    )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "backup": str(result.path),
                    "database": result.database,
                    "mode": result.mode,
                    "committed": result.committed,
                    "rows_loaded": result.rows_loaded,
                    "verified": result.verified,
                    "ok": result.ok,
                    "tables": [
                        {
                            "schema": c.entry.schema,
                            "name": c.entry.name,
                            "ok": c.ok,
                            "rows": c.rows,
                            "checksum": c.checksum,
                            "expected_rows": c.entry.rows,
                            "expected_checksum": c.entry.checksum,
                            "problem": c.problem,
                        }
                        for c in result.checks
                    ],
                    "duration_s": round(result.duration_s, 3),
                    "note": result.note,
                },
                indent=2,
            )
        )
    else:
        print("\n".join(result.lines()))
    return 0 if result.ok else 1
