"""The isolation probe: prove tenant isolation by trying to break it, inside transactions that are rolled back.

For every tenant table (a table with the tenant column, or one that reaches such a table through foreign
keys) the probe acts as the application's role with tenant A's context and tries, on tenant B's rows:

- select_without_context (select): with no tenant context at all, is anything visible?
- select_other_tenant (select): SELECT tenant B's rows
- insert_for_other_tenant (insert): INSERT a valid new row that belongs to tenant B
- update_other_tenant (update): UPDATE B's rows, filtered to them (PostgreSQL also applies SELECT policies)
- update_other_tenant_blind (update): the same with no WHERE and constants only: nothing is read, so only
  the UPDATE policies apply
- move_row_to_other_tenant[_blind] (update): UPDATE one of A's rows so that it belongs to tenant B
- delete_other_tenant[_blind] (delete): DELETE B's rows, filtered to them, and with no WHERE

Views in the audited schemas that read tenant tables get the two SELECT probes (a view that runs with its
owner's rights shows every tenant's rows).

How it stays harmless: one transaction per table, a savepoint per probe, everything rolled back; statement,
lock and idle timeouts on every transaction; test rows are built inside the transaction; sequences are never
advanced (identity and serial columns get explicit values, OVERRIDING SYSTEM VALUE where needed), because
nextval() survives a rollback. The effect of each write is measured as the connecting (superuser) role
inside the same savepoint, by looking for the targeted rows by their physical address (ctid): a row that
was updated or deleted is no longer visible there.

A leak comes with its witness ("as authenticated with tenant A, SELECT on public.vehicles returned 8 rows
of tenant B"). A probe that cannot be run says why ("not probed: ...") and is never counted as isolated.

This module plans the targets and runs the phases of :mod:`.probes` on each; the connection is
:mod:`.session`, the rows :mod:`.rows`, the findings :mod:`.report`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Optional

import psycopg

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import ConnectionError_, DbguardError, NotFoundError
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.pg.dsn import describe_dsn, mask_secrets
from dbguard_pipeline.pg.session import connect
from dbguard_pipeline.probe.identity import check_context
from dbguard_pipeline.probe.phases import TABLE_PHASES, VIEW_PHASES, Phase
from dbguard_pipeline.probe.probes import Probe, Relation, SkipAll, Verdict, not_probed
from dbguard_pipeline.probe.report import NotProbed, ProbeReport, ProbeResult, Target
from dbguard_pipeline.probe.rows import Rows, RowTenancy
from dbguard_pipeline.probe.session import Session, error_message
from dbguard_pipeline.probe.tenants import for_table, pick_tenants
from dbguard_pipeline.probe.traces import advisory_locks_released, moved_sequences, sequence_values
from dbguard_pipeline.progress import tick
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.semantics.roles import owner_escape
from dbguard_pipeline.text import qname

__all__ = ["DEFAULT_SAMPLE_ROWS", "plan_targets", "probe"]

DEFAULT_SAMPLE_ROWS = 1000


def _effective(snapshot: Snapshot, table: Table) -> Table:
    """A partition as the probe builds its rows: with the keys and foreign keys of its partitioned ancestors
    (the snapshot keeps a constraint once, on the table it was declared on)."""
    own = list(table.constraints)
    current = table
    while current.parent:
        parent = snapshot.table(current.parent)
        if parent is None or parent.kind != "partitioned":
            break  # an inheritance child: keys and foreign keys are not inherited
        for c in parent.constraints:
            if c.kind in ("primary_key", "unique", "foreign_key") and not any(
                o.kind == c.kind and o.columns == c.columns for o in own
            ):
                own.append(c)
        current = parent
    return replace(table, constraints=tuple(own)) if len(own) != len(table.constraints) else table


def probe_tables(snapshot: Snapshot, config: Config) -> list[Table]:
    """The tenant tables (``tenancy.tenant_tables``) and, after each, every partition and inheritance child of
    it: PostgreSQL applies a partition's own row level security when a query names it directly, so each is
    probed as a relation of its own."""
    chosen: dict[str, Table] = {}
    for t in snapshot.tables:
        if not tenancy.in_audited_schema(t.schema, config):
            continue
        eff = _effective(snapshot, t)
        is_partition = t.kind == "partition" or (t.parent and t.kind == "partitioned")
        if is_partition and tenancy.is_tenant_table(snapshot, eff, config):
            chosen[t.qualified] = eff
    for t in tenancy.tenant_tables(snapshot, config):
        chosen.setdefault(t.qualified, t)
    children: dict[Optional[str], list[Table]] = {}
    for t in chosen.values():
        parent = t.parent if t.parent in chosen else None
        children.setdefault(parent, []).append(t)
    order: list[Table] = []

    def add(t: Table) -> None:
        order.append(t)
        for c in children.get(t.qualified, []):
            add(c)

    for t in children.get(None, []):
        add(t)
    return order


def plan_targets(snapshot: Snapshot, config: Config, tables: Optional[Sequence[str]] = None) -> list[Target]:
    """The relations the probe covers: tenant tables with their partitions and inheritance children
    (:func:`probe_tables`) and the views of the audited schemas that read one. ``tables`` narrows it
    ("schema.table" or an unambiguous bare name); an unknown name, or a table that holds no tenant data, is a
    one-line error."""
    tenant = probe_tables(snapshot, config)
    targets = [Target(t.schema, t.name, "table", table=t) for t in tenant]
    tenant_names = {t.qualified for t in tenant}
    for v in snapshot.views:
        if tenancy.in_audited_schema(v.schema, config) and any(d in tenant_names for d in v.depends_on):
            targets.append(Target(v.schema, v.name, "materialized view" if v.materialized else "view", view=v))
    if not tables:
        return targets
    chosen: list[Target] = []
    for name in tables:
        exact = [t for t in targets if t.qualified == name]
        bare = [t for t in targets if t.name == name]
        match = exact or (bare if len(bare) == 1 else [])
        if not match:
            if len(bare) > 1:
                raise NotFoundError(
                    f"table name {name!r} is ambiguous: use one of " + ", ".join(t.qualified for t in bare)
                )
            known = snapshot.table(name)
            if known is not None and tenancy.is_tenants_table(known, config):
                raise NotFoundError(
                    f"{qname(known.schema, known.name)} is the tenants table itself (the root of the tenant model), "
                    f"not tenant data: nothing to probe"
                )
            if known is not None:
                raise NotFoundError(
                    f"{qname(known.schema, known.name)} holds no tenant data (no {config.tenant.column} column and no "
                    f"foreign-key path to a table that has one): nothing to probe"
                )
            raise NotFoundError(f"table not found in {snapshot.database}: {name}")
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


class _RelationRun:
    """The probes of one relation, in one transaction that is rolled back."""

    def __init__(self, rel: Relation):
        self.rel = rel
        self.results: list[ProbeResult] = []
        self.not_probed: list[NotProbed] = []
        self.warnings: list[str] = []

    def run(self) -> None:
        rel, conn = self.rel, self.rel.session.conn
        phases = TABLE_PHASES if rel.target.kind == "table" else VIEW_PHASES
        try:
            with conn.transaction(force_rollback=True):
                rel.session.timeouts()
                if rel.target.table is not None:  # another tenant's rows stand in for a tenant without rows
                    tenants = for_table(conn, rel.rows.row_tenancy, rel.tenants, rel.table)
                    rel = self.rel = replace(rel, tenants=tenants)
                # constraints and constraint triggers deferred to COMMIT are checked at each statement: the
                # probe never commits, so a deferred check would never run and its refusal never be seen
                conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
                fixture: object = None
                for prepare, probes in phases:
                    fixture = prepare(rel, fixture)
                    for p in probes:
                        verdict = self.run_probe(p, fixture)
                        if verdict is not None:
                            self.record(p.name, p.command, verdict)
        except SkipAll as exc:
            self.skip_rest(phases, str(exc))
        except psycopg.Error as exc:
            if conn.broken:
                raise
            self.skip_rest(phases, f"the probe transaction failed: {error_message(exc)}")

    def run_probe(self, p: Probe, fixture: object) -> Optional[Verdict]:
        plan = p.plan(self.rel, fixture)
        if plan is None:
            return None  # the probe does not apply to this relation
        if isinstance(plan, str):
            return not_probed(plan)
        session = self.rel.session
        out = session.attempt(plan.tenant, plan.statement, plan.measure, before=plan.before)
        again = p.retry(self.rel, fixture, plan, out)
        if isinstance(again, Verdict):
            return again
        if again is not None:
            plan, out = again, session.attempt(again.tenant, again.statement, again.measure, before=again.before)
        return p.judge(self.rel, fixture, plan, out)

    def record(self, name: str, command: str, verdict: Verdict) -> None:
        target = self.rel.target
        if verdict.warning:
            self.warnings.append(verdict.warning)
        if verdict.isolated is None:
            self.not_probed.append(NotProbed(target.schema, target.name, command, name, verdict.text, verdict.state))
            return
        detail = verdict.text if verdict.isolated else verdict.text + self.leak_note()
        self.results.append(
            ProbeResult(
                target.schema, target.name, command, name, verdict.isolated, detail, verdict.shape, verdict.rows
            )
        )

    def leak_note(self) -> str:
        """Why a table leaks when no policy could be at fault."""
        t, role = self.rel.target.table, self.rel.session.role
        if t is not None and t.kind == "partition" and not t.rls_enabled:
            return (
                " (row level security is disabled on this partition: PostgreSQL applies the partition's own "
                "row level security when a query names it, not its parent's)"
            )
        if t is not None and t.rls_enabled and not t.rls_forced:
            escape = owner_escape(self.rel.rows.snapshot, t, self.rel.session.config)
            if escape is not None and escape.app_bypasses:
                return f" ({escape.reason} and row level security is not forced, so no policy applies to {role})"
        if t is not None and not t.rls_enabled:
            return " (row level security is disabled on this table)"
        return ""

    def skip_rest(self, phases: Sequence[Phase], reason: str) -> None:
        """Every probe that has not run yet is not probed, for ``reason``."""
        done = {r.probe for r in self.results} | {n.probe for n in self.not_probed}
        for _, probes in phases:
            for p in probes:
                if p.name not in done and p.name != "join_other_tenant":
                    self.record(p.name, p.command, not_probed(reason))


def probe(
    dsn: str,
    config: Optional[Config] = None,
    tables: Optional[Sequence[str]] = None,
    *,
    snapshot: Optional[Snapshot] = None,
    tenants: Optional[Sequence[str]] = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    test_rows: Optional[bool] = None,
) -> ProbeReport:
    """Probe tenant isolation of every tenant table (or ``tables``) of the database at ``dsn``.

    Connect as a superuser or BYPASSRLS role (the probe builds rows and counts tenant B's rows); the probes
    themselves run as ``config.tenant.app_role``, which must be neither. Nothing is ever committed.
    ``tenants`` = (A, B) overrides the deterministic choice (the first two keys of the tenants table).
    ``test_rows`` (default: ``config.probe_test_rows``): False, nothing is ever inserted, not even rolled back.
    """
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.policy import analyzer_for

    config = config or Config()
    started = time.perf_counter()
    conn = connect(dsn, autocommit=True, application_name="dbguard test-isolation")
    try:
        if snapshot is None:
            snapshot = introspect(
                conn, None, statement_timeout_ms=config.statement_timeout_ms, lock_timeout_ms=config.lock_timeout_ms
            )
        missing = [s for s in config.schemas if s not in snapshot.schemas]
        if missing:  # probing a schema that is not there would report 0 relations and pass
            raise NotFoundError(f"schema not found in {snapshot.database}: {', '.join(missing)}")
        check_context(snapshot, config)
        targets = plan_targets(snapshot, config, tables)
        session = Session(conn, config, snapshot.database)
        session.analyzer = analyzer_for(snapshot, config)
        row_tenancy = RowTenancy(snapshot, config)
        with conn.transaction(force_rollback=True):  # read only, with the same timeouts as the probes
            conn.execute("SET TRANSACTION READ ONLY")
            session.timeouts()
            session.preflight()
            chosen = pick_tenants(conn, row_tenancy, tenants, targets)
        session.jwt_sub = chosen.user_a
        rows = Rows(
            session,
            snapshot,
            row_tenancy,
            sample=max(1, int(sample_rows)),
            test_rows=config.probe_test_rows if test_rows is None else test_rows,
        )
        report = ProbeReport(
            database=describe_dsn(dsn), app_role=config.tenant.app_role, tenant_context=chosen.context(config)
        )
        report.snapshot = snapshot
        sequences = sequence_values(conn, config)
        warnings: list[str] = []
        tick("probes: tables", 0, len(targets))
        for done, target in enumerate(targets, 1):
            t0 = time.perf_counter()
            run = _RelationRun(Relation(session, rows, chosen, target))
            run.run()
            held_locks = advisory_locks_released(conn)
            if held_locks:
                report.advisory_locks[target.qualified] = held_locks
            report.results.extend(run.results)
            report.not_probed.extend(run.not_probed)
            warnings.extend(run.warnings)
            report.tables.append(target.qualified)
            report.kinds[target.qualified] = target.kind
            report.table_seconds[target.qualified] = time.perf_counter() - t0
            tick("probes: tables", done, len(targets))
        report.test_rows = rows.grown()
        grew = {q: n for q, n in report.test_rows.items() if n > 0}
        if grew:
            warnings.append(
                "the probe's test rows (rolled back) left "
                + ", ".join(f"{q} {n:,} bytes larger" for q, n in grew.items())
                + ": a rolled-back row keeps the page it added to a table whose last page was full "
                "(--no-test-rows, or probe_test_rows: false, inserts none)"
            )
        report.sequences = moved_sequences(sequences, sequence_values(conn, config))
        report.warnings = list(dict.fromkeys(warnings))
        report.seconds = time.perf_counter() - started
        return report
    except psycopg.Error as exc:
        msg = mask_secrets(error_message(exc), dsn)
        if conn.broken or conn.closed:
            raise ConnectionError_(f"lost the connection to {describe_dsn(dsn)}: {msg}") from None
        raise DbguardError(f"isolation probe failed on {describe_dsn(dsn)}: {msg}") from None
    finally:
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
                conn.rollback()
        finally:
            conn.close()
