"""optimize-policy TABLE: the table's policies made cheap without changing what they mean.

Every policy of the table is rewritten by :mod:`dbguard_pipeline.fixes.rewrite` (context calls that read no
column wrapped in ``(select ...)``, ``col IN (SELECT ...)`` as ``col = ANY (ARRAY(SELECT ...))``) with ``ALTER
POLICY`` (name, roles, command and permissive flag stay), and the VOLATILE helpers those policies call, when
their body only reads, are declared STABLE with a fixed search_path. One transaction; the rollback restores each
expression and function setting exactly as it was. A performance fix never changes which rows a policy admits:
nothing else is touched (no role, no command, no predicate added or removed), and the round trip on the scratch
copy checks that the app role sees and may write the same rows before and after (:mod:`..verdicts`).

:func:`plan_optimize_policy` is a pure function of the snapshot and the config: ``dbguard analyze`` proposes it
(after measuring it on a scratch copy) and ``dbguard generate-migration optimize-policy TABLE`` writes it.
"""

from __future__ import annotations

from typing import Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import NotFoundError
from dbguard_pipeline.fixes.actions.context import Context, NothingToFix, resolve_table
from dbguard_pipeline.fixes.plan import Block, Migration
from dbguard_pipeline.fixes.rewrite import called_functions, read_only_body, rewrite
from dbguard_pipeline.model.schema import Function, Snapshot, Table
from dbguard_pipeline.policy import per_row_calls
from dbguard_pipeline.text import ident, qname, quoted, quoted_qname

OPTIMIZE_POLICY = "optimize-policy"


def plan_optimize_policy_action(ctx: Context, table_name: str) -> Migration:
    """The generator's action: the migration, or NothingToFix when no policy of the table can be made cheaper."""
    table = resolve_table(ctx.snapshot, table_name)
    if not table.policies:
        raise NothingToFix(f"{qname(table.schema, table.name)} has no policy to optimize")
    m = plan_optimize_policy(ctx.snapshot, ctx.config, table.qualified)
    if m is None:
        raise NothingToFix(
            f"the policies of {qname(table.schema, table.name)} already evaluate their context once per query (nothing to wrap, "
            "no IN (SELECT ...) to turn into an array, no read-only VOLATILE helper)"
        )
    m.notes = list(ctx.notes) + m.notes
    return m


def _helpers_to_stabilize(table: Table, snapshot: Snapshot) -> list[Function]:
    out: list[Function] = []
    for p in table.policies:
        for expr in (p.using, p.with_check):
            for fn in called_functions(expr, snapshot):
                if fn.volatility == "volatile" and read_only_body(fn) and fn not in out:
                    out.append(fn)
    return sorted(out, key=lambda f: (f.schema, f.name, f.arguments))


def _alter_policy(table: Table, name: str, using: Optional[str], check: Optional[str]) -> str:
    parts = [f"ALTER POLICY {quoted(name)} ON {quoted_qname(table.schema, table.name)}"]
    if using is not None:
        parts.append(f"    USING ({using})")
    if check is not None:
        parts.append(f"    WITH CHECK ({check})")
    return "\n".join(parts)


def plan_optimize_policy(snapshot: Snapshot, config: Config, table_name: str) -> Optional[Migration]:
    """The optimize-policy migration of a table, or None when no policy of it can be rewritten."""
    table = snapshot.table(table_name)
    if table is None:
        raise NotFoundError(f"table not found in {snapshot.database}: {table_name}")
    helpers = _helpers_to_stabilize(table, snapshot)
    stabilized = [f.qualified for f in helpers]
    fwd: list[str] = []
    back: list[str] = []
    what: list[str] = []
    undo: list[str] = []
    fixes: list[str] = []
    for p in sorted(table.policies, key=lambda p: p.name):
        new_using = rewrite(p.using, table, snapshot, config, stabilized)
        new_check = rewrite(p.with_check, table, snapshot, config, stabilized)
        if new_using is None and new_check is None:
            continue
        fwd.append(
            _alter_policy(table, p.name, new_using.text if new_using else None, new_check.text if new_check else None)
        )
        back.append(_alter_policy(table, p.name, p.using if new_using else None, p.with_check if new_check else None))
        changes = list(
            dict.fromkeys((new_using.changes() if new_using else []) + (new_check.changes() if new_check else []))
        )
        what.append(f"policy {ident(p.name)}: {'; '.join(changes)}")
        undo.append(f"restore the expressions of policy {ident(p.name)}")
        if any(per_row_calls(e) for e in (p.using, p.with_check) if e):
            fixes.append(f"auth_rls_initplan:{table.qualified}:{p.name}")
    if not fwd:
        return None
    head, tail, fn_what, fn_undo = [], [], [], []
    for fn in helpers:
        sig = f"{quoted_qname(fn.schema, fn.name)}({fn.arguments})"
        path = f"pg_catalog, {quoted(fn.schema)}, pg_temp"
        head.append(f"ALTER FUNCTION {sig} STABLE" + ("" if fn.search_path else f" SET search_path = {path}"))
        tail.append(f"ALTER FUNCTION {sig} VOLATILE" + ("" if fn.search_path else " RESET search_path"))
        fn_what.append(
            f"declare {qname(fn.schema, fn.name)}() STABLE"
            + ("" if fn.search_path else f" with search_path pg_catalog, {ident(fn.schema)}, pg_temp")
            + " (its body only reads: one value per query)"
        )
        fn_undo.append(
            f"{qname(fn.schema, fn.name)}() VOLATILE again" + ("" if fn.search_path else ", search_path reset")
        )
    what, undo = fn_what + what, undo + fn_undo
    m = Migration(
        action=OPTIMIZE_POLICY,
        schema=table.schema,
        table=table.name,
        lock_timeout_ms=config.lock_timeout_ms,
        statement_timeout_ms=config.statement_timeout_ms,
    )
    m.forward = [Block(tuple(head + fwd), comment="policies evaluated once per query, not once per row")]
    m.rollback = [Block(tuple(back + tail), comment="the policies and functions exactly as they were")]
    m.what, m.undo, m.fixes = what, undo, fixes
    m.why = [
        "row level security evaluated per row: context calls outside (select ...), IN (SELECT ...) sub-plans or "
        "VOLATILE helpers in the policies (dbguard analyze measures what it costs)"
    ]
    m.notes = ["ALTER POLICY keeps each policy's name, roles, command and permissive flag"]
    if head:
        m.notes.append("a function declared STABLE applies to every caller, not only these policies")
    m.params = {"table": table.qualified}
    return m
