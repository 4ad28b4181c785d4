"""PostgreSQL's client programs (pg_dump, pg_restore, psql): the ones pgserver ships, else the ones on PATH,
with the connection passed through libpq's environment variables (never the password on a command line)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.pg.dsn import parse_dsn


def client_binary(name: str) -> str:
    """The client program ``name``: pgserver's copy (found without importing pgserver, whose import warns on
    stderr when no runtime directory is set), else the one on PATH."""
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    for location in (spec.submodule_search_locations or ()) if spec is not None else ():
        p = Path(location) / "pginstall" / "bin" / name
        if p.is_file():
            return str(p)
    found = shutil.which(name)
    if not found:
        raise DbguardError(f"{name} is not available (install PostgreSQL's client programs)")
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
