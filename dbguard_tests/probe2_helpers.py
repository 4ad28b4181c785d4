"""Load the reproductions of ../shared/repros/audit-and-probe/ (or a copy kept beside the tests) into a scratch
database, as their README says: the Supabase shim first when the file uses ``auth.*``, then the file as a
superuser, then (Supabase's default privileges, which the shim does not set up) table grants to
``authenticated``."""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

from dbguard_pipeline.config import load_config

from .isolation_helpers import scratch_database, supabase_shim

REPROS = Path(__file__).resolve().parent / "repros" / "audit-and-probe"

_CREATE_ROLE = re.compile(r"create role (\w+)([^;]*);", re.IGNORECASE)


def _idempotent_roles(text: str) -> str:
    """Roles are cluster-wide: create them only when missing (the test server is shared by every test)."""
    return _CREATE_ROLE.sub(
        lambda m: (f"do $$ begin if not exists (select 1 from pg_roles where rolname = '{m.group(1)}') then "
                   f"create role {m.group(1)}{m.group(2)}; end if; end $$;"), text)


@contextlib.contextmanager
def repro_database(server_dsn: str, name: str):
    """(dsn, config) of reproduction ``name`` (``partitions`` for partitions.sql and partitions.yaml)."""
    text = _idempotent_roles((REPROS / f"{name}.sql").read_text(encoding="utf-8"))
    statements = [supabase_shim()] if "auth." in text else []
    statements.append(text)
    if "auth." in text:
        statements.append("grant select, insert, update, delete on all tables in schema public to authenticated")
    with scratch_database(server_dsn, *statements) as dsn:
        yield dsn, load_config(REPROS / f"{name}.yaml")
