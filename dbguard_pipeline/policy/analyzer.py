"""Policy expression analysis on the real PostgreSQL parser: the entry point.

Row level security policies arrive as text printed by ``pg_get_expr`` (USING and WITH CHECK). The
:class:`Analyzer` parses that text (parse.py) and answers the questions the audit rules ask:

* is it always true? -- constant folding of trivial predicates in any spelling (fold.py);
* equivalent spellings are rewritten to one form first (normal.py: ``(select auth.role())``, ``x = true``,
  ``NOT NOT x``, ``x IN (v)``, ...), so that they get the same answer;
* does it pin the tenant? -- in every branch that can be true, the tenant column is compared with the tenant
  context however the context is spelled (context.py), directly, by membership subquery or through a helper
  function (inline.py); the result is a :class:`~dbguard_pipeline.policy.restriction.Level`
  (restriction.py, with the column scoping of scope.py);
* the spellings the rules warn about: unsafe casts of settings, per-row calls, ``user_metadata``
  (detectors.py).

Text that does not parse never raises: the analysis reports ``parsed=False`` and the rules treat it
conservatively (as not pinning the tenant). Anything else that goes wrong is a bug, and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.model.schema import Policy, Snapshot, Table
from dbguard_pipeline.policy import detectors
from dbguard_pipeline.policy.context import TenantContext
from dbguard_pipeline.policy.fold import NULL, Value
from dbguard_pipeline.policy.inline import Functions
from dbguard_pipeline.policy.normal import normalize
from dbguard_pipeline.policy.parse import Node, PolicyParseError, parse_expression, walk
from dbguard_pipeline.policy.restriction import Level, Restrictor, level_of, party_level
from dbguard_pipeline.policy.scope import Frame, Pass, Tables, top_scope
from dbguard_pipeline.semantics.roles import SUPABASE_BYPASS_JWT_ROLES, bypass_roles
from dbguard_pipeline.semantics.tenancy import party_columns
from dbguard_pipeline.semantics.tenancy import tenant_column as tenant_column_of

TENANT = Level.TENANT
Expression = Union[str, Node]  # policy text, or an expression node of parse.parse_expression

_DESCRIPTIONS = {
    Level.TENANT: "pins the tenant column to the tenant context",
    Level.INDIRECT: "restricts rows to the caller without comparing the tenant column with the tenant context",
    Level.NONE: "does not compare the tenant column with the tenant context",
}


@dataclass(frozen=True)
class ExprAnalysis:
    """Everything the rules need to know about one policy expression."""

    text: Optional[str]
    parsed: bool
    error: Optional[str] = None
    always_true: bool = False
    always_false: bool = False
    level: Level = Level.NONE
    unsafe_casts: tuple[str, ...] = ()
    per_row_calls: tuple[str, ...] = ()
    user_metadata: tuple[str, ...] = ()
    # two-party tables: the columns naming each tenant of a row, and those some branch pins (level TENANT:
    # every branch that can be true pins one of them)
    parties: tuple[str, ...] = ()
    sides: tuple[str, ...] = ()

    @property
    def pins_tenant(self) -> bool:
        return self.level in (Level.TENANT, Level.FALSE)

    @property
    def restricts(self) -> bool:
        return self.level != Level.NONE

    @property
    def missing_sides(self) -> tuple[str, ...]:
        """Party columns of a two-party table that no branch pins, when every branch pins one (the tenants
        they name cannot reach their rows through this expression)."""
        if not self.parties or self.level != Level.TENANT:
            return ()
        return tuple(c for c in self.parties if c not in self.sides)

    def describe(self) -> str:
        if not self.parsed:
            return f"could not be parsed ({self.error}); treated as not restricting rows"
        if self.always_true:
            return "is always true"
        if self.always_false:
            return "is never true"
        if self.parties:
            if self.level == Level.TENANT:
                return f"pins {' or '.join(self.sides)} to the tenant context"
            return f"does not pin {' or '.join(self.parties)} to the tenant context in every branch"
        return _DESCRIPTIONS[self.level]


class Analyzer:
    """Policy analysis bound to a snapshot (for function bodies and table columns) and a tenant model.

    Create one per audit and hold it: it memoizes its answers (per expression, and per table where the answer
    depends on the table) and which tables row level security isolates."""

    def __init__(
        self, snapshot: Optional[Snapshot] = None, config: Optional[Config] = None, tenant: Optional[TenantModel] = None
    ):
        self.snapshot = snapshot
        self.config = config or Config()
        self.tenant = tenant or self.config.tenant
        self.functions = Functions(snapshot, frozenset(self.config.exclude_schemas))
        self.tables = Tables(snapshot)
        self.context = TenantContext.of(self.tenant)
        self.rls_bypass = frozenset(bypass_roles(snapshot)) if snapshot is not None else frozenset()
        # role names a policy may compare the caller's role or JWT role claim with
        self.bypass = self.rls_bypass | frozenset(SUPABASE_BYPASS_JWT_ROLES)
        self._results: dict[tuple[Optional[str], ...], ExprAnalysis] = {}
        self._isolated: dict[str, bool] = {}
        self._parties: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ public API
    def analyze(
        self, text: Optional[str], *, table: Optional[Table] = None, tenant_column: Optional[str] = None
    ) -> ExprAnalysis:
        parties = self.parties(table) if table is not None and tenant_column is None else ()
        if parties:
            key = (text, table.qualified if table else None, None, *parties)
            hit = self._results.get(key)
            if hit is None:
                hit = self._results[key] = self._analyze(text, table, None, parties)[0]
            return hit
        generic = (text, tenant_column)
        hit = self._results.get(generic)
        if hit is not None:
            return hit
        key = (text, table.qualified if table else None, tenant_column)
        hit = self._results.get(key)
        if hit is not None:
            return hit
        result, used_table = self._analyze(text, table, tenant_column)
        # Most policies read the same whatever table they are on; share those results.
        self._results[key if used_table else generic] = result
        return result

    def analyze_policy(
        self, table: Table, policy: Policy, tenant_column: Optional[str]
    ) -> tuple[Optional[ExprAnalysis], Optional[ExprAnalysis]]:
        """(USING analysis or None, WITH CHECK analysis or None) of a policy of ``table``."""
        using = self.analyze(policy.using, table=table, tenant_column=tenant_column) if policy.using else None
        check = self.analyze(policy.with_check, table=table, tenant_column=tenant_column) if policy.with_check else None
        return using, check

    def parties(self, table: Table) -> tuple[str, ...]:
        """The party columns of a two-party table (``semantics.tenancy.party_columns``), () for any other.
        A table without a tenant column whose rows name two tenants is judged on them: a policy isolates it
        when every branch pins one party column to the tenant context."""
        key = table.qualified
        if key not in self._parties:
            self._parties[key] = party_columns(self.snapshot, table, self.config) if self.snapshot is not None else ()
        return self._parties[key]

    def fold(self, node: Node) -> Value:
        """The constant value of an expression (see fold.py)."""
        return self.walker().fold(normalize(node))

    def level(self, node: Node, table: Optional[Table], tenant_column: Optional[str]) -> Level:
        """How an expression node restricts the rows of ``table``."""
        return level_of(self.walker().restriction(normalize(node), Frame((top_scope(table),))), tenant_column)

    def walker(self, state: Optional[Pass] = None) -> Restrictor:
        """What analyses one expression (folding, context, restriction), with this audit's snapshot."""
        return Restrictor(self.functions, self.context, state or Pass(), self.tables, self.bypass, self.table_isolated)

    def table_isolated(self, table: Table) -> bool:
        """RLS is enabled and every permissive policy that lets rows be read restricts them to the caller
        (or a restrictive one does): reading the table shows only the caller's rows."""
        key = table.qualified
        if key in self._isolated:
            return self._isolated[key]
        self._isolated[key] = False  # while in progress (policies that read each other)
        result = False
        if table.rls_enabled and self.snapshot is not None:
            tcol = tenant_column_of(table, self.config)
            readers = [
                p
                for p in table.policies
                if p.command in ("select", "all") and ("public" in p.roles or not set(p.roles) <= self.rls_bypass)
            ]
            restrictive = [p for p in readers if not p.permissive and "public" in p.roles and p.using]
            if any(self.analyze(p.using, table=table, tenant_column=tcol).restricts for p in restrictive):
                result = True
            else:
                result = True
                for p in readers:
                    if not p.permissive or not p.using:
                        continue
                    a = self.analyze(p.using, table=table, tenant_column=tcol)
                    if not a.parsed or a.always_true or not a.restricts:
                        result = False
                        break
        self._isolated[key] = result
        return result

    # ------------------------------------------------------------------ one analysis
    def _analyze(
        self, text: Optional[str], table: Optional[Table], tenant_column: Optional[str], parties: tuple[str, ...] = ()
    ) -> tuple[ExprAnalysis, bool]:
        """The analysis, and whether it depended on ``table``."""
        if text is None:
            return ExprAnalysis(text=None, parsed=False, error="no expression"), False
        try:
            node = parse_expression(text)
        except PolicyParseError as exc:
            return ExprAnalysis(text=text, parsed=False, error=str(exc).splitlines()[0][:200]), False
        state = Pass(top_names=frozenset({table.name}) if table is not None else frozenset())
        walker = self.walker(state)
        try:
            # equivalent spellings are judged alike (normal.py); the detectors read the policy as written
            canonical = normalize(node)
            value = walker.fold(canonical)
            res = walker.restriction(canonical, Frame((top_scope(table),)))
            sides: tuple[str, ...] = ()
            if parties:
                level, sides = party_level(res, parties)
            else:
                level = level_of(res, tenant_column)
            nodes = list(walk(node))
            called = self.functions.called(node, nodes)
            never = value is False or value is NULL
            result = ExprAnalysis(
                text=text,
                parsed=True,
                always_true=value is True,
                always_false=never,
                level=Level.FALSE if never else (Level.NONE if value is True else level),
                unsafe_casts=tuple(detectors.unsafe_casts(nodes, called)),
                per_row_calls=tuple(detectors.per_row_calls(node)),
                user_metadata=tuple(detectors.user_metadata(nodes, called)),
                parties=parties,
                sides=sides,
            )
        except RecursionError:
            result = ExprAnalysis(text=text, parsed=False, error="expression nested too deeply")
        return result, state.used_table


# --------------------------------------------------------------------------- convenience functions
def _as_node(expr: Expression) -> Node:
    return parse_expression(expr) if isinstance(expr, str) else expr


def always_true(expr: Expression, snapshot: Optional[Snapshot] = None) -> bool:
    """True when the expression is true for every row (constant folding of trivial predicates).
    Unparsable text is not considered always true."""
    try:
        return Analyzer(snapshot).fold(_as_node(expr)) is True
    except PolicyParseError:
        return False


def pins_tenant(
    expr: Expression,
    tenant_column: str,
    tenant_model: Optional[TenantModel] = None,
    snapshot: Optional[Snapshot] = None,
    *,
    table: Optional[Table] = None,
) -> bool:
    """True when every branch of the expression that can be true compares ``tenant_column`` with the
    tenant context (or the expression is never true). Unparsable text does not pin."""
    an = Analyzer(snapshot, tenant=tenant_model or TenantModel())
    if isinstance(expr, str):
        return an.analyze(expr, table=table, tenant_column=tenant_column).pins_tenant
    return an.level(expr, table, tenant_column) in (Level.TENANT, Level.FALSE)


def unsafe_setting_casts(expr: Expression, snapshot: Optional[Snapshot] = None) -> list[str]:
    try:
        node = _as_node(expr)
    except PolicyParseError:
        return []
    return detectors.unsafe_casts(walk(node), Analyzer(snapshot).functions.called(node))


def per_row_calls(expr: Expression) -> list[str]:
    try:
        return detectors.per_row_calls(_as_node(expr))
    except PolicyParseError:
        return []


def user_metadata_references(expr: Expression, snapshot: Optional[Snapshot] = None) -> list[str]:
    try:
        node = _as_node(expr)
    except PolicyParseError:
        return []
    return detectors.user_metadata(walk(node), Analyzer(snapshot).functions.called(node))


def analyzer_for(snapshot: Snapshot, config: Config) -> Analyzer:
    """The Analyzer for one audit of ``snapshot`` under ``config``. Hold it for the whole audit so that every
    rule shares its answers (each call builds a new one: there is no module-level cache)."""
    return Analyzer(snapshot, config)
