"""Scratch databases: a throwaway copy of a target (``CREATE DATABASE ... TEMPLATE``, or a schema-only copy
through pg_dump and psql when the target is busy or large), always dropped."""
from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.pg.clients import client_binary, libpq_env
from dbguard_pipeline.pg.dsn import database_name, describe_dsn, with_database
from dbguard_pipeline.pg.session import connect

TEMPLATE_SIZE_LIMIT = 1 << 30  # above 1 GiB, copy the schema only


def _maintenance_dsn(dsn: str) -> str:
    target = database_name(dsn)
    for db in ("postgres", "template1"):
        if db != target:
            return with_database(dsn, db)
    return with_database(dsn, "template1")


@contextlib.contextmanager
def scratch_database(target_dsn: str, method: str = "auto") -> Iterator[tuple[str, str]]:
    """Yield (dsn, method) of a throwaway copy of the target; dropped on exit. method: auto|template|schema."""
    admin = _maintenance_dsn(target_dsn)
    source = database_name(target_dsn)
    name = f"dbguard_sandbox_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    used = None
    superuser = True
    with connect(admin, autocommit=True) as conn:
        if method in ("auto", "template"):
            row = conn.execute("select pg_database_size(%s)", (source,)).fetchone()
            if method == "template" or (row is not None and row[0] <= TEMPLATE_SIZE_LIMIT):
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source)))
                    used = "template"
                except psycopg.errors.InsufficientPrivilege as exc:
                    # Lacking CREATEDB, or (with CREATEDB) not the owner of the target: only its owner may use it
                    # as a template. "auto" goes on with the schema-only copy, whose CREATE DATABASE tells which.
                    if method == "template":
                        raise DbguardError(f"cannot copy {source} as a template: {exc.diag.message_primary}") from None
                except psycopg.Error as exc:
                    if method == "template":
                        raise DbguardError(f"cannot copy {source} as a template: {exc.diag.message_primary}") from None
        if used is None:
            row = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()
            superuser = bool(row and row[0])
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.InsufficientPrivilege:
                raise DbguardError(f"cannot create a scratch database on {describe_dsn(target_dsn)}: "
                                   "the role lacks CREATEDB") from None
            except psycopg.Error as exc:  # a hot standby, a read-only server, too many databases, ...
                raise DbguardError(f"cannot create a scratch database on {describe_dsn(target_dsn)}: "
                                   f"{exc.diag.message_primary or exc}") from None
            used = "schema-only"
    scratch = with_database(target_dsn, name)
    try:
        if used == "schema-only":
            _copy_schema(target_dsn, scratch, keep_owners=superuser)
        yield scratch, used
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _copy_schema(source_dsn: str, target_dsn: str, keep_owners: bool = True) -> None:
    """pg_dump --schema-only into psql; a role that is not a superuser cannot give objects to other roles, so
    its copy is all its own (``--no-owner``)."""
    flags = ["--schema-only", "--no-comments"] + ([] if keep_owners else ["--no-owner"])
    dump = subprocess.run([client_binary("pg_dump"), *flags], env=libpq_env(source_dsn),
                          capture_output=True, timeout=600)
    if dump.returncode != 0:
        raise DbguardError(f"pg_dump --schema-only failed: {_first_line(dump.stderr, source_dsn)}")
    load = subprocess.run([client_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=dump.stdout,
                          env=libpq_env(target_dsn), capture_output=True, timeout=600)
    if load.returncode != 0:
        raise DbguardError(f"restoring the schema-only copy failed: {_first_line(load.stderr, target_dsn)}")


def _first_line(raw: bytes, dsn: str) -> str:
    from dbguard_pipeline.pg.dsn import mask_secrets

    text = raw.decode("utf-8", "replace").strip().splitlines()
    return mask_secrets(text[0] if text else "no output", dsn)
