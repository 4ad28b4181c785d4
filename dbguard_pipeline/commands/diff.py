"""dbguard diff: compare two databases or snapshots; what changed, and what got weaker."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.model.schema import Snapshot

DESCRIPTION = (
    "Compare two databases or schema snapshots (JSON written by `dbguard introspect --out`): tables, "
    "columns, constraints, indexes, row level security, policies, grants, views, functions and roles, "
    "with the changes that weaken tenant isolation marked and the audit findings that appeared or went "
    "away. SOURCE and TARGET are each a snapshot file or a database URL. Exit 0, or 1 with "
    "--fail-on-weaker when something got weaker; 2 on errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="before: a snapshot JSON file or a database URL")
    parser.add_argument("target", metavar="TARGET", help="after: a snapshot JSON file or a database URL")
    parser.add_argument("--config", metavar="FILE", help="dbguard.yaml (default: $DBGUARD_CONFIG or ./dbguard.yaml)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument("--out", metavar="FILE", help="write the diff here (default: standard output)")
    parser.add_argument(
        "--fail-on-weaker",
        action="store_true",
        help="exit 1 when a change weakens tenant isolation or a critical or warning finding is new",
    )


def _looks_like_dsn(arg: str) -> bool:
    return "://" in arg or "=" in arg


def _is_snapshot_path(arg: str) -> bool:
    """An existing file ending in .json or starting with '{'; a missing *.json path that is not a URL."""
    p = Path(arg)
    try:
        if p.is_file():
            if arg.lower().endswith(".json"):
                return True
            with p.open("rb") as fh:
                return fh.read(4096).lstrip().startswith(b"{")
    except OSError:
        return False
    # never echo a URL as a file name: it may hold a password
    return arg.lower().endswith(".json") and not p.exists() and not _looks_like_dsn(arg)


def load_snapshot_file(arg: str, side: str) -> Snapshot:
    """Read and check a snapshot written by ``dbguard introspect --out``; one-line errors."""
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.model.schema import Snapshot
    from dbguard_pipeline.model.snapshot_json import check_snapshot_json, from_jsonable, newer_format

    p = Path(arg)
    if p.is_dir():
        raise DbguardError(f"{side} {arg} is a directory, not a snapshot file")
    if not p.is_file():
        raise DbguardError(f"{side} snapshot file not found: {arg}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DbguardError(f"{side} {arg} is not a snapshot: not UTF-8 text") from None
    except OSError as exc:
        raise DbguardError(f"cannot read {side} {arg}: {exc.strerror or exc}") from None
    if not text.lstrip().startswith("{"):
        raise DbguardError(
            f"{side} {arg} is not a snapshot: expected a JSON object written by dbguard introspect --out"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DbguardError(
            f"{side} {arg} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise DbguardError(f"{side} {arg} is not a snapshot: JSON nested too deeply") from None
    newer = newer_format(data)
    if newer:
        raise DbguardError(f"{side} {arg}: {newer}")
    problem = check_snapshot_json(data)
    if problem:
        raise DbguardError(
            f"{side} {arg} is not a dbguard snapshot: {problem} (write one with dbguard introspect --out FILE)"
        )
    snapshot: Snapshot = from_jsonable(Snapshot, data)
    return snapshot


def load_side(arg: str, side: str, config: Config) -> tuple[Snapshot, str, str]:
    """(snapshot, label, kind) for SOURCE or TARGET: a snapshot file, else a database URL (introspected
    read-only). The label never holds a password."""
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.pg.dsn import describe_dsn, parse_dsn

    if not arg or not arg.strip():
        raise DbguardError(f"{side} is empty: give a snapshot file or a database URL")
    if _is_snapshot_path(arg):
        return load_snapshot_file(arg, side), arg, "snapshot"
    if Path(arg).is_dir():
        raise DbguardError(f"{side} {arg} is a directory, not a snapshot file")
    if Path(arg).exists():
        raise DbguardError(
            f"{side} {arg} is not a snapshot: expected a JSON object written by dbguard introspect --out"
        )
    if not _looks_like_dsn(arg):
        raise DbguardError(f"{side} {arg}: no such snapshot file, and not a database URL")
    from dbguard_pipeline.pg.catalog import introspect

    try:
        parse_dsn(arg)
        snapshot = introspect(
            arg,
            list(config.schemas) or None,
            statement_timeout_ms=config.statement_timeout_ms,
            lock_timeout_ms=config.lock_timeout_ms,
        )
    except DbguardError as exc:
        raise type(exc)(f"{side}: {exc}") from None
    return snapshot, describe_dsn(arg), "database"


def run(args: argparse.Namespace) -> int:
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.diff import closing_line, diff_snapshots, render

    config = load_config(args.config)
    a, label_a, kind_a = load_side(args.source, "source", config)
    b, label_b, kind_b = load_side(args.target, "target", config)
    d = diff_snapshots(a, b, config, source=label_a, target=label_b, source_kind=kind_a, target_kind=kind_b)
    write_output(render(d, args.format), args.out)
    if args.out and args.out != "-":
        print(f"wrote {args.out}: {closing_line(d)}", file=sys.stderr)
    return 1 if args.fail_on_weaker and d.weakens_isolation else 0
