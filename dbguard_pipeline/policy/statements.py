"""The policy checks that need no database: the RLS statements of a migration file (``CREATE POLICY``,
``ALTER POLICY``, ``ALTER TABLE ... DISABLE / NO FORCE ROW LEVEL SECURITY``) judged on their parse tree by the
same analyzer the audit uses, so a weak policy is caught before it is merged (``dbguard lint-migration``, the
pre-commit hook).

What is checked, with the audit rule each check mirrors:

* a permissive policy whose ``USING`` or ``WITH CHECK`` is always true, in any spelling (``weak_rls_policy``);
* ``current_setting(...)`` cast without ``nullif`` (``tenant_context_cast_unsafe``);
* an auth or setting call evaluated per row instead of once per query (``auth_rls_initplan``);
* a policy that trusts ``user_metadata``, which users can edit (``rls_references_user_metadata``);
* a statement that disables row level security (``rls_disabled_with_tenant_column``) or stops forcing it
  (``rls_not_forced``).

Whether a policy pins the tenant column needs the table's columns (the database), so it is left to
``dbguard validate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Optional

from pglast import ast, enums

from dbguard_pipeline.policy.analyzer import always_true, per_row_calls, unsafe_setting_casts, user_metadata_references
from dbguard_pipeline.policy.parse import Node, parse_statements


@dataclass(frozen=True)
class StatementProblem:
    line: int  # 1-based line of the statement in the file
    rule: str  # the audit rule the check mirrors
    severity: str  # "critical" | "warning"
    message: str


def _name(rv: Optional[ast.RangeVar]) -> str:
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def _expression_problems(what: str, node: Optional[Node], permissive: bool) -> Iterator[tuple[str, str, str]]:
    if node is None:
        return
    if permissive and always_true(node):
        yield "weak_rls_policy", "critical", f"{what} is always true: every session sees every tenant's rows"
    for cast in unsafe_setting_casts(node):
        yield (
            "tenant_context_cast_unsafe",
            "warning",
            f"{what} casts {cast} without nullif: the query fails once the setting is reset to ''",
        )
    for call in per_row_calls(node):
        yield "auth_rls_initplan", "warning", f"{what} calls {call} per row: wrap it as (select {call})"
    for ref in user_metadata_references(node):
        yield (
            "rls_references_user_metadata",
            "critical",
            f"{what} trusts {ref}: user_metadata is editable by the user it describes",
        )


def _line_of(text: str, offset: int) -> int:
    # pglast reports byte offsets; count the lines in the bytes before the statement, skipping leading blanks
    raw = text.encode("utf-8")
    start = offset
    while start < len(raw) and raw[start : start + 1].isspace():
        start += 1
    return raw[:start].count(b"\n") + 1


def statement_problems(sql_text: str) -> list[StatementProblem]:
    """The RLS problems of the statements of ``sql_text``. Raises PolicyParseError when it does not parse."""
    out = []
    for raw in parse_statements(sql_text):
        stmt = raw.stmt
        line = _line_of(sql_text, raw.stmt_location or 0)
        found: list[tuple[str, str, str]] = []
        if isinstance(stmt, (ast.CreatePolicyStmt, ast.AlterPolicyStmt)):
            permissive = bool(getattr(stmt, "permissive", True))
            label = f'policy "{stmt.policy_name}" on {_name(stmt.table)}'
            found += _expression_problems(f"{label}: USING", stmt.qual, permissive)
            found += _expression_problems(f"{label}: WITH CHECK", stmt.with_check, permissive)
        elif isinstance(stmt, ast.AlterTableStmt):
            for cmd in stmt.cmds or ():
                if not isinstance(cmd, ast.AlterTableCmd):
                    continue
                if cmd.subtype == enums.AlterTableType.AT_DisableRowSecurity:
                    found.append(
                        (
                            "rls_disabled_with_tenant_column",
                            "critical",
                            f"disables row level security on {_name(stmt.relation)}",
                        )
                    )
                elif cmd.subtype == enums.AlterTableType.AT_NoForceRowSecurity:
                    found.append(
                        ("rls_not_forced", "warning", f"stops forcing row level security on {_name(stmt.relation)}")
                    )
        out += [StatementProblem(line, rule, sev, msg) for rule, sev, msg in found]
    return out
