"""The inferred tenant model as a commented dbguard.yaml (``dbguard init``)."""

from __future__ import annotations

import json
import re

from dbguard_pipeline.inference import Inference

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})

_ORDER = (
    "column",
    "column_type",
    "tenants_table",
    "tenants_key",
    "context",
    "guc",
    "jwt_claim",
    "context_functions",
    "app_role",
    "app_role_owns_tables",
)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML string: quotes and escapes included


def _comment(text: str) -> str:
    return " ".join(text.split())


def render_yaml(inf: Inference, database: str) -> str:
    """dbguard.yaml text: every inferred line with a comment saying why; undecided items as comments."""
    lines = [
        f"# dbguard.yaml written by `dbguard init` from the database {_comment(database)}.",
        "# Every value was inferred from the schema and its policies; the comment says why. Check them.",
    ]
    for item in inf.undecided:
        lines.append(f"# NOT DECIDED: {_comment(item)}")
    for item in inf.notes:
        lines.append(f"# note: {_comment(item)}")
    if not inf.tenant:
        lines.append("tenant: {}  # nothing could be inferred: the defaults apply")
    else:
        lines.append("tenant:")
    for key in _ORDER:
        if key not in inf.tenant:
            continue
        why = inf.reasons.get(f"tenant.{key}")
        line = f"  {key}: {_scalar(inf.tenant[key])}"
        lines.append(f"{line}  # {_comment(why)}" if why else line)
    if inf.schemas:
        lines.append(f"schemas: {_scalar(list(inf.schemas))}  # {_comment(inf.reasons.get('schemas', ''))}")
    return "\n".join(lines) + "\n"
