"""SQL-specific rendering helpers for generated migrations: bounded object names, checked column types, the
tenant context expression, file slugs and the markers the runner and ``--all`` read.

Identifier and literal quoting is :mod:`dbguard_pipeline.text` (``quoted``/``quoted_qname``: psycopg's
``sql.Identifier``, so a table called ``a"b; drop table x`` comes out as ``"a""b; drop table x"``), and text in a
``--`` comment goes through ``text.escape_controls``. Nothing here needs a connection.
"""

from __future__ import annotations

import hashlib
import re

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.text import literal, quoted

NAMEDATALEN = 63  # PostgreSQL truncates identifiers to 63 bytes

# The marker the runner reads: the statement right after it runs outside any transaction.
NO_TRANSACTION_MARKER = "-- dbguard:no-transaction"
# Header lines listing the finding cache keys a migration fixes (read by `--all` and the Dagster sensor).
FIXES_PREFIX = "-- dbguard:fixes "


def role_name(role: str) -> str:
    """A role in a policy's TO list: PUBLIC is a keyword, every other role a quoted identifier."""
    return "PUBLIC" if role == "public" else quoted(role)


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
    except pglast.parser.ParseError:
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
def jwt_claim_path(claim: str) -> str:
    """The claim as a JSON path: ``app_metadata.brewery`` is ``auth.jwt() -> 'app_metadata' ->> 'brewery'``
    (a dotted claim is nested, as the config documents; a flat key never contains a dot)."""
    parts = [p for p in claim.split(".")]
    if not all(parts):
        raise DbguardError(f"not a valid JWT claim path: {claim!r} (config tenant.jwt_claim)")
    return "auth.jwt()" + "".join(f" -> {literal(p)}" for p in parts[:-1]) + f" ->> {literal(parts[-1])}"


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
        inner = f"({jwt_claim_path(tm.jwt_claim)})::{t}"
    else:
        inner = f"nullif(current_setting({literal(tm.guc)}, true), '')::{t}"
    return inner if for_default else f"(SELECT {inner})"
