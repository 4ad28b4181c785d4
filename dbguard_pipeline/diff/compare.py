"""Schema diff: what changed between two snapshots, and which changes weaken tenant isolation.

``diff_snapshots(a, b, config)`` compares two :class:`~dbguard_pipeline.model.Snapshot` objects object by
object, by qualified name: schemas, tables (columns, constraints, indexes, row level security, policies,
grants, owner), views, functions and roles. ``taken_at``, row estimates, column positions and the database
name are ignored, so two copies of the same schema compare equal.

Each change that weakens tenant isolation is marked ``weaker`` with its reasons. On top of the object-level
rules below, the static audit rules run on both snapshots: findings present in ``b`` and not in ``a`` (by
cache key, after the configured ignores) are *new*, those that went away are *resolved*, and a new
isolation finding on a changed or added policy or view marks that change weaker too.

Weaker, object by object:

* row level security disabled, or no longer forced;
* a policy made PERMISSIVE; a permissive policy now applying to PUBLIC or anon; a RESTRICTIVE policy removed,
  or applying to fewer roles or commands; a USING / WITH CHECK that pinned the tenant (or, on a table
  without a tenant column, restricted rows to the caller) and no longer does;
* a grant to anon or PUBLIC added (tables and views);
* the tenant column dropped or made nullable; a foreign key that ties a table to its tenant dropped;
* a view that lost ``security_invoker``;
* a function that became SECURITY DEFINER or no longer sets ``search_path``;
* a role that gained SUPERUSER or BYPASSRLS, or a new role that has either.

Removing a PERMISSIVE policy is not weaker: permissive policies are OR-ed, so removing one narrows access.

No database access and no Dagster here: the CLI (``dbguard diff``) loads or introspects the two sides.
"""
from __future__ import annotations

import difflib
import json
import unicodedata
from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Policy, Role, Snapshot, Table
from dbguard_pipeline.model.snapshot_json import to_jsonable
from dbguard_pipeline.rules import rules_tagged

ADDED, REMOVED, CHANGED = "added", "removed", "changed"
_MARK = {ADDED: "+", REMOVED: "-", CHANGED: "~"}
# object types in output order
OBJECT_TYPES = ("schema", "table", "view", "function", "role")
# items of a table in output order
_ITEM_ORDER = {t: i for i, t in enumerate(
    ("schema", "table", "view", "function", "role", "rls", "column", "constraint", "index", "policy", "grant"))}
API_GRANTEES = ("anon", "public")  # a grant to these opens the object to unauthenticated API clients
# Rules whose new finding on a policy (object = policy name) means the policy lets other tenants' rows through;
# on a table that appeared: it arrives without isolation; on a view or a function: it opens tenant data.
POLICY_ISOLATION_RULES = rules_tagged("weakens-policy")
TABLE_ISOLATION_RULES = rules_tagged("weakens-table")
VIEW_ISOLATION_RULES = rules_tagged("weakens-view")
FUNCTION_ISOLATION_RULES = rules_tagged("weakens-function")
_FAILING = (Severity.CRITICAL, Severity.WARNING)


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class AttributeChange:
    attribute: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Change:
    """One difference. ``object_type``/``schema``/``name``/``arguments`` name the object it belongs to (the
    table, view, function, role or schema); ``item_type``/``item`` name what changed inside it (a column, a
    policy, ...), or repeat the object type with ``item=None`` when the object itself was added, removed or
    had an attribute changed."""

    object_type: str  # schema | table | view | function | role
    schema: Optional[str]
    name: str
    change: str  # added | removed | changed
    item_type: str  # the object type itself, or rls | column | constraint | index | policy | grant
    item: Optional[str] = None
    attributes: tuple[AttributeChange, ...] = ()  # for "changed"
    before: Any = None  # the whole item (JSON-able) for "removed"; for grants the privileges
    after: Any = None  # the whole item (JSON-able) for "added"
    arguments: Optional[str] = None  # functions: identity arguments
    weaker: bool = False
    reasons: tuple[str, ...] = ()
    note: Optional[str] = None  # a remark that is not a weakening (e.g. "access narrows")

    @property
    def qualified(self) -> str:
        base = f"{self.schema}.{self.name}" if self.schema is not None else self.name
        return f"{base}({self.arguments})" if self.arguments is not None else base

    @property
    def object_key(self) -> tuple:
        return (OBJECT_TYPES.index(self.object_type), self.schema or "", self.name, self.arguments or "")

    def sort_key(self) -> tuple:
        own = 0 if self.item_type == self.object_type else 1
        return (*self.object_key, own, _ITEM_ORDER.get(self.item_type, 99), self.item or "",
                {REMOVED: 0, CHANGED: 1, ADDED: 2}[self.change])

    def weaken(self, *reasons: str) -> "Change":
        new = tuple(r for r in reasons if r and r not in self.reasons)
        return replace(self, weaker=True, reasons=self.reasons + new) if new else self

    def to_dict(self) -> dict:
        return {
            "object_type": self.object_type, "schema": self.schema, "name": self.name,
            "arguments": self.arguments, "qualified": self.qualified, "change": self.change,
            "item_type": self.item_type, "item": self.item,
            "attributes": [{"attribute": a.attribute, "before": to_jsonable(a.before), "after": to_jsonable(a.after)}
                           for a in self.attributes],
            "before": _jsonable(self.before), "after": _jsonable(self.after),
            "weaker": self.weaker, "reasons": list(self.reasons), "note": self.note,
            "text": describe_change(self),
        }


def _jsonable(obj: Any) -> Any:
    data = to_jsonable(obj)
    if isinstance(obj, Table):
        data.pop("row_estimate", None)  # estimates are not compared, so they are not shown either
    return data


@dataclass(frozen=True)
class Side:
    """What was compared on one side (a label for people: a file path or user@host:port/db, never a DSN)."""

    label: str
    kind: str  # snapshot | database
    database: str
    server_version: str
    taken_at: str

    def to_dict(self) -> dict:
        return {"label": self.label, "kind": self.kind, "database": self.database,
                "server_version": self.server_version, "taken_at": self.taken_at}


@dataclass(frozen=True)
class SnapshotDiff:
    source: Side
    target: Side
    changes: tuple[Change, ...]
    new_findings: tuple[Finding, ...] = ()
    resolved_findings: tuple[Finding, ...] = ()

    @property
    def identical(self) -> bool:
        return not self.changes and not self.new_findings and not self.resolved_findings

    @property
    def weaker_changes(self) -> list[Change]:
        return [c for c in self.changes if c.weaker]

    @property
    def failing_new_findings(self) -> list[Finding]:
        return [f for f in self.new_findings if f.severity in _FAILING]

    @property
    def weakens_isolation(self) -> bool:
        """What ``--fail-on-weaker`` fails on: a weakening change or a new critical or warning finding."""
        return bool(self.weaker_changes or self.failing_new_findings)

    def objects_changed(self) -> dict[str, int]:
        seen: dict[str, set] = {t: set() for t in OBJECT_TYPES}
        for c in self.changes:
            seen[c.object_type].add(c.object_key)
        return {t: len(v) for t, v in seen.items()}

    def summary(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "objects_changed": self.objects_changed(),
            "additions": sum(1 for c in self.changes if c.change == ADDED),
            "removals": sum(1 for c in self.changes if c.change == REMOVED),
            "changes": sum(1 for c in self.changes if c.change == CHANGED),
            "weaker": len(self.weaker_changes),
            "new_findings": len(self.new_findings),
            "new_failing_findings": len(self.failing_new_findings),
            "resolved_findings": len(self.resolved_findings),
        }

    def to_json_dict(self) -> dict:
        return {
            "format": "dbguard-diff", "version": 1,
            "source": self.source.to_dict(), "target": self.target.to_dict(),
            "summary": self.summary(),
            "changes": [c.to_dict() for c in self.changes],
            "new_findings": [_finding_dict(f) for f in self.new_findings],
            "resolved_findings": [_finding_dict(f) for f in self.resolved_findings],
        }


def _finding_dict(f: Finding) -> dict:
    return {"rule": f.rule, "severity": f.severity.value, "category": f.category, "schema": f.schema,
            "table": f.table, "object": f.object, "cache_key": f.cache_key, "message": f.message,
            "remediation": f.remediation}


# --------------------------------------------------------------------------- comparing
def in_scope(schema: str, config: Config) -> bool:
    """The schemas the audit looks at: ``schemas`` when the config names them, else all but the excluded."""
    return schema in config.schemas if config.schemas else schema not in config.exclude_schemas


def _attrs(a: Any, b: Any, names: Iterable[str]) -> tuple[AttributeChange, ...]:
    out = []
    for n in names:
        va, vb = getattr(a, n), getattr(b, n)
        if va != vb:
            out.append(AttributeChange(n, va, vb))
    return tuple(out)


def _by(items: Iterable, key) -> dict:
    out: dict = {}
    for it in items:
        out.setdefault(key(it), it)
    return out


def _pairs(a: Iterable, b: Iterable, key) -> Iterable[tuple]:
    """(key, object in a or None, object in b or None) for every key on either side, in key order."""
    da, db = _by(a, key), _by(b, key)
    for k in sorted(set(da) | set(db)):
        yield k, da.get(k), db.get(k)


def _is_tenant_fk(fk, config: Config, path_fks: set[str]) -> bool:
    """A foreign key that ties ``table`` to its tenant: tenant column -> tenants key, or one hop of the
    foreign-key path by which a table without a tenant column reaches a tenant table."""
    if fk.kind != "foreign_key":
        return False
    if fk.name in path_fks:
        return True
    t = config.tenant
    if (fk.ref_schema, fk.ref_table) != (t.tenants_schema, t.tenants_name):
        return False
    return dict(zip(fk.columns, fk.ref_columns)).get(t.column) == t.tenants_key


class _Differ:
    def __init__(self, a: Snapshot, b: Snapshot, config: Config):
        self.a, self.b, self.config = a, b, config
        self.changes: list[Change] = []

    def analyzer(self, snap: Snapshot):
        from dbguard_pipeline.policy import analyzer_for

        return analyzer_for(snap, self.config)

    # ----------------------------------------------------------------- whole snapshot
    def run(self) -> list[Change]:
        cfg = self.config
        sa = {s for s in self.a.schemas if in_scope(s, cfg)}
        sb = {s for s in self.b.schemas if in_scope(s, cfg)}
        for s in sorted(sa - sb):
            self.changes.append(Change("schema", None, s, REMOVED, "schema"))
        for s in sorted(sb - sa):
            self.changes.append(Change("schema", None, s, ADDED, "schema"))
        self._tables()
        self._views()
        self._functions()
        self._roles()
        return self.changes

    # ----------------------------------------------------------------- tables
    def _tables(self) -> None:
        cfg = self.config
        for key, old, new in _pairs((t for t in self.a.tables if in_scope(t.schema, cfg)),
                                    (t for t in self.b.tables if in_scope(t.schema, cfg)), lambda t: (t.schema, t.name)):
            if old is None:
                self.changes.append(Change("table", key[0], key[1], ADDED, "table", after=new))
            elif new is None:
                self.changes.append(Change("table", key[0], key[1], REMOVED, "table", before=old))
            else:
                self._table(old, new)

    def _table(self, ta: Table, tb: Table) -> None:
        from dbguard_pipeline.semantics.tenancy import has_tenant_column, tenant_path

        cfg = self.config
        out: list[Change] = []

        def ch(change, item_type, item=None, **kw) -> Change:
            c = Change("table", tb.schema, tb.name, change, item_type, item, **kw)
            out.append(c)
            return c

        attrs = _attrs(ta, tb, ("kind", "parent", "owner", "comment"))
        if attrs:
            ch(CHANGED, "table", attributes=attrs)
        rls = _attrs(ta, tb, ("rls_enabled", "rls_forced"))
        if rls:
            reasons = []
            if ta.rls_enabled and not tb.rls_enabled:
                reasons.append("row level security disabled")
            if ta.rls_forced and not tb.rls_forced and tb.rls_enabled:
                reasons.append("row level security no longer forced: the table owner bypasses the policies")
            c = ch(CHANGED, "rls", attributes=rls)
            if reasons:
                out[-1] = c.weaken(*reasons)

        # columns
        tenant_col = cfg.tenant.column if has_tenant_column(ta, cfg) else None
        for name, old, new in _pairs(ta.columns, tb.columns, lambda c: c.name):
            if old is None:
                ch(ADDED, "column", name, after=new)
            elif new is None:
                c = ch(REMOVED, "column", name, before=old)
                if name == tenant_col:
                    out[-1] = c.weaken("tenant column dropped")
            else:
                attrs = _attrs(old, new, ("type", "not_null", "default", "identity", "generated"))
                if attrs:
                    c = ch(CHANGED, "column", name, attributes=attrs)
                    if name == tenant_col and old.not_null and not new.not_null:
                        out[-1] = c.weaken("tenant column now allows NULL")

        # constraints
        def first_hops(snap: Snapshot, t: Table) -> set[str]:
            return {s.constraint.name for s in (tenant_path(snap, t, cfg) or []) if s.child is t}

        for name, old, new in _pairs(ta.constraints, tb.constraints, lambda c: c.name):
            if old is None:
                ch(ADDED, "constraint", name, after=new)
                continue
            if new is None or _attrs(old, new, ("kind", "definition", "validated")):
                tying = _is_tenant_fk(old, cfg, first_hops(self.a, ta))
            if new is None:
                c = ch(REMOVED, "constraint", name, before=old)
                if tying:
                    out[-1] = c.weaken("foreign key that ties the table to its tenant dropped")
                continue
            attrs = _attrs(old, new, ("kind", "definition", "validated"))
            if attrs:
                c = ch(CHANGED, "constraint", name, attributes=attrs)
                if tying and not _is_tenant_fk(new, cfg, first_hops(self.b, tb)):
                    out[-1] = c.weaken("foreign key no longer ties the table to its tenant")
                elif tying and old.validated and not new.validated:
                    out[-1] = c.weaken("foreign key that ties the table to its tenant is no longer validated")

        # indexes
        for name, old, new in _pairs(ta.indexes, tb.indexes, lambda i: i.name):
            if old is None:
                ch(ADDED, "index", name, after=new)
            elif new is None:
                ch(REMOVED, "index", name, before=old)
            else:
                attrs = _attrs(old, new, ("definition", "valid"))
                if attrs:
                    ch(CHANGED, "index", name, attributes=attrs)

        # policies
        for name, old, new in _pairs(ta.policies, tb.policies, lambda p: p.name):
            if old is None:
                ch(ADDED, "policy", name, after=new)
            elif new is None:
                c = ch(REMOVED, "policy", name, before=old)
                if not old.permissive:
                    out[-1] = c.weaken("RESTRICTIVE policy removed")
                else:
                    out[-1] = replace(c, note="permissive policy removed: access narrows")
            else:
                attrs = _attrs(old, new, ("permissive", "command", "using", "with_check"))
                if tuple(sorted(old.roles)) != tuple(sorted(new.roles)):
                    attrs += (AttributeChange("roles", tuple(sorted(old.roles)), tuple(sorted(new.roles))),)
                if attrs:
                    c = ch(CHANGED, "policy", name, attributes=attrs)
                    out[-1] = c.weaken(*self._policy_weaker(ta, old, tb, new))

        # grants, per grantee
        ga: dict[str, set] = {}
        gb: dict[str, set] = {}
        for g in ta.grants:
            ga.setdefault(g.grantee, set()).add(g.privilege)
        for g in tb.grants:
            gb.setdefault(g.grantee, set()).add(g.privilege)
        out.extend(_grant_changes("table", tb.schema, tb.name, ga, gb))
        self.changes.extend(out)

    def _policy_weaker(self, ta: Table, pa: Policy, tb: Table, pb: Policy) -> list[str]:
        from dbguard_pipeline.rules._common import (check_analysis, good_enough, policy_is_moot, roles_text, using_analysis)
        from dbguard_pipeline.semantics.tenancy import tenant_column

        reasons = []
        if not pa.permissive and pb.permissive:
            reasons.append("made PERMISSIVE (was RESTRICTIVE)")
        if pb.permissive and pa.permissive and "public" not in pa.roles:
            widened = [r for r in ("public", "anon") if r in pb.roles and r not in pa.roles]
            if widened:
                reasons.append(f"now applies to {roles_text(widened)}")
        if not pa.permissive and not pb.permissive:
            if "public" not in pb.roles:
                lost = sorted(set(pa.roles) - set(pb.roles))
                if lost:
                    reasons.append(f"RESTRICTIVE policy no longer applies to {roles_text(lost)}")
            if pb.command != "all" and pa.command != pb.command:
                reasons.append(f"RESTRICTIVE policy narrowed from {pa.command.upper()} to {pb.command.upper()}")
        if policy_is_moot(pb, self.b):
            return reasons  # only roles that bypass RLS anyway: its expressions open nothing
        an_a, an_b = self.analyzer(self.a), self.analyzer(self.b)
        tcol_a, tcol_b = tenant_column(ta, self.config), tenant_column(tb, self.config)
        what = "pins the tenant" if tcol_b else "restricts rows to the caller"
        if pa.using != pb.using or pa.permissive != pb.permissive:
            ua, ub = using_analysis(an_a, ta, pa, tcol_a), using_analysis(an_b, tb, pb, tcol_b)
            if ua is not None and ub is not None and good_enough(ua, tcol_a, strict=True) \
                    and not good_enough(ub, tcol_b, strict=True):
                reasons.append(f"USING no longer {what}: it {ub.describe()}")
        if pb.command in ("insert", "update", "all") and (pa.using, pa.with_check) != (pb.using, pb.with_check):
            ca, cb = check_analysis(an_a, ta, pa, tcol_a), check_analysis(an_b, tb, pb, tcol_b)
            if ca is not None and cb is not None and good_enough(ca, tcol_a, strict=True) \
                    and not good_enough(cb, tcol_b, strict=True):
                side = "WITH CHECK" if pb.with_check else "USING (checked for writes, no WITH CHECK)"
                reasons.append(f"{side} no longer {what}: it {cb.describe()}")
        return reasons

    # ----------------------------------------------------------------- views
    def _views(self) -> None:
        cfg = self.config
        for key, old, new in _pairs((v for v in self.a.views if in_scope(v.schema, cfg)),
                                    (v for v in self.b.views if in_scope(v.schema, cfg)), lambda v: (v.schema, v.name)):
            if old is None:
                self.changes.append(Change("view", key[0], key[1], ADDED, "view", after=new))
                continue
            if new is None:
                self.changes.append(Change("view", key[0], key[1], REMOVED, "view", before=old))
                continue
            attrs = _attrs(old, new, ("materialized", "security_invoker", "security_barrier", "owner", "definition"))
            if attrs:
                c = Change("view", key[0], key[1], CHANGED, "view", attributes=attrs)
                if old.security_invoker and not new.security_invoker:
                    c = c.weaken("no longer security_invoker: it runs with its owner's rights, past row level security")
                self.changes.append(c)
            ga: dict[str, set] = {}
            gb: dict[str, set] = {}
            for g in old.grants:
                ga.setdefault(g.grantee, set()).add(g.privilege)
            for g in new.grants:
                gb.setdefault(g.grantee, set()).add(g.privilege)
            self.changes.extend(_grant_changes("view", key[0], key[1], ga, gb))

    # ----------------------------------------------------------------- functions
    def _functions(self) -> None:
        cfg = self.config
        for key, old, new in _pairs((f for f in self.a.functions if in_scope(f.schema, cfg)),
                                    (f for f in self.b.functions if in_scope(f.schema, cfg)),
                                    lambda f: (f.schema, f.name, f.arguments)):
            base = dict(object_type="function", schema=key[0], name=key[1], item_type="function", arguments=key[2])
            if old is None:
                self.changes.append(Change(change=ADDED, after=new, **base))
                continue
            if new is None:
                self.changes.append(Change(change=REMOVED, before=old, **base))
                continue
            attrs = _attrs(old, new, ("returns", "language", "security_definer", "volatility", "config", "owner",
                                      "body"))
            if not attrs:
                continue
            c = Change(change=CHANGED, attributes=attrs, **base)
            if new.security_definer and not old.security_definer:
                c = c.weaken("now SECURITY DEFINER: runs with its owner's rights")
            if old.search_path is not None and new.search_path is None and new.language not in ("c", "internal"):
                c = c.weaken("no longer sets search_path: names resolve through the caller's search_path")
            self.changes.append(c)

    # ----------------------------------------------------------------- roles
    def _roles(self) -> None:
        for name, old, new in _pairs(self.a.roles, self.b.roles, lambda r: r.name):
            if old is None:
                c = Change("role", None, name, ADDED, "role", after=new)
                if new.superuser or new.bypassrls:
                    c = c.weaken(f"new role with {_bypass_text(new)}: it bypasses row level security")
                self.changes.append(c)
            elif new is None:
                self.changes.append(Change("role", None, name, REMOVED, "role", before=old))
            else:
                attrs = _attrs(old, new, ("superuser", "bypassrls", "can_login"))
                if attrs:
                    c = Change("role", None, name, CHANGED, "role", attributes=attrs)
                    if (new.superuser and not old.superuser) or (new.bypassrls and not old.bypassrls):
                        if not (old.superuser or old.bypassrls):
                            c = c.weaken(f"now has {_bypass_text(new)}: it bypasses row level security")
                    self.changes.append(c)


def _bypass_text(r: Role) -> str:
    return " and ".join(x for x, on in (("SUPERUSER", r.superuser), ("BYPASSRLS", r.bypassrls)) if on)


def _grant_changes(object_type: str, schema: str, name: str, ga: dict[str, set], gb: dict[str, set]) -> list[Change]:
    out = []
    for grantee in sorted(set(ga) | set(gb)):
        before, after = ga.get(grantee, set()), gb.get(grantee, set())
        removed, added = sorted(before - after), sorted(after - before)
        if removed:
            out.append(Change(object_type, schema, name, REMOVED, "grant", grantee, before=tuple(removed)))
        if added:
            c = Change(object_type, schema, name, ADDED, "grant", grantee, after=tuple(added))
            if grantee in API_GRANTEES:
                who = "PUBLIC" if grantee == "public" else grantee
                c = c.weaken(f"{', '.join(added)} granted to {who}")
            out.append(c)
    return out


# --------------------------------------------------------------------------- findings
def static_findings(snapshot: Snapshot, config: Config) -> dict[str, Finding]:
    """The static audit's findings (after the configured ignores), by cache key."""
    from dbguard_pipeline.audit import split_ignored
    from dbguard_pipeline.audit import static_findings as run_static

    kept, _ignored = split_ignored(run_static(snapshot, config), config)
    return {f.cache_key: f for f in kept}


def diff_snapshots(a: Snapshot, b: Snapshot, config: Optional[Config] = None, *,
                   source: Optional[str] = None, target: Optional[str] = None,
                   source_kind: str = "snapshot", target_kind: str = "snapshot") -> SnapshotDiff:
    """Compare snapshot ``a`` (before, e.g. local or the snapshot before migrations) with ``b`` (after, e.g.
    production). ``source`` and ``target`` are labels for people (never pass a DSN with a password)."""
    from dbguard_pipeline.rules import sort_findings

    config = config or Config()
    changes = _Differ(a, b, config).run()

    fa, fb = static_findings(a, config), static_findings(b, config)
    new = sort_findings(f for k, f in fb.items() if k not in fa)
    resolved = sort_findings(f for k, f in fa.items() if k not in fb)

    # A new isolation finding on a policy, view or function that changed or appeared, or on a table that
    # appeared, marks that change weaker.
    flagged: dict[tuple, set[str]] = {}
    for f in new:
        if f.rule in POLICY_ISOLATION_RULES and f.object:
            flagged.setdefault(("table", f.schema, f.table, "policy", f.object), set()).add(f.rule)
        if f.rule in TABLE_ISOLATION_RULES:
            flagged.setdefault(("table", f.schema, f.table, "table", None, ADDED), set()).add(f.rule)
        if f.rule in VIEW_ISOLATION_RULES:
            flagged.setdefault(("view", f.schema, f.table, "view", None), set()).add(f.rule)
        if f.rule in FUNCTION_ISOLATION_RULES and f.object:
            flagged.setdefault(("function", f.schema, f.object), set()).add(f.rule)
    if flagged:
        for i, c in enumerate(changes):
            if c.change not in (ADDED, CHANGED):
                continue
            rules = set()
            for key in ((c.object_type, c.schema, c.name, c.item_type, c.item),
                        (c.object_type, c.schema, c.name, c.item_type, c.item, c.change)):
                rules |= flagged.get(key, set())
            if c.object_type == "function" and c.change == ADDED:  # a changed one is judged above
                rules |= flagged.get(("function", c.schema, f"{c.name}({c.arguments})"), set())
            if rules:
                changes[i] = c.weaken(*(f"now flagged {r}" for r in sorted(rules)))

    changes.sort(key=Change.sort_key)
    return SnapshotDiff(
        source=_side(a, source, source_kind), target=_side(b, target, target_kind),
        changes=tuple(changes), new_findings=tuple(new), resolved_findings=tuple(resolved))


def _side(s: Snapshot, label: Optional[str], kind: str) -> Side:
    return Side(label=label or f"snapshot of {s.database}", kind=kind, database=s.database,
                server_version=s.server_version, taken_at=s.taken_at)


# --------------------------------------------------------------------------- snapshot files
def _type_problem(tp: Any, value: Any, where: str) -> Optional[str]:
    """Why ``value`` (parsed JSON) does not fit the model type ``tp``, or None (mirrors model._build)."""
    import dataclasses
    import types
    import typing

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_problem(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, list):
            return f"{where} should be a list"
        inner = typing.get_args(tp)[0]
        for i, v in enumerate(value):
            problem = _type_problem(inner, v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if origin is dict or tp is dict:
        return None if isinstance(value, dict) else f"{where} should be an object"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return f"{where or 'the top level'} should be an object"
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            sub = f"{where}.{f.name}" if where else f.name
            if f.name not in value:
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                if required:
                    return f"{sub} is missing"
                continue
            problem = _type_problem(hints[f.name], value[f.name], sub)
            if problem:
                return problem
        return None
    if tp is bool:
        return None if isinstance(value, bool) else f"{where} should be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{where} should be a number"
    if tp is str:
        return None if isinstance(value, str) else f"{where} should be a string"
    return None


def check_snapshot_json(data: Any) -> Optional[str]:
    """None when ``data`` (parsed JSON) is a snapshot ``load_snapshot`` can read, else a one-line reason."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    if "findings" in data and "tables" not in data:
        return "it is a dbguard validate report"
    if "changes" in data and data.get("format") == "dbguard-diff":
        return "it is a dbguard diff report"
    return _type_problem(Snapshot, data, "")


# --------------------------------------------------------------------------- presentation
def _printable(text: str) -> str:
    """Control characters (newlines in hostile names, escape sequences) shown escaped, never interpreted."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _ident(name: str) -> str:
    from dbguard_pipeline.rules._common import ident

    return _printable(ident(name))


def _one_line(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_one_line(v) for v in value) + "]"
    return _printable(" ".join(str(value).split())) or "''"


def object_title(c: Change) -> str:
    if c.object_type in ("schema", "role"):
        return f"{c.object_type} {_ident(c.name)}"
    base = f"{_ident(c.schema)}.{_ident(c.name)}"
    if c.object_type == "function":
        return f"function {base}({_printable(c.arguments or '')})"
    return f"{c.object_type} {base}"


def _roles(roles) -> str:
    return ", ".join("PUBLIC" if r == "public" else _ident(r) for r in roles)


def _policy_text(p: Policy) -> str:
    s = f"{'PERMISSIVE' if p.permissive else 'RESTRICTIVE'} {p.command.upper()} TO {_roles(p.roles)}"
    if p.using is not None:
        s += f" USING ({_one_line(p.using)})"
    if p.with_check is not None:
        s += f" WITH CHECK ({_one_line(p.with_check)})"
    return s


def _item_text(c: Change, obj: Any) -> str:
    """What an added or removed item is, in one line."""
    t = c.item_type
    if t == "column":
        parts = [_one_line(obj.type), "not null" if obj.not_null else "nullable"]
        if obj.default is not None:
            parts.append(f"default {_one_line(obj.default)}")
        if obj.identity:
            parts.append(f"identity {obj.identity}")
        if obj.generated is not None:
            parts.append(f"generated always as ({_one_line(obj.generated)}) stored")
        return ", ".join(parts)
    if t == "constraint":
        return _one_line(obj.definition) + ("" if obj.validated else " (not validated)")
    if t == "index":
        return _one_line(obj.definition) + ("" if obj.valid else " (invalid)")
    if t == "policy":
        return _policy_text(obj)
    if t == "grant":
        return ", ".join(obj)
    if t == "table":
        rls = "row level security " + ("enabled" + (", forced" if obj.rls_forced else "") if obj.rls_enabled
                                       else "disabled")
        return (f"{len(obj.columns)} column{'s' if len(obj.columns) != 1 else ''}, {rls}, "
                f"{len(obj.policies)} polic{'y' if len(obj.policies) == 1 else 'ies'}, owner {_ident(obj.owner)}")
    if t == "view":
        kind = "materialized" if obj.materialized else ("security_invoker" if obj.security_invoker
                                                        else "runs with its owner's rights")
        return f"{kind}, owner {_ident(obj.owner)}"
    if t == "function":
        sd = ", SECURITY DEFINER" if obj.security_definer else ""
        sp = f", search_path={_one_line(obj.search_path)}" if obj.search_path is not None else ""
        return f"returns {_one_line(obj.returns)}, {obj.language}{sd}{sp}"
    if t == "role":
        flags = [n for n, on in (("superuser", obj.superuser), ("bypassrls", obj.bypassrls),
                                 ("login", obj.can_login)) if on]
        return ", ".join(flags) if flags else "no login"
    return ""


_MULTILINE = {"body", "definition"}


def _attr_text(a: AttributeChange, item_type: str) -> str:
    if a.attribute in _MULTILINE and item_type in ("function", "view"):
        return f"{a.attribute} changed"
    return f"{a.attribute}: {_one_line(a.before)} -> {_one_line(a.after)}"


def _who(grantee: str) -> str:
    return "PUBLIC" if grantee == "public" else _ident(grantee)


def change_body(c: Change) -> str:
    """What changed, without the object's name: "owner: a -> b; comment: ..." or "column x: text, nullable"."""
    own = c.item_type == c.object_type
    if c.item_type == "grant":
        privs = c.after if c.change == ADDED else c.before
        return f"grant {', '.join(privs or ())} to {_who(c.item)}"
    if c.change == CHANGED:
        attrs = "; ".join(_attr_text(a, c.item_type) for a in c.attributes)
        if own:
            return attrs
        head = "row level security" if c.item_type == "rls" else f"{c.item_type} {_ident(c.item)}"
        return attrs if c.item_type == "rls" else f"{head}: {attrs}"
    obj = c.after if c.change == ADDED else c.before
    head = object_title(c) if own else f"{c.item_type} {_ident(c.item)}"
    detail = _item_text(c, obj) if obj is not None and c.item_type != "schema" else ""
    return f"{head}: {detail}" if detail else head


def describe_change(c: Change) -> str:
    """One line, without the +/-/~ marker, naming the object: what changed."""
    body = change_body(c)
    if c.item_type == c.object_type and c.change != CHANGED:
        return body
    return f"{object_title(c)}: {body}"


def _body_diff(a: AttributeChange, indent: str, limit: int = 30) -> list[str]:
    before = str(a.before or "").splitlines()
    after = str(a.after or "").splitlines()
    lines = [ln for ln in difflib.unified_diff(before, after, lineterm="", n=1)][2:]
    out = [f"{indent}{_printable(ln)}" for ln in lines[:limit]]
    if len(lines) > limit:
        out.append(f"{indent}… {len(lines) - limit} more lines")
    return out


def _plural(n: int, one: str, many: Optional[str] = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def closing_line(d: SnapshotDiff) -> str:
    if d.identical:
        return "no differences"
    s = d.summary()
    objects = [_plural(n, t) for t, n in s["objects_changed"].items() if n]
    head = (", ".join(objects) + " changed: ") if objects else "no schema changes: "
    counts = f"{_plural(s['additions'], 'addition')}, {_plural(s['removals'], 'removal')}, " \
             f"{_plural(s['changes'], 'change')}"
    weaker = f"{s['weaker']} change{' weakens' if s['weaker'] == 1 else 's weaken'} isolation"
    findings = f"{_plural(s['new_findings'], 'new finding')}, {s['resolved_findings']} resolved"
    return f"{head}{counts}; {weaker}; {findings}"


def _side_text(side: Side) -> str:
    what = "database" if side.kind == "database" else "snapshot"
    when = f", taken {side.taken_at}" if side.kind == "snapshot" else ""
    return (f"{_printable(side.label)} ({what} {_printable(side.database)}, PostgreSQL "
            f"{_printable(side.server_version)}{when})")


def render_text(d: SnapshotDiff) -> str:
    lines = [f"source: {_side_text(d.source)}", f"target: {_side_text(d.target)}", ""]
    if d.identical:
        lines.append("no differences")
        return "\n".join(lines) + "\n"
    current = None
    for c in d.changes:
        own = c.item_type == c.object_type
        whole = own and c.change != CHANGED
        if whole:
            current = None
            prefix = ""
        else:
            if c.object_key != current:
                lines.append(object_title(c))
                current = c.object_key
            prefix = "  "
        text = change_body(c)
        flag = f"  [weaker: {'; '.join(c.reasons)}]" if c.weaker else ""
        note = f"  ({c.note})" if c.note else ""
        lines.append(f"{prefix}{_MARK[c.change]} {text}{flag}{note}")
        for a in c.attributes:
            if a.attribute in _MULTILINE and c.item_type in ("function", "view"):
                lines.extend(_body_diff(a, prefix + "    "))
    if d.new_findings or d.resolved_findings:
        lines.append("")
    if d.new_findings:
        lines.append(f"new findings ({len(d.new_findings)}):")
        lines.extend(f"  + [{f.severity.value}] {_printable(f.cache_key)}: {_printable(f.message)}"
                     for f in d.new_findings)
    if d.resolved_findings:
        lines.append(f"resolved findings ({len(d.resolved_findings)}):")
        lines.extend(f"  - [{f.severity.value}] {_printable(f.cache_key)}: {_printable(f.message)}"
                     for f in d.resolved_findings)
    lines.extend(["", closing_line(d)])
    return "\n".join(lines) + "\n"


def render(d: SnapshotDiff, fmt: str = "text") -> str:
    if fmt == "json":
        return json.dumps(d.to_json_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "text":
        return render_text(d)
    from dbguard_pipeline.errors import DbguardError

    raise DbguardError(f"unknown diff format {fmt!r} (choose text or json)")
