"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", metavar="URL", help="database URL (default: $DBGUARD_DATABASE_URL, else the embedded demo database)"
    )
    parser.add_argument("--config", metavar="FILE", help="dbguard.yaml (default: $DBGUARD_CONFIG or ./dbguard.yaml)")
