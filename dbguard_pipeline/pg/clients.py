"""PostgreSQL's client programs (pg_dump, pg_restore, psql): the ones pgserver ships, else the ones on PATH,
with the connection passed through libpq's environment variables (never the password on a command line)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.pg.dsn import parse_dsn


def client_binary(name: str) -> str:
    try:
        import pgserver

        p = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if p.is_file():
            return str(p)
    except ImportError:
        pass
    found = shutil.which(name)
    if not found:
        raise DbguardError(f"{name} is not available for a schema-only copy")
    return found


def libpq_env(dsn: str) -> dict[str, str]:
    """Environment for pg_dump/psql: the password travels in PGPASSWORD, never on a command line."""
    params = parse_dsn(dsn)
    env = dict(os.environ)
    mapping = {
        "host": "PGHOST",
        "port": "PGPORT",
        "user": "PGUSER",
        "dbname": "PGDATABASE",
        "sslmode": "PGSSLMODE",
        "password": "PGPASSWORD",
    }
    for k, v in params.items():
        if k in mapping:
            env[mapping[k]] = v
    return env
