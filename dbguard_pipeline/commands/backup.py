"""dbguard backup: take a logical backup of tables (or the whole database), list backups, prune old ones."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbguard_pipeline.commands._args import add_database_arguments

if TYPE_CHECKING:
    from dbguard_pipeline.backup import Listed

DESCRIPTION = (
    "Take a logical backup (pg_dump custom format) of the tables named with --table, or of the whole database "
    "with --all, into a new folder inside --out-dir, with a manifest: per table the row count and a checksum of "
    "its rows, taken on the same snapshot as the dump. 'list' shows the backups, newest first; 'prune' deletes "
    "those beyond --keep N / --keep-days D (per database; the newest verified backup is always kept). "
    "Restore with dbguard restore."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action", nargs="?", default="take", choices=("take", "list", "prune"), help="take (default) | list | prune"
    )
    add_database_arguments(parser)
    parser.add_argument("--out-dir", metavar="DIR", required=True, help="the folder that holds the backups")
    parser.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="TABLE",
        help="a table to back up (schema.table, SQL quoting); repeat for more",
    )
    parser.add_argument("--all", action="store_true", help="back up every table of the database")
    parser.add_argument("--label", default="", help="a word added to the backup's folder name (e.g. the migration)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="after taking it, restore the backup into a scratch database and verify it",
    )
    parser.add_argument("--keep", type=int, metavar="N", help="retention: keep the newest N backups of the database")
    parser.add_argument("--keep-days", type=float, metavar="D", help="retention: keep backups younger than D days")
    parser.add_argument("--dry-run", action="store_true", help="prune: show what would be deleted, delete nothing")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    parser.add_argument("-v", "--verbose", action="store_true", help="progress lines on stderr")


def _check_flags(args: argparse.Namespace) -> None:
    from dbguard_pipeline.errors import DbguardError

    taking = {"--table": bool(args.table), "--all": args.all, "--label": bool(args.label), "--verify": args.verify}
    if args.action != "take":
        wrong = [flag for flag, given in taking.items() if given]
        if args.action == "list":
            wrong += [f for f, v in (("--keep", args.keep), ("--keep-days", args.keep_days)) if v is not None]
        if wrong:
            raise DbguardError(
                f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not used by 'backup {args.action}'"
            )
        return
    if args.table and args.all:
        raise DbguardError("give either --table (some tables) or --all (the whole database), not both")
    if not args.table and not args.all:
        raise DbguardError("name the tables to back up with --table, or back up the whole database with --all")
    if args.dry_run:
        raise DbguardError("--dry-run is for 'backup prune'")


def _tables_text(b: Listed) -> str:
    m = b.manifest
    assert m is not None
    if m.scope == "all":
        return f"all tables ({len(m.tables)})"
    names = [t.qualified for t in m.tables]
    return ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")


def _list(args: argparse.Namespace) -> int:
    from dbguard_pipeline.backup import human_bytes, list_backups
    from dbguard_pipeline.text import escape_controls

    backups = list_backups(args.out_dir)
    if args.format == "json":
        print(json.dumps([b.to_json() for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no backups in {args.out_dir}")
    for b in backups:
        m = b.manifest
        name = escape_controls(b.path.name)
        if m is None:
            print(f"{name}  {escape_controls(b.status)}")
            continue
        print(
            f"{name}  {escape_controls(m.database)}  {escape_controls(m.created_at)}  {_tables_text(b)}  "
            f"{m.rows} rows  {human_bytes(m.dump_bytes)}  {escape_controls(b.status)}"
        )
    return 0


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    if args.verbose:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda _line: None


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.backup import prune, restore, take
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.services import resolve_dsn

    _check_flags(args)
    if args.keep is not None and args.keep < 1:
        raise DbguardError("--keep must be 1 or more")
    if args.keep_days is not None and args.keep_days < 0:
        raise DbguardError("--keep-days must be 0 or more")
    if args.action == "list":
        return _list(args)
    if args.action == "prune":
        doomed = prune(args.out_dir, keep=args.keep, keep_days=args.keep_days, dry_run=args.dry_run)
        if args.format == "json":
            print(json.dumps({"deleted" if not args.dry_run else "would_delete": [p.name for p in doomed]}))
        else:
            verb = "would delete" if args.dry_run else "deleted"
            print(
                f"{verb} {len(doomed)} backup{'s' if len(doomed) != 1 else ''}"
                + "".join(f"\n  {p.name}" for p in doomed)
            )
        return 0

    load_config(args.config)  # validates the file; the backup needs nothing from it
    dsn = resolve_dsn(args.dsn)
    backup = take(dsn, None if args.all else args.table, out_dir=args.out_dir, label=args.label, log=_log(args))
    pruned = []
    if args.keep is not None or args.keep_days is not None:
        pruned = prune(args.out_dir, keep=args.keep, keep_days=args.keep_days, database=backup.manifest.database)
    verified = restore(backup.path, dsn, scratch=True, log=_log(args)) if args.verify else None
    if args.format == "json":
        out: dict[str, Any] = {
            "path": str(backup.path),
            "manifest": backup.manifest.to_json(),
            "pruned": [p.name for p in pruned],
        }
        if verified is not None:
            out["verified"] = verified.ok
            out["mismatches"] = [c.line() for c in verified.checks if not c.ok]
        print(json.dumps(out, indent=2))
    else:
        print(backup.summary())
        if verified is not None:
            print("\n".join(verified.lines()))
        if pruned:
            print(
                f"pruned {len(pruned)} older backup{'s' if len(pruned) != 1 else ''}: {', '.join(p.name for p in pruned)}"
            )
    return 1 if verified is not None and not verified.ok else 0
