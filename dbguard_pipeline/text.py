"""The one place for turning names and values into text: identifier quoting, SQL literals, control-character
escaping (hostile names in terminals, comments, XML), one-line text and plurals.

Two quoting styles, each with its use:
- :func:`ident` / :func:`qname` quote only when PostgreSQL needs it (``public.vehicles``, ``"My Table"``,
  ``"select"``): for text people read (messages, reports, remediation commands).
- :func:`quoted` / :func:`quoted_qname` always quote (psycopg's ``sql.Identifier``): for SQL dbguard generates.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Optional

_SIMPLE = re.compile(r"[a-z_][a-z0-9_$]*")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@lru_cache(maxsize=1)
def _keywords() -> frozenset[str]:
    """PostgreSQL's keywords that need quoting as names: pglast's keyword lists (extracted from kwlist.h), read
    from their module alone when it can be found: importing the pglast package costs 20 ms, and a report of a
    database without policies needs nothing else from it."""
    import importlib.util
    from types import ModuleType

    keywords: ModuleType
    spec = importlib.util.find_spec("pglast")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    sub = importlib.util.spec_from_file_location("_dbguard_kw", f"{locations[0]}/keywords.py") if locations else None
    if sub is not None and sub.loader is not None:
        keywords = importlib.util.module_from_spec(sub)
        sub.loader.exec_module(keywords)
    else:
        from pglast import keywords
    return (
        frozenset(keywords.RESERVED_KEYWORDS)
        | frozenset(keywords.TYPE_FUNC_NAME_KEYWORDS)
        | frozenset(keywords.COL_NAME_KEYWORDS)
    )


def ident(name: str) -> str:
    """An identifier quoted the way PostgreSQL's quote_ident() does: only when it needs quotes."""
    if _SIMPLE.fullmatch(name) and name not in _keywords():
        return name
    return '"' + name.replace('"', '""') + '"'


def qname(schema: str, name: str) -> str:
    """``schema.name``, each part quoted only when needed."""
    return f"{ident(schema)}.{ident(name)}"


def quoted(name: str) -> str:
    """An identifier, always quoted (for generated SQL): the text of psycopg's ``sql.Identifier(name)
    .as_string(None)``, which without a connection doubles the quotes and wraps the name in quotes, written here
    so that a report's remediation does not import psycopg (0.12 s); dbguard_tests/test_text.py checks that both
    agree on hostile names."""
    return '"' + name.replace('"', '""') + '"'


def quoted_qname(schema: str, name: str) -> str:
    """A schema-qualified name, always quoted (for generated SQL): ``sql.Identifier(schema, name)``'s text."""
    return f"{quoted(schema)}.{quoted(name)}"


def split_qualified(text: str, default_schema: Optional[str] = "public") -> tuple[Optional[str], str]:
    """(schema, name) of a qualified name written in a config file: the SQL-quoted form (``"my.schema"."t"``,
    ``app."Order Lines"``, ``"t"``: parsed like a qualified identifier, ``""`` an escaped quote) or the plain
    form (``schema.table``: split on the first dot; a bare ``table`` is in ``default_schema``). Unquoted parts
    are taken as written (no case folding), as the plain form always was. A text starting with a quote that is
    not a well-formed quoted name raises ValueError; any other text the tokenizer cannot read is plain (every
    config written before the quoted form keeps its meaning)."""
    parts = _quoted_parts(text) if '"' in text else None
    if parts is None:
        if text.startswith('"'):
            raise ValueError(f'{text!r} is not a well-formed qualified name (schema.table or "schema"."table")')
        schema, dot, name = text.partition(".")
        return (schema, name) if dot else (default_schema, text)
    return (parts[0], parts[1]) if len(parts) == 2 else (default_schema, parts[0])


def _quoted_parts(text: str) -> Optional[list[str]]:
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    return None  # unterminated
                buf.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    buf.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            part = "".join(buf)
        else:
            j = i
            while j < n and text[j] not in '."':
                j += 1
            part, i = text[i:j], j
        if not part:
            return None
        parts.append(part)
        if i == n:
            return parts if len(parts) <= 2 else None
        if text[i] != "." or len(parts) == 2:
            return None
        i += 1


def raw_qualified(text: str) -> str:
    """The lookup key (``schema.name`` unquoted, as ``Table.qualified``) of a config's qualified name; a bare
    name stays bare (looked up by name)."""
    if '"' not in text:
        return text
    schema, name = split_qualified(text, None)
    return name if schema is None else f"{schema}.{name}"


def config_qname(schema: str, name: str) -> str:
    """A qualified name as dbguard writes it into a config file: plain ``schema.table`` when that reads back
    unambiguously, else both parts SQL-quoted (a dot or a quote in a part, a space, upper case ...)."""
    if ident(schema) == schema and ident(name) == name:
        return f"{schema}.{name}"
    return quoted_qname(schema, name)


def literal(value: Any) -> str:
    """A SQL literal (psycopg's quoting)."""
    from psycopg import sql

    return sql.Literal(value).as_string(None)


def role_list(roles: Iterable[str]) -> str:
    """Roles as a policy's TO list reads: PUBLIC for the pseudo-role, a name quoted when PostgreSQL needs it."""
    return ", ".join("PUBLIC" if r == "public" else ident(r) for r in roles)


def shell_table_arg(schema: str, name: str) -> str:
    """A TABLE argument of a dbguard command, ready to paste into a shell."""
    text = qname(schema, name)
    return text if text == f"{schema}.{name}" else shlex.quote(text)


def escape_controls(text: Any) -> str:
    """Control and other non-printable characters shown escaped (``\\x0a``, ``\\u2028``), never interpreted:
    a hostile name can neither break a line of a report or a ``--`` comment nor send terminal escapes."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(
        ch if (ch.isprintable() or ch == " ") else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in s
    )


def xml_safe(text: Any) -> str:
    """Text XML 1.0 can hold: characters it forbids become U+FFFD."""
    return _XML_BAD.sub("\ufffd", str(text))


def one_line(text: Any) -> str:
    """White space (newlines included) folded to single spaces."""
    return " ".join(str(text).split())


def plural(n: int, one: str, many: Optional[str] = None) -> str:
    """``1 table``, ``2 tables``, ``3 policies`` (with ``many``)."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def use_color(mode: str, stream: Optional[Any] = None) -> bool:
    """``--color auto|always|never``: auto = the stream (standard output) is a terminal and NO_COLOR is unset."""
    import os
    import sys

    if mode == "always":
        return True
    if mode == "never":
        return False
    stream = stream or sys.stdout
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):
        tty = False
    return tty and not os.environ.get("NO_COLOR")
