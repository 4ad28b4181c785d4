"""Per-table data metrics: row counts, NULLs of the tenant column and of required columns, orphaned rows and
cross-tenant references.

Cost grows with the job, not with the catalog:

* one scan per table computes its row count and every NULL count it needs (``count(*) - count(col)``);
  small tables are grouped into one ``UNION ALL`` statement so that a thousand tiny tables do not cost a
  thousand round trips (a group that fails is retried table by table, so one bad table never hides the rest);
* one anti-join or join per reference checks orphans and cross-tenant rows (``Reference``): a foreign key
  that is NOT VALID, a tenant column without a foreign key to the tenants table, a ``<name>_id`` column
  without a foreign key whose parent can be inferred, and every foreign key between two tables that both
  carry the tenant column.

Every statement runs in its own READ ONLY transaction with statement and lock timeouts
(:func:`dbguard_pipeline.db.read_only_session`), so locks are held for one statement and a table that times
out or fails is reported as *not measured* with its reason, never as clean. ``row_security`` is off in
those transactions: when row level security would hide rows from the auditing role, PostgreSQL raises an
error instead of returning partial counts, and the table is reported as not measured. Tables whose estimated size is
above ``config.sample_row_limit`` are read with ``TABLESAMPLE SYSTEM (config.sample_percent) REPEATABLE (0)``;
their counts are scaled up and marked ``estimated``. No rows are loaded into Python: every query returns one
row of counts. Identifiers only ever go through :class:`psycopg.sql.Identifier`.

Longer than 500 lines on purpose: planning the one-pass queries and running them in batches belong together
(the batch sizes follow from the plans).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import ConnectionError_
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.pg.dsn import mask_secrets
from dbguard_pipeline.pg.session import connect, read_only_session
from dbguard_pipeline.progress import tick
from dbguard_pipeline.semantics.references import TableNames, column_type, compatible_types, infer_parent
from dbguard_pipeline.semantics.tenancy import audited_tables, has_tenant_column, is_tenants_table

# Small tables are measured together: at most this many tables, or this many estimated rows, per statement.
BATCH_TABLES = 40
BATCH_ROWS = 200_000

# row_security = off: a query that row level security would filter raises an error instead of silently
# counting only the rows the auditing role may see. Such a table is reported as not measured.
SESSION_SETTINGS = {"row_security": "off"}


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Reference:
    """A reference from rows of a table to rows of a parent table, checked with one (anti-)join.

    kind: ``foreign_key`` (validated: only the cross-tenant check applies), ``foreign_key_not_valid``,
    ``tenant_column`` (the tenant column has no foreign key to the tenants table) or ``inferred``
    (a ``<name>_id`` column without a foreign key whose parent table was found by name).
    """

    name: str  # key in TableMetrics.orphans / cross_tenant: the constraint name, else the column name(s)
    kind: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    check_orphans: bool
    check_tenant: bool
    tenant_column: Optional[str] = None  # the child's tenant column (cross-tenant check)
    ref_tenant_column: Optional[str] = None  # the parent's tenant column
    ref_only: bool = True  # the parent is a plain table: read it with ONLY (inheritance children excluded)

    @property
    def target(self) -> str:
        return f"{self.ref_schema}.{self.ref_table}({', '.join(self.ref_columns)})"

    @property
    def description(self) -> str:
        cols = ", ".join(self.columns)
        what = {
            "foreign_key": f"foreign key {self.name}",
            "foreign_key_not_valid": f"NOT VALID foreign key {self.name}",
            "tenant_column": "tenant column without a foreign key",
            "inferred": "column without a foreign key",
        }.get(self.kind, self.kind)
        return f"({cols}) -> {self.target}, {what}"


@dataclass(frozen=True)
class TableMetrics:
    schema: str
    table: str
    rows: Optional[int]  # None: not measured
    tenant_nulls: Optional[int]  # None: no tenant column, or not measured
    null_counts: dict = field(default_factory=dict)  # required column -> NULL count (None: not measured)
    orphans: dict = field(default_factory=dict)  # reference name -> orphaned rows (None: not measured)
    cross_tenant: dict = field(default_factory=dict)  # reference name -> rows whose parent has another tenant
    estimated: bool = False  # counts come from TABLESAMPLE, scaled up
    error: Optional[str] = None  # why (part of) the table was not measured
    tenant_column: Optional[str] = None
    references: tuple[Reference, ...] = ()
    sample_percent: Optional[float] = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def measured(self) -> bool:
        """True when every metric of the table was measured."""
        return self.error is None

    @property
    def with_tenant(self) -> Optional[int]:
        if self.rows is None or self.tenant_nulls is None:
            return None
        return self.rows - self.tenant_nulls

    @property
    def coverage_percent(self) -> Optional[float]:
        with_tenant = self.with_tenant
        if with_tenant is None or self.rows is None:  # with_tenant is None whenever rows is
            return None
        return 100.0 if self.rows == 0 else 100.0 * with_tenant / self.rows

    def reference(self, name: str) -> Optional[Reference]:
        for r in self.references:
            if r.name == name:
                return r
        return None


class Metrics(dict):
    """``"schema.table" -> TableMetrics``, plus the results of configured expectation suites
    (``expectations``, set by the audit when the config declares any) and problems that concern no single
    measured table (``problems``: ``("schema.table", reason)``)."""

    expectations: tuple = ()
    problems: tuple = ()

    def not_measured(self) -> list[tuple[str, str]]:
        out = [(m.qualified, m.error) for m in self.values() if m.error]
        out.extend(self.problems)
        out.extend(
            (r.table, f"expectation {r.type}: {r.error}") for r in self.expectations if getattr(r, "error", None)
        )
        return sorted(set(out))


# --------------------------------------------------------------------------- planning
def plan_references(
    snapshot: Snapshot, table: Table, config: Config, lookup: Optional[_Lookup] = None
) -> tuple[Reference, ...]:
    """The references of ``table`` that need a data check (see :class:`Reference`)."""
    lookup = lookup or _Lookup(snapshot)
    tcol = config.tenant.column
    child_tenant = has_tenant_column(table, config)
    refs: list[Reference] = []
    fk_columns: set[str] = set()
    for fk in table.foreign_keys:
        fk_columns.update(fk.columns)
        parent = lookup.table(f"{fk.ref_schema}.{fk.ref_table}")
        parent_tenant = parent is not None and has_tenant_column(parent, config)
        pins_tenant = any(c == tcol and r == tcol for c, r in zip(fk.columns, fk.ref_columns, strict=True))
        check_tenant = bool(
            child_tenant
            and parent_tenant
            and not pins_tenant
            and compatible_types(column_type(table, tcol), column_type(parent, tcol))
        )
        check_orphans = not fk.validated
        if not (check_orphans or check_tenant):
            continue
        refs.append(
            Reference(
                name=fk.name,
                kind="foreign_key" if fk.validated else "foreign_key_not_valid",
                columns=tuple(fk.columns),
                ref_schema=fk.ref_schema or "",
                ref_table=fk.ref_table or "",
                ref_columns=tuple(fk.ref_columns),
                check_orphans=check_orphans,
                check_tenant=check_tenant,
                tenant_column=tcol if check_tenant else None,
                ref_tenant_column=tcol if check_tenant else None,
                ref_only=parent is None or parent.kind == "table",
            )
        )
    # The tenant column without any foreign key: its values must still exist in the tenants table.
    tenants = lookup.table(config.tenant.tenants_qualified)
    if (
        child_tenant
        and tcol not in fk_columns
        and tenants is not None
        and tenants.column(config.tenant.tenants_key) is not None
        and compatible_types(column_type(table, tcol), column_type(tenants, config.tenant.tenants_key))
    ):
        refs.append(
            Reference(
                name=tcol,
                kind="tenant_column",
                columns=(tcol,),
                ref_schema=tenants.schema,
                ref_table=tenants.name,
                ref_columns=(config.tenant.tenants_key,),
                check_orphans=True,
                check_tenant=False,
                ref_only=tenants.kind == "table",
            )
        )
    # <name>_id columns without a foreign key, whose parent is found by name (semantics.references).
    if not is_tenants_table(table, config):
        for col in table.columns:
            name = col.name
            if not name.endswith("_id") or name == tcol or name in fk_columns or col.generated:
                continue
            found = infer_parent(snapshot, table, name, lookup.names)
            if found is None:
                continue
            parent, pk = found
            check_tenant = bool(
                child_tenant
                and has_tenant_column(parent, config)
                and compatible_types(column_type(table, tcol), column_type(parent, tcol))
            )
            refs.append(
                Reference(
                    name=name,
                    kind="inferred",
                    columns=(name,),
                    ref_schema=parent.schema,
                    ref_table=parent.name,
                    ref_columns=(pk,),
                    check_orphans=True,
                    check_tenant=check_tenant,
                    tenant_column=tcol if check_tenant else None,
                    ref_tenant_column=tcol if check_tenant else None,
                    ref_only=parent.kind == "table",
                )
            )
    return tuple(refs)


class _Lookup:
    """``snapshot.table(name)`` in O(1): planning a thousand tables must not cost a million comparisons."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.by_qualified = {t.qualified: t for t in snapshot.tables}
        self.names = TableNames(snapshot)
        self.by_name = self.names.by_name
        self.children: dict[str, list[Table]] = {}
        for t in snapshot.tables:
            if t.parent:
                self.children.setdefault(t.parent, []).append(t)

    def table(self, name: str) -> Optional[Table]:
        t = self.by_qualified.get(name)
        if t is not None:
            return t
        matches = self.by_name.get(name, [])
        return matches[0] if len(matches) == 1 else None


def estimated_rows(snapshot: Snapshot, table: Table, lookup: Optional[_Lookup] = None) -> int:
    """reltuples, summed over the partitions of a partitioned table; -1 when never analyzed."""
    if table.kind != "partitioned":
        return table.row_estimate
    children = (lookup or _Lookup(snapshot)).children.get(table.qualified, [])
    parts = [t.row_estimate for t in children]
    known = [p for p in parts if p >= 0]
    if not known:
        return -1
    # partitions of partitions: their rows are in their own partitions (leaf row estimates summed)
    return sum(known)


def required_columns_for(table: Table, config: Config) -> tuple[str, ...]:
    cols: list[str] = []
    for key, names in config.required_columns.items():
        if key == table.qualified or ("." not in key and key == table.name):
            cols.extend(n for n in names if n not in cols)
    return tuple(cols)


# --------------------------------------------------------------------------- SQL
def _from(schema: str, name: str, alias: str, only: bool, sample: Optional[float]) -> sql.Composed:
    q = sql.SQL("{only}{s}.{t} AS {a}").format(
        only=sql.SQL("ONLY " if only else ""), s=sql.Identifier(schema), t=sql.Identifier(name), a=sql.Identifier(alias)
    )
    if sample is not None:
        q = q + sql.SQL(" TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(sql.Literal(float(sample)))
    return q


def scan_query(table: Table, columns: Sequence[str], sample: Optional[float], index: int = 0) -> sql.Composed:
    """``SELECT <index>, count(*), ARRAY[count(*) - count(col), ...]::bigint[] FROM table``: one scan."""
    nulls = sql.SQL(", ").join(sql.SQL("count(*) - count(c.{})").format(sql.Identifier(c)) for c in columns)
    return sql.SQL("SELECT {i}::int, count(*)::bigint, ARRAY[{n}]::bigint[] FROM {f}").format(
        i=sql.Literal(index), n=nulls, f=_from(table.schema, table.name, "c", table.kind == "table", sample)
    )


def reference_query(table: Table, ref: Reference, sample: Optional[float], index: int = 0) -> sql.Composed:
    """One statement per reference, returning (index, orphans, cross_tenant); a count is NULL when not checked."""
    return sql.SQL("SELECT {i}::int, o, x FROM ({q}) AS r(o, x)").format(
        i=sql.Literal(index), q=_reference_counts(table, ref, sample)
    )


def _reference_counts(table: Table, ref: Reference, sample: Optional[float]) -> sql.Composed:
    child = _from(table.schema, table.name, "c", table.kind == "table", sample)
    parent = _from(ref.ref_schema, ref.ref_table, "p", ref.ref_only, None)
    cond = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
        for cc, pc in zip(ref.columns, ref.ref_columns, strict=True)
    )
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(cc)) for cc in ref.columns)
    if ref.check_orphans and ref.check_tenant:
        # plan_references sets both tenant columns whenever check_tenant is True
        assert ref.tenant_column is not None and ref.ref_tenant_column is not None
        return sql.SQL(
            "SELECT count(*) FILTER (WHERE p.{pk} IS NULL)::bigint,"
            " count(*) FILTER (WHERE p.{pt} <> c.{ct})::bigint"
            " FROM {child} LEFT JOIN {parent} ON {cond} WHERE {nn}"
        ).format(
            pk=sql.Identifier(ref.ref_columns[0]),
            pt=sql.Identifier(ref.ref_tenant_column),
            ct=sql.Identifier(ref.tenant_column),
            child=child,
            parent=parent,
            cond=cond,
            nn=not_null,
        )
    if ref.check_orphans:
        return sql.SQL(
            "SELECT count(*)::bigint, NULL::bigint FROM {child}"
            " WHERE {nn} AND NOT EXISTS (SELECT 1 FROM {parent} WHERE {cond})"
        ).format(child=child, parent=parent, cond=cond, nn=not_null)
    # only check_tenant is left (plan_references never builds a Reference that checks nothing): both are set
    assert ref.tenant_column is not None and ref.ref_tenant_column is not None
    return sql.SQL(
        "SELECT NULL::bigint, count(*)::bigint FROM {child} JOIN {parent} ON {cond} WHERE p.{pt} <> c.{ct}"
    ).format(
        child=child,
        parent=parent,
        cond=cond,
        pt=sql.Identifier(ref.ref_tenant_column),
        ct=sql.Identifier(ref.tenant_column),
    )


# --------------------------------------------------------------------------- running
def _reason(exc: psycopg.Error, config: Config, dsn: str) -> str:
    state = getattr(getattr(exc, "diag", None), "sqlstate", None) or ""
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    first = mask_secrets(first, dsn)
    if state == "57014":
        return f"statement timeout ({config.statement_timeout_ms} ms)"
    if state == "55P03":
        return f"lock timeout ({config.lock_timeout_ms} ms): another session holds a conflicting lock"
    if state == "42501" and "row-level security" in first:
        return (
            "row level security would hide rows from this role: audit as the table owner, a superuser or a "
            "role with BYPASSRLS"
        )
    if state == "42501":
        return f"permission denied: {first}"
    return first


class _Runner:
    """Runs one statement per READ ONLY transaction on one connection; database errors are returned,
    a lost connection raises."""

    def __init__(self, dsn: str, config: Config):
        self.dsn = dsn
        self.config = config
        self.conn = connect(dsn)
        self.settings = dict(SESSION_SETTINGS)
        workers = getattr(config, "parallel_workers", None)
        if workers is not None:  # transaction-local, like every other setting of the audit
            self.settings["max_parallel_workers_per_gather"] = str(int(workers))

    def close(self) -> None:
        self.conn.close()

    def fetch(self, query) -> tuple[Optional[list[tuple]], Optional[str]]:
        try:
            with read_only_session(
                self.conn,
                statement_timeout_ms=self.config.statement_timeout_ms,
                lock_timeout_ms=self.config.lock_timeout_ms,
                settings=self.settings,
            ) as conn:
                try:
                    return conn.execute(query).fetchall(), None
                except psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        raise
                    return None, _reason(exc, self.config, self.dsn)
        except psycopg.Error as exc:  # the connection itself failed
            raise ConnectionError_(
                f"lost the connection to the database: {_reason(exc, self.config, self.dsn)}"
            ) from None


@dataclass
class _Plan:
    table: Table
    tenant_column: Optional[str]
    columns: tuple[str, ...]  # columns whose NULLs the scan counts (tenant column first)
    required: tuple[str, ...]
    missing: tuple[str, ...]  # required columns that do not exist
    references: tuple[Reference, ...]
    sample: Optional[float]
    estimate: int


def _plans(snapshot: Snapshot, config: Config, tables: Optional[Iterable]) -> list[_Plan]:
    candidates = audited_tables(snapshot, config)
    if tables is not None:
        wanted = {t.qualified if isinstance(t, Table) else str(t) for t in tables}
        candidates = [t for t in candidates if t.qualified in wanted or t.name in wanted]
    lookup = _Lookup(snapshot)
    plans = []
    for t in candidates:
        tcol = config.tenant.column if has_tenant_column(t, config) else None
        required = required_columns_for(t, config)
        present = tuple(c for c in required if t.column(c) is not None)
        missing = tuple(c for c in required if t.column(c) is None)
        cols = ((tcol,) if tcol else ()) + tuple(c for c in present if c != tcol)
        est = estimated_rows(snapshot, t, lookup)
        sample = config.sample_percent if est > config.sample_row_limit and config.sample_percent < 100 else None
        plans.append(_Plan(t, tcol, cols, present, missing, plan_references(snapshot, t, config, lookup), sample, est))
    return plans


def _batches(units: list[tuple[bool, int]]) -> list[list[int]]:
    """Group units (small?, estimated rows) for one UNION ALL statement each; large, sampled or never-analyzed
    tables go alone."""
    out: list[list[int]] = []
    cur: list[int] = []
    cur_rows = 0
    for i, (small, est) in enumerate(units):
        if not small:
            out.append([i])
            continue
        if cur and (len(cur) >= BATCH_TABLES or cur_rows + est > BATCH_ROWS):
            out.append(cur)
            cur, cur_rows = [], 0
        cur.append(i)
        cur_rows += est
    if cur:
        out.append(cur)
    return out


def _run_units(
    runner: _Runner, queries: list, sizes: list[tuple[bool, int]], label: str = "units"
) -> list[tuple[Optional[tuple], Optional[str]]]:
    """Run ``queries[i](i)`` (each returns one row starting with i), grouped by :func:`_batches`; a group that
    fails is retried unit by unit so that one failing table never hides the others. Progress is ticked as
    ``label`` after each group."""
    results: list[tuple[Optional[tuple], Optional[str]]] = [(None, "not measured")] * len(queries)

    def run_batch(batch: list[int]) -> None:
        rows, err = runner.fetch(sql.SQL(" UNION ALL ").join(queries[i](i) for i in batch))
        if err is None:
            assert rows is not None  # fetch returns rows exactly when it returns no error
            for row in rows:
                results[row[0]] = (tuple(row[1:]), None)
            return
        if len(batch) == 1:
            results[batch[0]] = (None, err)
            return
        for i in batch:
            rows, err = runner.fetch(queries[i](i))
            if err is None:
                assert rows is not None  # fetch returns rows exactly when it returns no error
                results[i] = (tuple(rows[0][1:]), None)
            else:
                results[i] = (None, err)

    done = 0
    if queries:
        tick(label, 0, len(queries))
    for batch in _batches(sizes):
        run_batch(batch)
        done += len(batch)
        tick(label, done, len(queries))
    return results


def _scale(value: Optional[int], sample: Optional[float]) -> Optional[int]:
    if value is None or sample is None:
        return value
    return int(round(value * 100.0 / sample))


def collect_metrics(dsn: str, snapshot: Snapshot, config: Config, tables: Optional[Iterable] = None) -> Metrics:
    """Measure the audited tables of ``snapshot`` (or only ``tables``: names "schema.table" or Table objects).

    Returns :class:`Metrics` keyed by "schema.table". A table that could not be (fully) measured carries
    ``error``; its unmeasured values are None, never 0.
    """
    plans = _plans(snapshot, config, tables)
    runner = _Runner(dsn, config)
    try:
        # one scan per table
        scans = _run_units(
            runner,
            [lambda i, p=p: scan_query(p.table, p.columns, p.sample, i) for p in plans],
            [(p.sample is None and 0 <= p.estimate < BATCH_ROWS, max(p.estimate, 0)) for p in plans],
            "data metrics: tables",
        )
        # one (anti-)join per reference, skipped for tables found empty
        empty = [scan is not None and scan[0] == 0 for scan, _ in scans]
        ref_units = [(pi, ref) for pi, p in enumerate(plans) for ref in p.references if not empty[pi]]
        refs = _run_units(
            runner,
            [lambda i, p=plans[pi], ref=ref: reference_query(p.table, ref, p.sample, i) for pi, ref in ref_units],
            [
                (plans[pi].sample is None and 0 <= plans[pi].estimate < BATCH_ROWS, max(plans[pi].estimate, 0))
                for pi, _ in ref_units
            ],
            "data metrics: references",
        )
    finally:
        runner.close()
    ref_results = {(pi, ref.name): res for (pi, ref), res in zip(ref_units, refs, strict=True)}

    out = Metrics()
    for i, p in enumerate(plans):
        result, err = scans[i]
        errors = [err] if err else []
        errors.extend(f"required column {c!r} does not exist" for c in p.missing)
        rows = tenant_nulls = None
        null_counts: dict[str, Optional[int]] = {c: None for c in p.required}
        if result is not None:
            count, nulls = result
            nulls = list(nulls or [])
            rows = _scale(count, p.sample)
            by_col = dict(zip(p.columns, nulls, strict=False))  # no NULL counts when not measured
            if p.tenant_column:
                tenant_nulls = _scale(by_col.get(p.tenant_column), p.sample)
            null_counts = {c: _scale(by_col.get(c), p.sample) for c in p.required}
        orphans: dict[str, Optional[int]] = {}
        cross: dict[str, Optional[int]] = {}
        for ref in p.references:
            res, ref_err = ref_results.get((i, ref.name), ((0, 0), None))  # absent: the table is empty
            o, x = res if res is not None else (None, None)
            if ref_err:
                errors.append(f"reference {ref.name}: {ref_err}")
            if ref.check_orphans:
                orphans[ref.name] = _scale(o, p.sample)
            if ref.check_tenant:
                cross[ref.name] = _scale(x, p.sample)
        out[p.table.qualified] = TableMetrics(
            schema=p.table.schema,
            table=p.table.name,
            rows=rows,
            tenant_nulls=tenant_nulls,
            null_counts=null_counts,
            orphans=orphans,
            cross_tenant=cross,
            estimated=p.sample is not None,
            error="; ".join(errors) if errors else None,
            tenant_column=p.tenant_column,
            references=p.references,
            sample_percent=p.sample,
        )
    missing_tables = []
    for key in config.required_columns:
        if snapshot.table(key) is None:
            missing_tables.append((key, "table named in required_columns does not exist"))
    out.problems = tuple(missing_tables)
    return out
