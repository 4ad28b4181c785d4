"""``diff_snapshots``: compare two snapshots object by object, then the static audit on both sides.

``taken_at``, row estimates, column positions and the database name are ignored, so two copies of the same
schema compare equal. Each change that weakens tenant isolation is marked ``weaker`` with its reasons (the
judgments are :mod:`dbguard_pipeline.semantics.weakening`'s). The static audit rules run on both snapshots:
findings present in ``b`` and not in ``a`` (by cache key, after the configured ignores) are *new*, those
that went away are *resolved*, and a new isolation finding on a changed or added policy, view or function,
or on an added table, marks that change weaker too.

No database access and no Dagster here: the CLI (``dbguard diff``) loads or introspects the two sides.
"""

from __future__ import annotations

from typing import Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.diff.compare import Context, compare
from dbguard_pipeline.diff.result import ADDED, CHANGED, Change, Side, SnapshotDiff
from dbguard_pipeline.model.equality import same_schema
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.rules import rules_tagged
from dbguard_pipeline.semantics.weakening import newly_flagged

# Rules whose new finding on a policy (object = policy name) means the policy lets other tenants' rows through;
# on a table that appeared: it arrives without isolation; on a view or a function: it opens tenant data.
POLICY_ISOLATION_RULES = rules_tagged("weakens-policy")
TABLE_ISOLATION_RULES = rules_tagged("weakens-table")
VIEW_ISOLATION_RULES = rules_tagged("weakens-view")
FUNCTION_ISOLATION_RULES = rules_tagged("weakens-function")


def static_findings(snapshot: Snapshot, config: Config) -> dict[str, Finding]:
    """The static audit's findings (after the configured ignores), by cache key."""
    from dbguard_pipeline.audit import split_ignored
    from dbguard_pipeline.audit import static_findings as run_static

    kept, _ignored = split_ignored(run_static(snapshot, config), config)
    return {f.cache_key: f for f in kept}


def diff_snapshots(
    a: Snapshot,
    b: Snapshot,
    config: Optional[Config] = None,
    *,
    source: Optional[str] = None,
    target: Optional[str] = None,
    source_kind: str = "snapshot",
    target_kind: str = "snapshot",
) -> SnapshotDiff:
    """Compare snapshot ``a`` (before, e.g. local or the snapshot before migrations) with ``b`` (after, e.g.
    production). ``source`` and ``target`` are labels for people (never pass a DSN with a password)."""
    from dbguard_pipeline.rules import sort_findings

    config = config or Config()
    fa, fb = static_findings(a, config), static_findings(b, config)
    new = sort_findings(f for k, f in fb.items() if k not in fa)
    resolved = sort_findings(f for k, f in fa.items() if k not in fb)
    ctx = Context(a, b, config, newly_flagged(new, fa, POLICY_ISOLATION_RULES))
    changes = [] if same_schema(a, b) else _flag_objects(compare(ctx), new)
    changes.sort(key=Change.sort_key)
    return SnapshotDiff(
        source=_side(a, source, source_kind),
        target=_side(b, target, target_kind),
        changes=tuple(changes),
        new_findings=tuple(new),
        resolved_findings=tuple(resolved),
    )


def _flag_objects(changes: list[Change], new: list[Finding]) -> list[Change]:
    """A new isolation finding on a view or function that changed or appeared, or on a table that appeared,
    marks that change weaker (policies are judged with their own findings by their comparer)."""
    flagged: dict[tuple[Optional[str], ...], set[str]] = {}
    for f in new:
        if f.rule in TABLE_ISOLATION_RULES:
            flagged.setdefault(("table", f.schema, f.table, "table", None, ADDED), set()).add(f.rule)
        if f.rule in VIEW_ISOLATION_RULES:
            flagged.setdefault(("view", f.schema, f.table, "view", None), set()).add(f.rule)
        if f.rule in FUNCTION_ISOLATION_RULES and f.object:
            flagged.setdefault(("function", f.schema, f.object), set()).add(f.rule)
    if not flagged:
        return changes
    out = []
    for c in changes:
        rules: set[str] = set()
        if c.change in (ADDED, CHANGED):
            for key in (
                (c.object_type, c.schema, c.name, c.item_type, c.item),
                (c.object_type, c.schema, c.name, c.item_type, c.item, c.change),
            ):
                rules |= flagged.get(key, set())
            # a changed function is judged by function_weakening first; one it calls no weaker (a new body,
            # EXECUTE granted) is weaker when it is newly flagged (security_definer_reads_other_tenants)
            if c.object_type == "function" and (c.change == ADDED or not c.weaker):
                rules |= flagged.get(("function", c.schema, f"{c.name}({c.arguments})"), set())
        out.append(c.weaken(*(f"now flagged {r}" for r in sorted(rules))) if rules else c)
    return out


def _side(s: Snapshot, label: Optional[str], kind: str) -> Side:
    return Side(
        label=label or f"snapshot of {s.database}",
        kind=kind,
        database=s.database,
        server_version=s.server_version,
        taken_at=s.taken_at,
    )
