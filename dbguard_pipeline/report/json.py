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
    ``json.dumps(document, indent=2, ensure_ascii=False, default=str)`` and a newline. The encoder's pieces are
    written into one buffer as they come: ``json.dumps`` first lists them all (a report of 8,000 tables is about a
    million small strings, ~40 MiB, for a 6 MiB text)."""
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False, default=str)
    out = io.StringIO()
    write = out.write
    for piece in encoder.iterencode(document):
        write(piece)
    write("\n")
    return out.getvalue()


def render_json(result: AuditResult) -> str:
    return dumps(result.to_json_dict())
