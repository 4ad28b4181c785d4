"""The per-audit context every rule receives: the snapshot, the metrics (None for a static audit), the
config, and the facts several rules ask for, computed once per audit and kept here (audited tables, tenant
tables and paths, bypass roles, the policy analyzer with its parse caches).

One context lives exactly as long as one :func:`dbguard_pipeline.rules.run_rules` call; nothing is cached at
module level, so two audits (or two snapshots of the same database) never share an answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Optional, TypeVar, cast

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Policy, Snapshot, Table
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.roles import API_ROLES, RoleGraph, bypass_roles, policy_is_moot

if TYPE_CHECKING:
    from dbguard_pipeline.policy import Analyzer, ExprAnalysis

T = TypeVar("T")


class RuleContext:
    def __init__(self, snapshot: Snapshot, metrics: Optional[Mapping[str, Any]], config: Config):
        self.snapshot = snapshot
        self.metrics = metrics
        self.config = config
        self._memo: dict[tuple[str, str], Any] = {}
        self._tenant_columns: dict[str, Optional[str]] = {}

    def memo(self, kind: str, key: str, compute: Callable[[], T]) -> T:
        """The per-audit answer to (kind, key), computed on first use."""
        slot = (kind, key)
        if slot not in self._memo:
            self._memo[slot] = compute()
        return cast(T, self._memo[slot])

    # ------------------------------------------------------------------ the tenant model
    @cached_property
    def audited_tables(self) -> tuple[Table, ...]:
        return tuple(tenancy.audited_tables(self.snapshot, self.config))

    @cached_property
    def tenant_scope_tables(self) -> tuple[Table, ...]:
        """Audited tables whose rows belong to tenants: tenant tables and the tenants table itself."""
        return tuple(t for t in self.audited_tables if self.in_tenant_scope(t))

    @cached_property
    def reachable_partitions(self) -> tuple[Table, ...]:
        """Partitions (every level, default ones too) the application can query by name: the app role (or
        an API role, or PUBLIC) has a privilege on them, as ``GRANT ... ON ALL TABLES IN SCHEMA`` gives.
        Such a query gets the partition's own row level security, not its parent's."""
        who = (self.config.tenant.app_role, *API_ROLES)
        return tuple(
            t for t in tenancy.partitions(self.snapshot, self.config) if any(self.roles.reaches(r, t) for r in who)
        )

    @cached_property
    def rls_tables(self) -> tuple[Table, ...]:
        """What the row level security rules look at: the audited tables and the reachable partitions (each a
        table of its own for RLS; every other rule sees a partitioned table once, through its root)."""
        extra = {t.qualified for t in self.reachable_partitions}
        return tuple(t for t in self.snapshot.tables if t.qualified in extra or t.qualified in self._audited_names)

    @cached_property
    def rls_scope_tables(self) -> tuple[Table, ...]:
        """``rls_tables`` whose rows belong to tenants (a partition belongs where its root does)."""
        return tuple(t for t in self.rls_tables if self.in_tenant_scope(t))

    @cached_property
    def _audited_names(self) -> frozenset[str]:
        return frozenset(t.qualified for t in self.audited_tables)

    def root(self, table: Table) -> Table:
        """A partition's root partitioned table; any other table itself."""
        return tenancy.partition_root(self.snapshot, table) if tenancy.is_partition(table) else table

    def tenant_path(self, table: Table) -> Optional[list[tenancy.FkStep]]:
        table = self.root(table)  # a partition's foreign keys are its root's
        return self.memo("tenant_path", table.qualified, lambda: tenancy.tenant_path(self.snapshot, table, self.config))

    def is_tenant_table(self, table: Table) -> bool:
        return not self.is_tenants_table(table) and (
            self.tenant_path(table) is not None or bool(self.party_columns(table))
        )

    def in_tenant_scope(self, table: Table) -> bool:
        return self.is_tenants_table(table) or self.is_tenant_table(table)

    def is_tenants_table(self, table: Table) -> bool:
        return tenancy.is_tenants_table(self.root(table), self.config)

    def tenant_column(self, table: Table) -> Optional[str]:
        key = table.qualified
        if key not in self._tenant_columns:
            self._tenant_columns[key] = tenancy.tenant_column(table, self.config)
        return self._tenant_columns[key]

    def party_columns(self, table: Table) -> tuple[str, ...]:
        """The columns naming each tenant of a two-party table, () for any other (``tenancy.party_columns``,
        kept by the analyzer once there is one: a database without policies never loads the policy parser)."""
        if "analyzer" in self.__dict__:
            return self.analyzer.parties(table)
        return tenancy.party_columns(self.snapshot, table, self.config)

    def has_tenant_column(self, table: Table) -> bool:
        return self.tenant_column(table) is not None and not self.is_tenants_table(table)

    # ------------------------------------------------------------------ roles and policies
    @cached_property
    def roles(self) -> RoleGraph:
        """Role membership, ownership and privileges of this snapshot."""
        return RoleGraph(self.snapshot)

    @cached_property
    def bypass_roles(self) -> frozenset[str]:
        return frozenset(bypass_roles(self.snapshot))

    def policy_is_moot(self, policy: Policy) -> bool:
        """Every role the policy applies to bypasses RLS anyway (e.g. ``TO service_role``)."""
        return policy_is_moot(policy, self.snapshot)

    @cached_property
    def analyzer(self) -> Analyzer:
        """The policy analyzer of this audit: each expression is parsed and judged once."""
        from dbguard_pipeline.policy import Analyzer  # pglast: loaded with the first policy analysed

        return Analyzer(self.snapshot, self.config)

    def policy_analyses(self, table: Table, policy: Policy) -> tuple[Optional[ExprAnalysis], Optional[ExprAnalysis]]:
        """(USING, WITH CHECK) analyses of a policy of ``table``, None where the policy has no such expression."""
        return self.analyzer.analyze_policy(table, policy, self.tenant_column(table))
