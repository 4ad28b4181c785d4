"""The service layer: what the CLI and the Dagster definitions call. They map arguments and present results;
every judgment and every database conversation lives below this module."""
from __future__ import annotations

import os
from typing import Optional

from dbguard_pipeline.pg.dsn import ENV_DSN, parse_dsn


def resolve_dsn(dsn: Optional[str] = None) -> str:
    """--dsn, else $DBGUARD_DATABASE_URL, else the embedded demo database (loaded on first use)."""
    if dsn:
        parse_dsn(dsn)
        return dsn
    env = os.environ.get(ENV_DSN)
    if env:
        parse_dsn(env)
        return env
    from dbguard_pipeline.demo import ensure_demo_database

    return ensure_demo_database()
