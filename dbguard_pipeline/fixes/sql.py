"""Rendering helpers for generated SQL: identifier and literal quoting, bounded object names, the tenant
context expression, and comment-safe text.

Identifiers are always quoted by psycopg's ``sql.Identifier`` (the same quoting libpq applies), so a table
called ``a"b; drop table x`` comes out as ``"a""b; drop table x"``. Nothing here needs a connection.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Optional

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError

NAMEDATALEN = 63  # PostgreSQL truncates identifiers to 63 bytes

# The marker the runner reads: the statement right after it runs outside any transaction.
NO_TRANSACTION_MARKER = "-- dbguard:no-transaction"
# Header lines listing the finding cache keys a migration fixes (read by `--all` and the Dagster sensor).
FIXES_PREFIX = "-- dbguard:fixes "


def ident(name: str) -> str:
    """A quoted identifier."""
    return sql.Identifier(name).as_string(None)


def qname(schema: str, name: str) -> str:
    """A quoted schema-qualified name."""
    return sql.Identifier(schema, name).as_string(None)


def literal(value) -> str:
    return sql.Literal(value).as_string(None)


def role_name(role: str) -> str:
    """A role in a policy's TO list: PUBLIC is a keyword, every other role a quoted identifier."""
    return "PUBLIC" if role == "public" else ident(role)


def pg_name(base: str, suffix: str) -> str:
    """``base_suffix`` when it fits in 63 bytes, else base truncated (on a character boundary) plus a short
    hash of the full name, so that distinct long names stay distinct and the result is deterministic."""
    full = f"{base}_{suffix}"
    if len(full.encode("utf-8")) <= NAMEDATALEN:
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:8]
    tail = f"_{digest}_{suffix}"
    room = NAMEDATALEN - len(tail.encode("utf-8"))
    head = full.encode("utf-8")[:room].decode("utf-8", "ignore")
    return head + tail


def comment_safe(text: str) -> str:
    """Text that stays inside a ``--`` comment: control characters (a newline would end the comment and
    turn the rest of a hostile name into SQL) are shown escaped."""
    return "".join(ch if (ch >= " " and ch != "\x7f") else f"\\x{ord(ch):02x}" for ch in str(text))


_SIMPLE_TYPE = re.compile(r"^[a-z][a-z0-9_ ]*(\(\s*\d+\s*(,\s*\d+\s*)?\))?(\[\])?$")


def checked_type(type_text: str) -> str:
    """A column type for generated SQL. Types come from format_type() (already quoted by PostgreSQL) or
    from the config, where only plain type names are accepted."""
    t = (type_text or "").strip()
    if not t:
        raise DbguardError("empty tenant column type")
    if _SIMPLE_TYPE.match(t):
        return t
    # format_type() output of a user type, e.g. public."Tenant Id": it must parse as a type name.
    import pglast

    try:
        pglast.parse_sql(f"select null::{t}")
    except Exception:
        raise DbguardError(f"not a valid column type: {t!r}") from None
    if ";" in t or "--" in t or "/*" in t:
        raise DbguardError(f"not a valid column type: {t!r}")
    return t


def file_slug(text: str, limit: int = 60) -> str:
    """A file-name-safe rendering of a table name; a short hash keeps sanitized names distinct."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    if not slug:
        slug = "table"
    if slug != text or len(slug) > limit:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]
        slug = f"{slug[: limit - 7]}_{digest}"
    return slug


# --------------------------------------------------------------------------- tenant context
def tenant_context(config: Config, type_text: str, *, for_default: bool = False) -> str:
    """The expression that yields the current tenant id, cast to the tenant column's type.

    GUC: ``(SELECT nullif(current_setting('app.current_tenant_id', true), '')::uuid)``: nullif because a
    reset setting reads as '' (and ''::uuid raises); the scalar subquery so PostgreSQL evaluates it once per
    query (an InitPlan), not once per row. JWT (Supabase): ``(SELECT (auth.jwt() ->> 'tenant_id')::uuid)``.
    Column defaults cannot hold a subquery, so ``for_default`` gives the bare expression.
    """
    t = checked_type(type_text)
    tm = config.tenant
    if tm.context == "jwt":
        inner = f"(auth.jwt() ->> {literal(tm.jwt_claim)})::{t}"
    else:
        inner = f"nullif(current_setting({literal(tm.guc)}, true), '')::{t}"
    return inner if for_default else f"(SELECT {inner})"


def join_lines(lines: Iterable[Optional[str]]) -> str:
    return "\n".join(line for line in lines if line is not None)
