"""The demo database: a multi-tenant vehicle-inspection SaaS with known isolation problems."""

from __future__ import annotations

from importlib import resources
from typing import Optional

from psycopg import sql

DEMO_MARKER = "dbguard demo v1"
DEMO_DATABASE = "dbguard_demo"
SQL_FILES = ("supabase_shim.sql", "schema.sql", "data.sql")


def demo_sql() -> str:
    return "\n".join(resources.files(__name__).joinpath(name).read_text(encoding="utf-8") for name in SQL_FILES)


def load_demo(dsn: str) -> None:
    """Load the shim, schema and rows into an empty database (one transaction: all or nothing)."""
    from dbguard_pipeline.pg.session import connect

    with connect(dsn) as conn, conn.transaction():
        for name in SQL_FILES:
            conn.execute(resources.files(__name__).joinpath(name).read_text(encoding="utf-8"))
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(conn.info.dbname), sql.Literal(DEMO_MARKER))
        )


def create_demo_database(server_dsn: str, dbname: str, *, replace: bool = True) -> str:
    """(Re)create database ``dbname`` on the server of ``server_dsn`` and load the demo into it."""
    from dbguard_pipeline.pg.dsn import with_database
    from dbguard_pipeline.pg.session import connect

    with connect(server_dsn, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists and replace:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = with_database(server_dsn, dbname)
    if not exists:
        load_demo(dsn)
    return dsn


def is_demo_loaded(server_dsn: str, dbname: str) -> bool:
    from dbguard_pipeline.pg.session import connect

    with connect(server_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (dbname,)
        ).fetchone()
    return row is not None and row[0] == DEMO_MARKER


def ensure_demo_database(*, reset: bool = False, pgdata: Optional[str] = None) -> str:
    """The embedded server's demo database, created and loaded when missing (or when ``reset``)."""
    from dbguard_pipeline.pg.embedded import embedded_dsn

    server = embedded_dsn("postgres", pgdata)
    if reset or not is_demo_loaded(server, DEMO_DATABASE):
        return create_demo_database(server, DEMO_DATABASE, replace=True)
    return embedded_dsn(DEMO_DATABASE, pgdata)
