"""Which changes weaken tenant isolation: the one judgment behind ``dbguard diff`` and the nightly
``no_policy_weakened`` asset check. No I/O, no analyzer call, no Dagster: callers pass what they know.

PostgreSQL decides what is weaker. Permissive policies are OR-ed, restrictive ones AND-ed with them, so:

* a PERMISSIVE policy that grows (more roles, more commands, a USING / WITH CHECK that pinned the tenant and
  no longer does) widens access: weaker. Removing one can only narrow access: not weaker, whatever the
  policy was (a sound policy removed leaves its roles and commands with fewer rows, never more; a
  replacement created under another name is judged on its own, by the findings it comes with).
* a RESTRICTIVE policy that grows (more roles, more commands) narrows access: not weaker. Removing one,
  making it PERMISSIVE, or shrinking it to fewer roles or commands widens access: weaker.
* an added or changed policy that comes with a new isolation finding (``now flagged <rule>``) is weaker.

A policy is described by :class:`PolicyFacts`: its shape (permissive, command, roles, a fingerprint of its
expressions) and what the policy analyzer says of its expressions, computed by the caller from a snapshot
(``dbguard_pipeline.diff.policy_facts``) or read back from the compact state the nightly check keeps
between runs (:meth:`TableFacts.from_json`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.model.schema import Column, Constraint, Function, Role, Snapshot, Table, View
from dbguard_pipeline.semantics.roles import UNAUTHENTICATED_GRANTEES, bypass_text, bypasses_rls
from dbguard_pipeline.semantics.tenancy import tenant_path
from dbguard_pipeline.text import role_list

COMMANDS = ("select", "insert", "update", "delete")  # in the order reasons name them
WRITE_COMMANDS = ("insert", "update", "all")  # commands whose new rows are checked (WITH CHECK)
PERMISSIVE_REMOVED = "permissive policy removed: access narrows"


@dataclass(frozen=True)
class Verdict:
    """Why a change weakens isolation (no reasons: it does not), and a remark that is not a weakening."""

    reasons: tuple[str, ...] = ()
    note: Optional[str] = None

    @property
    def weaker(self) -> bool:
        return bool(self.reasons)


# --------------------------------------------------------------------------- policies
@dataclass(frozen=True)
class ExprFacts:
    """What the policy analyzer says of one expression: whether it isolates tenants (pins the tenant column,
    or on a table without one, restricts rows to the caller), and if not, what it does (``is always true``)."""

    isolates: bool
    problem: str = ""


@dataclass(frozen=True)
class PolicyFacts:
    permissive: bool
    command: str  # select | insert | update | delete | all
    roles: tuple[str, ...]  # sorted; "public" for PUBLIC
    expressions: str  # fingerprint of USING and WITH CHECK: equal when neither changed
    using: Optional[ExprFacts] = None  # None: no USING, or not known
    check: Optional[ExprFacts] = None  # what new rows are checked against (WITH CHECK, else USING); None: none
    has_with_check: bool = False
    tenant_column: bool = True  # the table has a tenant column (the wording: pins the tenant / restricts rows)
    moot: bool = False  # every role it applies to bypasses row level security: it opens nothing
    bypass: frozenset[str] = frozenset()  # roles that bypass RLS anyway: gaining or losing one changes nothing

    @property
    def shape(self) -> tuple[bool, str, tuple[str, ...], str]:
        """What makes the policy "changed" (the analysis can change with the snapshot around it)."""
        return (self.permissive, self.command, self.roles, self.expressions)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "permissive": self.permissive,
            "roles": list(self.roles),
            "expr": self.expressions,
            "using_isolates": None if self.using is None else self.using.isolates,
            "check_isolates": None if self.check is None else self.check.isolates,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyFacts:
        """Read back :meth:`to_json` (and the older form without the analyzer's verdicts)."""

        def expr(key: str) -> Optional[ExprFacts]:
            value = data.get(key)
            return ExprFacts(value) if isinstance(value, bool) else None

        return cls(
            permissive=bool(data.get("permissive", True)),
            command=str(data.get("command", "all")),
            roles=tuple(sorted(str(r) for r in data.get("roles") or ())),
            expressions=str(data.get("expr")),
            using=expr("using_isolates"),
            check=expr("check_isolates"),
        )


def expressions_fingerprint(using: Optional[str], with_check: Optional[str]) -> str:
    return hashlib.sha256("\x00".join(p or "" for p in (using, with_check)).encode("utf-8")).hexdigest()[:12]


def commands(command: str) -> tuple[str, ...]:
    return COMMANDS if command == "all" else (command,)


def judge_policy(before: Optional[PolicyFacts], after: Optional[PolicyFacts], flagged: Iterable[str] = ()) -> Verdict:
    """A policy added (``before`` None), removed (``after`` None) or changed. ``flagged``: the isolation rules
    whose finding on this policy is new (a policy that comes with one is weaker)."""
    if after is None:
        if before is None or before.permissive:
            return Verdict(note=PERMISSIVE_REMOVED)
        return Verdict(("RESTRICTIVE policy removed",))
    reasons: list[str] = []
    if before is not None:
        reasons.extend(_shape_reasons(before, after))
        if not after.moot:
            reasons.extend(_expression_reasons(before, after))
    reasons.extend(f"now flagged {r}" for r in sorted(set(flagged)) if f"now flagged {r}" not in reasons)
    return Verdict(tuple(reasons))


def _shape_reasons(a: PolicyFacts, b: PolicyFacts) -> list[str]:
    reasons = []
    if not a.permissive and b.permissive:
        reasons.append("made PERMISSIVE (was RESTRICTIVE)")
    if a.permissive and b.permissive and not b.moot:
        if "public" not in a.roles:
            gained = sorted(set(b.roles) - set(a.roles) - b.bypass, key=lambda r: (r != "public", r))
            if gained:
                reasons.append(f"now applies to {role_list(gained)}")
        grown = [c for c in commands(b.command) if c not in commands(a.command)]
        if grown:
            reasons.append(f"now allows {', '.join(c.upper() for c in grown)} (was {a.command.upper()})")
    if not a.permissive and not b.permissive:
        if "public" not in b.roles:
            lost = sorted(set(a.roles) - set(b.roles) - b.bypass)
            if lost:
                reasons.append(f"RESTRICTIVE policy no longer applies to {role_list(lost)}")
        if any(c not in commands(b.command) for c in commands(a.command)):
            reasons.append(f"RESTRICTIVE policy narrowed from {a.command.upper()} to {b.command.upper()}")
    return reasons


def _expression_reasons(a: PolicyFacts, b: PolicyFacts) -> list[str]:
    reasons = []
    what = "pins the tenant" if b.tenant_column else "restricts rows to the caller"
    rewritten = a.expressions != b.expressions
    if (
        (rewritten or a.permissive != b.permissive)
        and a.using
        and b.using
        and a.using.isolates
        and not b.using.isolates
    ):
        reasons.append(f"USING no longer {what}: it {b.using.problem}")
    if rewritten and b.command in WRITE_COMMANDS and a.check and b.check and a.check.isolates and not b.check.isolates:
        side = "WITH CHECK" if b.has_with_check else "USING (checked for writes, no WITH CHECK)"
        reasons.append(f"{side} no longer {what}: it {b.check.problem}")
    return reasons


def newly_flagged(
    findings: Iterable[Finding], before: Container[str], rules: Container[str]
) -> dict[tuple[str, str, str], tuple[str, ...]]:
    """(schema, table, policy) -> the ``rules`` whose finding on that policy is not in ``before`` (cache keys)."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for f in findings:
        if f.rule in rules and f.object and f.cache_key not in before:
            out.setdefault((f.schema, f.table, f.object), set()).add(f.rule)
    return {k: tuple(sorted(v)) for k, v in out.items()}


# --------------------------------------------------------------------------- row level security
def rls_weakening(
    enabled_before: bool, forced_before: bool, enabled_after: bool, forced_after: bool
) -> tuple[str, ...]:
    reasons = []
    if enabled_before and not enabled_after:
        reasons.append("row level security disabled")
    if forced_before and not forced_after and enabled_after:
        reasons.append("row level security no longer forced: the table owner bypasses the policies")
    return tuple(reasons)


@dataclass(frozen=True)
class TableFacts:
    """A table as the nightly check remembers it between runs: its RLS flags and its policies' facts."""

    rls_enabled: bool
    rls_forced: bool
    policies: Mapping[str, PolicyFacts] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rls": self.rls_enabled,
            "forced": self.rls_forced,
            "policies": {name: p.to_json() for name, p in self.policies.items()},
        }

    @classmethod
    def from_json(cls, data: Any) -> Optional[TableFacts]:
        if not isinstance(data, Mapping):
            return None
        policies = data.get("policies")
        return cls(
            bool(data.get("rls")),
            bool(data.get("forced")),
            {str(n): PolicyFacts.from_json(p) for n, p in (policies or {}).items() if isinstance(p, Mapping)}
            if isinstance(policies, Mapping)
            else {},
        )


@dataclass(frozen=True)
class Judged:
    """One change between two states of a table: its row level security (``policy`` None) or a policy."""

    table: str
    policy: Optional[str]
    change: str  # rls | added | removed | changed
    verdict: Verdict


def judge_tables(
    before: Mapping[str, TableFacts], after: Mapping[str, TableFacts], flagged: Mapping[tuple[str, str], Iterable[str]]
) -> list[Judged]:
    """Every RLS and policy change of the tables in both states (by qualified name, in name order).
    ``flagged``: (table, policy) -> the isolation rules newly flagged on it."""
    out: list[Judged] = []
    for table in sorted(set(before) & set(after)):
        a, b = before[table], after[table]
        rls = rls_weakening(a.rls_enabled, a.rls_forced, b.rls_enabled, b.rls_forced)
        if rls:
            out.append(Judged(table, None, "rls", Verdict(rls)))
        for name in sorted(set(a.policies) | set(b.policies)):
            pa, pb = a.policies.get(name), b.policies.get(name)
            if pa is not None and pb is not None and pa.shape == pb.shape:
                continue
            change = "added" if pa is None else "removed" if pb is None else "changed"
            out.append(Judged(table, name, change, judge_policy(pa, pb, flagged.get((table, name), ()))))
    return out


# --------------------------------------------------------------------------- grants, columns, keys
def grant_weakening(grantee: str, added: Iterable[str]) -> tuple[str, ...]:
    """Privileges granted on a table or view: weaker when a client without sign-in gets them."""
    privileges = list(added)
    if privileges and grantee in UNAUTHENTICATED_GRANTEES:
        return (f"{', '.join(privileges)} granted to {role_list([grantee])}",)
    return ()


def tenant_column_dropped(is_tenant_column: bool) -> tuple[str, ...]:
    return ("tenant column dropped",) if is_tenant_column else ()


def tenant_column_weakening(is_tenant_column: bool, before: Column, after: Column) -> tuple[str, ...]:
    if is_tenant_column and before.not_null and not after.not_null:
        return ("tenant column now allows NULL",)
    return ()


def ties_to_tenant(fk: Constraint, snapshot: Snapshot, table: Table, config: Config) -> bool:
    """A foreign key that ties ``table`` to its tenant: tenant column -> tenants key, or the first hop of the
    foreign-key path by which a table without a tenant column reaches a tenant table."""
    if fk.kind != "foreign_key":
        return False
    if fk.name in {s.constraint.name for s in (tenant_path(snapshot, table, config) or []) if s.child is table}:
        return True
    t = config.tenant
    if (fk.ref_schema, fk.ref_table) != (t.tenants_schema, t.tenants_name):
        return False
    return dict(zip(fk.columns, fk.ref_columns, strict=False)).get(t.column) == t.tenants_key


def tenant_fk_weakening(
    tied_before: bool, before: Constraint, after: Optional[Constraint], tied_after: bool
) -> tuple[str, ...]:
    """A foreign key that tied the table to its tenant dropped (``after`` None) or changed."""
    if not tied_before:
        return ()
    if after is None:
        return ("foreign key that ties the table to its tenant dropped",)
    if not tied_after:
        return ("foreign key no longer ties the table to its tenant",)
    if before.validated and not after.validated:
        return ("foreign key that ties the table to its tenant is no longer validated",)
    return ()


# --------------------------------------------------------------------------- views, functions, roles
def view_weakening(before: View, after: View) -> tuple[str, ...]:
    if before.security_invoker and not after.security_invoker:
        return ("no longer security_invoker: it runs with its owner's rights, past row level security",)
    return ()


def function_weakening(before: Function, after: Function) -> tuple[str, ...]:
    reasons = []
    if after.security_definer and not before.security_definer:
        reasons.append("now SECURITY DEFINER: runs with its owner's rights")
    if before.search_path is not None and after.search_path is None and after.language not in ("c", "internal"):
        reasons.append("no longer sets search_path: names resolve through the caller's search_path")
    return tuple(reasons)


def role_weakening(before: Optional[Role], after: Role) -> tuple[str, ...]:
    """A role added (``before`` None) or changed."""
    if before is None:
        return (f"new role with {bypass_text(after)}: it bypasses row level security",) if bypasses_rls(after) else ()
    gained = (after.superuser and not before.superuser) or (after.bypassrls and not before.bypassrls)
    if gained and not bypasses_rls(before):
        return (f"now has {bypass_text(after)}: it bypasses row level security",)
    return ()
