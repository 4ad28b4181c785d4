"""The diff for people (text, grouped by object) and for machines (JSON, ``"format": "dbguard-diff"``).
Every name and value goes through :func:`text.escape_controls`: a hostile identifier cannot break a line."""

from __future__ import annotations

import difflib
import json
from typing import Any

from dbguard_pipeline.diff.result import ADDED, CHANGED, AttributeChange, Change, Side, SnapshotDiff
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Policy, Table
from dbguard_pipeline.model.snapshot_json import to_jsonable
from dbguard_pipeline.text import escape_controls, ident, one_line, plural

_MARK = {ADDED: "+", "removed": "-", CHANGED: "~"}
_MULTILINE = {"body", "definition"}  # of functions and views: shown as a diff of lines, not on one line


# --------------------------------------------------------------------------- pieces
def _ident(name: str) -> str:
    return escape_controls(ident(name))


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return escape_controls(one_line(value)) or "''"


def _who(grantee: str) -> str:
    return "PUBLIC" if grantee == "public" else _ident(grantee)


def object_title(c: Change) -> str:
    if c.object_type in ("schema", "role"):
        return f"{c.object_type} {_ident(c.name)}"
    base = f"{_ident(c.schema or '')}.{_ident(c.name)}"
    if c.object_type == "function":
        return f"function {base}({escape_controls(c.arguments or '')})"
    return f"{c.object_type} {base}"


def _policy_text(p: Policy) -> str:
    s = f"{'PERMISSIVE' if p.permissive else 'RESTRICTIVE'} {p.command.upper()} TO {', '.join(map(_who, p.roles))}"
    if p.using is not None:
        s += f" USING ({_value(p.using)})"
    if p.with_check is not None:
        s += f" WITH CHECK ({_value(p.with_check)})"
    return s


def _item_text(c: Change, obj: Any) -> str:
    """What an added or removed item is, in one line."""
    t = c.item_type
    if t == "column":
        parts = [_value(obj.type), "not null" if obj.not_null else "nullable"]
        if obj.default is not None:
            parts.append(f"default {_value(obj.default)}")
        if obj.identity:
            parts.append(f"identity {obj.identity}")
        if obj.generated is not None:
            parts.append(f"generated always as ({_value(obj.generated)}) stored")
        return ", ".join(parts)
    if t == "constraint":
        return _value(obj.definition) + ("" if obj.validated else " (not validated)")
    if t == "index":
        return _value(obj.definition) + ("" if obj.valid else " (invalid)")
    if t == "policy":
        return _policy_text(obj)
    if t == "grant":
        return ", ".join(obj)
    if t == "table":
        rls = "row level security " + (
            "enabled" + (", forced" if obj.rls_forced else "") if obj.rls_enabled else "disabled"
        )
        return (
            f"{plural(len(obj.columns), 'column')}, {rls}, "
            f"{plural(len(obj.policies), 'policy', 'policies')}, owner {_ident(obj.owner)}"
        )
    if t == "view":
        kind = (
            "materialized"
            if obj.materialized
            else ("security_invoker" if obj.security_invoker else "runs with its owner's rights")
        )
        return f"{kind}, owner {_ident(obj.owner)}"
    if t == "function":
        sd = ", SECURITY DEFINER" if obj.security_definer else ""
        sp = f", search_path={_value(obj.search_path)}" if obj.search_path is not None else ""
        return f"returns {_value(obj.returns)}, {obj.language}{sd}{sp}"
    if t == "role":
        flags = [
            n for n, on in (("superuser", obj.superuser), ("bypassrls", obj.bypassrls), ("login", obj.can_login)) if on
        ]
        return ", ".join(flags) if flags else "no login"
    return ""


def _attr_text(a: AttributeChange, item_type: str) -> str:
    if a.attribute in _MULTILINE and item_type in ("function", "view"):
        return f"{a.attribute} changed"
    return f"{a.attribute}: {_value(a.before)} -> {_value(a.after)}"


def change_body(c: Change) -> str:
    """What changed, without the object's name: "owner: a -> b; comment: ..." or "column x: text, nullable"."""
    if c.item_type == "grant":
        privs = c.after if c.change == ADDED else c.before
        return f"grant {', '.join(privs or ())} to {_who(c.item or '')}"
    if c.change == CHANGED:
        text = "; ".join(_attr_text(a, c.item_type) for a in c.attributes)
        return text if c.own or c.item_type == "rls" else f"{c.item_type} {_ident(c.item or '')}: {text}"
    obj = c.after if c.change == ADDED else c.before
    head = object_title(c) if c.own else f"{c.item_type} {_ident(c.item or '')}"
    detail = _item_text(c, obj) if obj is not None and c.item_type != "schema" else ""
    return f"{head}: {detail}" if detail else head


def describe_change(c: Change) -> str:
    """One line, without the +/-/~ marker, naming the object: what changed."""
    body = change_body(c)
    if c.own and c.change != CHANGED:
        return body
    return f"{object_title(c)}: {body}"


def _body_diff(a: AttributeChange, indent: str, limit: int = 30) -> list[str]:
    before = str(a.before or "").splitlines()
    after = str(a.after or "").splitlines()
    lines = list(difflib.unified_diff(before, after, lineterm="", n=1))[2:]
    out = [f"{indent}{escape_controls(ln)}" for ln in lines[:limit]]
    if len(lines) > limit:
        out.append(f"{indent}… {len(lines) - limit} more lines")
    return out


# --------------------------------------------------------------------------- text
def closing_line(d: SnapshotDiff) -> str:
    if d.identical:
        return "no differences"
    s = d.summary()
    objects = [plural(n, t) for t, n in s["objects_changed"].items() if n]
    head = (", ".join(objects) + " changed: ") if objects else "no schema changes: "
    counts = (
        f"{plural(s['additions'], 'addition')}, {plural(s['removals'], 'removal')}, {plural(s['changes'], 'change')}"
    )
    weaker = f"{s['weaker']} change{' weakens' if s['weaker'] == 1 else 's weaken'} isolation"
    findings = f"{plural(s['new_findings'], 'new finding')}, {s['resolved_findings']} resolved"
    return f"{head}{counts}; {weaker}; {findings}"


def _side_text(side: Side) -> str:
    what = "database" if side.kind == "database" else "snapshot"
    when = f", taken {side.taken_at}" if side.kind == "snapshot" else ""
    return (
        f"{escape_controls(side.label)} ({what} {escape_controls(side.database)}, PostgreSQL "
        f"{escape_controls(side.server_version)}{when})"
    )


def _finding_lines(mark: str, findings: tuple[Finding, ...]) -> list[str]:
    return [
        f"  {mark} [{f.severity.value}] {escape_controls(f.cache_key)}: {escape_controls(f.message)}" for f in findings
    ]


def render_text(d: SnapshotDiff) -> str:
    lines = [f"source: {_side_text(d.source)}", f"target: {_side_text(d.target)}", ""]
    if d.identical:
        lines.append("no differences")
        return "\n".join(lines) + "\n"
    current = None
    for c in d.changes:
        if c.own and c.change != CHANGED:  # a whole object added or removed: one line of its own
            current = None
            prefix = ""
        else:
            if c.object_key != current:
                lines.append(object_title(c))
                current = c.object_key
            prefix = "  "
        flag = f"  [weaker: {'; '.join(c.reasons)}]" if c.weaker else ""
        note = f"  ({c.note})" if c.note else ""
        lines.append(f"{prefix}{_MARK[c.change]} {change_body(c)}{flag}{note}")
        for a in c.attributes:
            if a.attribute in _MULTILINE and c.item_type in ("function", "view"):
                lines.extend(_body_diff(a, prefix + "    "))
    if d.new_findings or d.resolved_findings:
        lines.append("")
    if d.new_findings:
        lines.append(f"new findings ({len(d.new_findings)}):")
        lines.extend(_finding_lines("+", d.new_findings))
    if d.resolved_findings:
        lines.append(f"resolved findings ({len(d.resolved_findings)}):")
        lines.extend(_finding_lines("-", d.resolved_findings))
    lines.extend(["", closing_line(d)])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON
def _jsonable(obj: Any) -> Any:
    data = to_jsonable(obj)
    if isinstance(obj, Table):
        data.pop("row_estimate", None)  # estimates are not compared, so they are not shown either
    return data


def change_dict(c: Change) -> dict[str, Any]:
    return {
        "object_type": c.object_type,
        "schema": c.schema,
        "name": c.name,
        "arguments": c.arguments,
        "qualified": c.qualified,
        "change": c.change,
        "item_type": c.item_type,
        "item": c.item,
        "attributes": [
            {"attribute": a.attribute, "before": to_jsonable(a.before), "after": to_jsonable(a.after)}
            for a in c.attributes
        ],
        "before": _jsonable(c.before),
        "after": _jsonable(c.after),
        "weaker": c.weaker,
        "reasons": list(c.reasons),
        "note": c.note,
        "text": describe_change(c),
    }


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "severity": f.severity.value,
        "category": f.category,
        "schema": f.schema,
        "table": f.table,
        "object": f.object,
        "cache_key": f.cache_key,
        "message": f.message,
        "remediation": f.remediation,
    }


def diff_dict(d: SnapshotDiff) -> dict[str, Any]:
    return {
        "format": "dbguard-diff",
        "version": 1,
        "source": d.source.to_dict(),
        "target": d.target.to_dict(),
        "summary": d.summary(),
        "changes": [change_dict(c) for c in d.changes],
        "new_findings": [_finding_dict(f) for f in d.new_findings],
        "resolved_findings": [_finding_dict(f) for f in d.resolved_findings],
    }


def render(d: SnapshotDiff, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(diff_dict(d), indent=2, ensure_ascii=False) + "\n"
    if fmt == "text":
        return render_text(d)
    from dbguard_pipeline.errors import DbguardError

    raise DbguardError(f"unknown diff format {fmt!r} (choose text or json)")
