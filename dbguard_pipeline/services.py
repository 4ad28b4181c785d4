"""The service layer: what the CLI and the Dagster definitions call. They map arguments and present results;
every judgment and every database conversation lives below this module."""
from __future__ import annotations

import os
from typing import Optional

from dbguard_pipeline.errors import UsageError
from dbguard_pipeline.pg.dsn import ENV_DSN, parse_dsn


def resolve_dsn(dsn: Optional[str] = None, *, allow_demo: bool = True) -> str:
    """--dsn, else $DBGUARD_DATABASE_URL, else (when ``allow_demo``) the embedded demo database, loaded on first
    use. An empty --dsn or an empty $DBGUARD_DATABASE_URL is a usage error, never a silent fall-back: an unset
    variable in a script must not send migrations to another database."""
    if dsn is not None:
        if not dsn.strip():
            raise UsageError("--dsn is empty: give a database URL (or leave --dsn out)")
        parse_dsn(dsn)
        return dsn
    env = os.environ.get(ENV_DSN)
    if env is not None:
        if not env.strip():
            raise UsageError(f"${ENV_DSN} is set but empty: give a database URL (or unset it)")
        parse_dsn(env)
        return env
    if not allow_demo:
        raise UsageError(f"no database given: use --dsn URL or set ${ENV_DSN}")
    from dbguard_pipeline.demo import ensure_demo_database

    return ensure_demo_database()
