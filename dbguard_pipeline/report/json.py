"""The json report: ``{"database", "generated_at", "summary", "findings", "coverage", ...}``
(:meth:`AuditResult.to_json_dict`; each finding is :meth:`Finding.to_dict` without ``detail``), and the one
way dbguard writes a JSON document (indent 2, UTF-8 as is, a closing newline)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult


def dumps(document: Any) -> str:
    """A JSON document as dbguard writes it: indented, non-ASCII kept, anything else as ``str()``; the text of
    ``json.dumps(document, indent=2, ensure_ascii=False, default=str)`` and a newline. Written by :func:`_pretty`
    (Python's indenting encoder is its slow pure-Python one: 16 ms for a 1,000-table report against 5 ms);
    a document it does not vouch for (a key that is not a string, a float, a value ``default`` must convert, a
    container inside itself) goes to ``json.JSONEncoder``, whose pieces are written into one buffer as they come
    (``json.dumps`` first lists them all: a million small strings for a report of 8,000 tables)."""
    out: list[str] = []
    try:
        _pretty(document, "\n", out)
    except _Unsupported:
        encoder = json.JSONEncoder(indent=2, ensure_ascii=False, default=str)
        buffer = io.StringIO()
        write = buffer.write
        for piece in encoder.iterencode(document):
            write(piece)
        write("\n")
        return buffer.getvalue()
    out.append("\n")
    return "".join(out)


class _Unsupported(Exception):
    """A value :func:`_pretty` leaves to the standard encoder."""


_string = json.encoder.encode_basestring  # C: the same escaping as json.dumps(ensure_ascii=False)
_SCALARS = {True: "true", False: "false"}
_DEPTH = 200


def _pretty(value: Any, newline: str, out: list[str]) -> None:
    """``value`` indented as ``json.dumps(indent=2)`` writes it, ``newline`` being the line break and indent of
    the enclosing level. Strings, ints, bools, None, lists, tuples and dicts with string keys only."""
    kind = type(value)
    if kind is str:
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append(_SCALARS[value])
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return
        if len(newline) > _DEPTH:
            raise _Unsupported
        inner = newline + "  "
        sep = "{" + inner
        for key, item in value.items():
            if type(key) is not str:
                raise _Unsupported
            out.append(sep)
            out.append(_string(key))
            out.append(": ")
            _pretty(item, inner, out)
            sep = "," + inner
        out.append(newline + "}")
    elif kind is list or kind is tuple:
        if not value:
            out.append("[]")
            return
        if len(newline) > _DEPTH:
            raise _Unsupported
        inner = newline + "  "
        sep = "[" + inner
        for item in value:
            out.append(sep)
            _pretty(item, inner, out)
            sep = "," + inner
        out.append(newline + "]")
    else:  # floats (nan, inf), other types (default=str), subclasses: the standard encoder decides
        raise _Unsupported


def render_json(result: AuditResult) -> str:
    return dumps(result.to_json_dict())
