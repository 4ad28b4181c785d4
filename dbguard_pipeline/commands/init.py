"""dbguard init: write a dbguard.yaml for the connected database, inferred from its schema and policies."""

from __future__ import annotations

import argparse
import os
import sys

DESCRIPTION = (
    "Write a dbguard.yaml for the connected database (read-only): the tenant column, the tenants table, the "
    "tenant context (setting, JWT claim or membership helper) and the app role, inferred from the schema and its "
    "policies, each line with a comment saying why. What it cannot decide is printed on stderr."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", metavar="URL", help="database URL (default: $DBGUARD_DATABASE_URL, else the embedded demo database)"
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        default="dbguard.yaml",
        help="write the config here (default: dbguard.yaml; - for standard output)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def run(args: argparse.Namespace) -> int:
    import yaml

    from dbguard_pipeline import services
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.inference import infer
    from dbguard_pipeline.inference.render import render_yaml
    from dbguard_pipeline.text import ident, qname

    if args.out != "-" and os.path.lexists(args.out) and not args.force:
        raise DbguardError(f"{args.out} exists; use --force to overwrite it")
    dsn = services.resolve_dsn(args.dsn)
    snapshot = services.introspect(dsn)
    inference = infer(snapshot)
    text = render_yaml(inference, snapshot.database)
    written = Config.model_validate(
        yaml.safe_load(text) or {}
    )  # what it writes loads (a bug must not reach the user's file)
    write_output(text, args.out)
    for item in inference.undecided:
        print(f"dbguard init: could not decide: {item}", file=sys.stderr)
    if args.out != "-":
        t = written.tenant
        print(
            f"wrote {args.out}: tenant column {ident(t.column)} -> {qname(t.tenants_schema, t.tenants_name)}, "
            f"context {t.context}, app role {ident(t.app_role)} ({snapshot.database})",
            file=sys.stderr,
        )
    return 0
