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
    """An identifier, always quoted (for generated SQL)."""
    from psycopg import sql

    return sql.Identifier(name).as_string(None)


def quoted_qname(schema: str, name: str) -> str:
    """A schema-qualified name, always quoted (for generated SQL)."""
    from psycopg import sql

    return sql.Identifier(schema, name).as_string(None)


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
