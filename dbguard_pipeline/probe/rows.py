"""Rows for the probes: how a row of a table names its tenant, rows addressed by physical address (ctid), valid new
rows of a tenant built inside the current transaction (parent rows found or built along the foreign keys, identity
and serial columns given explicit values: ``nextval()`` survives a rollback, so no sequence is ever advanced), and
the SQL that says which tenant a row belongs to.

Longer than 500 lines on purpose: building a valid row walks foreign keys recursively (parents found or
built, keys given explicit values) and that walk is one algorithm.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import psycopg
from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.model.schema import Column, Constraint, Snapshot, Table
from dbguard_pipeline.probe.session import Query, Session, error_message
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.text import qname

RowRef = tuple[str, str]  # (tableoid, ctid) of one row version

_INT_TYPES = {"smallint", "integer", "bigint", "int", "int2", "int4", "int8"}
NUM_TYPES = _INT_TYPES | {"numeric", "decimal", "real", "double precision"}
_TEXT_TYPES = {"text", "character varying", "varchar", "character", "char", "citext", "name", "bpchar"}
_FIXED_VALUES = {
    "boolean": "false",
    "json": "{}",
    "jsonb": "{}",
    "date": "2000-01-01",
    "time without time zone": "00:00",
    "time with time zone": "00:00+00",
    "interval": "0",
    "bytea": "\\x",
    "inet": "127.0.0.1",
    "cidr": "127.0.0.1/32",
    "timestamp without time zone": "2000-01-01 00:00:00",
    "timestamp with time zone": "2000-01-01 00:00:00+00",
}


# why a probe that needs a row inserted did not run (``Rows.test_rows`` off)
NO_TEST_ROWS = "test rows are off (probe_test_rows: false, or --no-test-rows), so nothing may be inserted"

# unique, exclusion and foreign-key violations: raised after row level security admitted the row
AFTER_POLICY_STATES = ("23505", "23P01", "23503")


@dataclass(frozen=True)
class Candidate:
    """An INSERT of a new row (None when none could be built: ``why``), its values, and the constraint error
    the connecting role met when it tried it (``conflict``: the row exists already, or its key does).

    ``check`` is set on a candidate not yet proven valid (the probe that sets a NOT NULL column to NULL needs no
    proof, and the proof inserts a row, which may extend the table): :meth:`checked` proves it, once."""

    stmt: Optional[Query]
    values: dict[str, Query]
    why: str
    conflict: str = ""
    check: Optional[Callable[[], Candidate]] = field(default=None, compare=False, repr=False)
    _proof: dict[str, Candidate] = field(default_factory=dict, compare=False, repr=False)

    def checked(self) -> Candidate:
        """This candidate proven valid (inserted as the connecting role and rolled back), or why it is not."""
        if self.check is None:
            return self
        if "proof" not in self._proof:
            self._proof["proof"] = self.check()
        return self._proof["proof"]

    @property
    def known(self) -> Candidate:
        """The proven candidate when it has been proven, else this one (never inserts anything)."""
        return self._proof.get("proof", self)


class CannotBuild(Exception):
    """A test row could not be built; the message says why (it becomes a "not probed" reason)."""


def lit(value: Optional[str], type_: str) -> Query:
    """``'value'::type`` (NULL for None)."""
    if value is None:
        return sql.SQL("NULL")
    return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(type_))


def base_type(type_: str) -> tuple[str, Optional[int]]:
    """``character varying(40)`` -> (``character varying``, 40)."""
    m = re.match(r"^(.*?)\((\d+)(?:,\s*\d+)?\)(.*)$", type_)
    if m:
        return (m.group(1) + m.group(3)).strip().lower(), int(m.group(2))
    return type_.strip().lower(), None


def table_id(table: Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name)


def column(table: Table, name: str) -> Column:
    """A column the snapshot says ``table`` has."""
    col = table.column(name)
    assert col is not None, f"{qname(table.schema, table.name)} has no column {name}"
    return col


def _as_text(columns: Sequence[str], alias: str = "t") -> Query:
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, c)) for c in columns)


# --------------------------------------------------------------------------- a row's tenant
@dataclass(frozen=True)
class TenantInfo:
    direct_column: Optional[str]  # the tenant column when the table has it (or the tenants key)
    path: tuple[tenancy.FkStep, ...]  # the foreign-key chain to a table that has it, when it does not
    type: str  # SQL type of the tenant value as this table sees it
    # a two-party table: the columns naming each tenant of a row (a row "of tenant X" names X in every one:
    # tenant A must not reach it, nor insert it, nor move its own rows there)
    parties: tuple[str, ...] = ()

    @property
    def assign_columns(self) -> tuple[str, ...]:
        """The columns whose values decide the row's tenant (what a "move" rewrites)."""
        if self.parties:
            return self.parties
        if self.direct_column:
            return (self.direct_column,)
        return tuple(self.path[0].constraint.columns)


class RowTenancy:
    """How a row of each table names its tenant (``semantics.tenancy`` applied), as SQL."""

    def __init__(self, snapshot: Snapshot, config: Config):
        self.snapshot = snapshot
        self.config = config
        self._cache: dict[str, Optional[TenantInfo]] = {}

    def info(self, table: Table) -> Optional[TenantInfo]:
        """None when ``table`` holds no tenant data."""
        if table.qualified not in self._cache:
            self._cache[table.qualified] = self._info(table)
        return self._cache[table.qualified]

    def require(self, table: Table) -> TenantInfo:
        """How a row of ``table``, a tenant table, names its tenant."""
        info = self.info(table)
        assert info is not None, f"{qname(table.schema, table.name)} holds no tenant data"
        return info

    def _info(self, table: Table) -> Optional[TenantInfo]:
        parties = tenancy.party_columns(self.snapshot, table, self.config)
        if parties:
            return TenantInfo(None, (), column(table, parties[0]).type, parties)
        path = tenancy.tenant_path(self.snapshot, table, self.config)
        if path is None:
            return None
        holder = path[-1].parent if path else table
        col = tenancy.tenant_column(holder, self.config)
        if col is None:
            return None
        return TenantInfo(None if path else col, tuple(path), column(holder, col).type)

    def expr(self, table: Table, alias: str = "t") -> sql.Composable:
        """The tenant of row ``alias`` of ``table``: its column, or a subquery along the foreign-key path (a
        two-party table: its first party column; :meth:`pred` is what says whose a row is)."""
        info = self.require(table)
        if info.parties:
            return sql.Identifier(alias, info.parties[0])
        if info.direct_column:
            return sql.Identifier(alias, info.direct_column)
        steps = info.path
        joins = [sql.SQL("{} AS {}").format(table_id(steps[0].parent), sql.Identifier("p1"))]
        for i, step in enumerate(steps[1:], start=2):
            on = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(f"p{i}", rc), sql.Identifier(f"p{i - 1}", c))
                for c, rc in zip(step.constraint.columns, step.constraint.ref_columns, strict=True)
            )
            joins.append(sql.SQL("JOIN {} AS {} ON {}").format(table_id(step.parent), sql.Identifier(f"p{i}"), on))
        first = steps[0].constraint
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("p1", rc), sql.Identifier(alias, c))
            for c, rc in zip(first.columns, first.ref_columns, strict=True)
        )
        col = tenancy.tenant_column(steps[-1].parent, self.config)
        assert col is not None
        return sql.SQL("(SELECT {} FROM {} WHERE {} LIMIT 1)").format(
            sql.Identifier(f"p{len(steps)}", col), sql.SQL(" ").join(joins), where
        )

    def pred(self, table: Table, tenant: str, alias: str = "t") -> Query:
        """Row ``alias`` of ``table`` belongs to ``tenant`` (a two-party row: every party column names it)."""
        info = self.require(table)
        if info.parties:
            return sql.SQL("({})").format(
                sql.SQL(" AND ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(alias, c), lit(tenant, column(table, c).type))
                    for c in info.parties
                )
            )
        return sql.SQL("{} = {}").format(self.expr(table, alias), lit(tenant, info.type))

    def names(self, table: Table, tenant: str, alias: str = "t") -> Query:
        """Row ``alias`` of ``table`` is one ``tenant`` is party to: :meth:`pred`, or for a two-party table any
        party column naming it (the rows the tenant's own access is about)."""
        info = self.require(table)
        if not info.parties:
            return self.pred(table, tenant, alias)
        return sql.SQL("({})").format(
            sql.SQL(" OR ").join(
                sql.SQL("{} = {}").format(sql.Identifier(alias, c), lit(tenant, column(table, c).type))
                for c in info.parties
            )
        )


def where_rows(table: Table, rows: list[RowRef], alias: str = "t") -> Query:
    """Row ``alias`` is one of ``rows``: by ctid (a TID scan) and by (tableoid, ctid), since a ctid alone is
    ambiguous in a partitioned table or a table with inheritance children (each holds its own row addresses)."""
    ctids = sql.SQL("{}.ctid = ANY({}::tid[])").format(sql.Identifier(alias), sql.Literal([c for _, c in rows]))
    return sql.SQL("{} AND ({}.tableoid, {}.ctid) IN (SELECT * FROM unnest({}::oid[], {}::tid[]))").format(
        ctids,
        sql.Identifier(alias),
        sql.Identifier(alias),
        sql.Literal([o for o, _ in rows]),
        sql.Literal([c for _, c in rows]),
    )


def insert_sql(table: Table, values: dict[str, Query], returning: Optional[Query] = None) -> Query:
    """INSERT of one row (OVERRIDING SYSTEM VALUE when it sets a GENERATED ALWAYS identity column)."""
    if not values:
        stmt = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table_id(table))
    else:
        overriding = any((column(table, c).identity == "always") for c in values)
        stmt = sql.SQL("INSERT INTO {} ({}) {}VALUES ({})").format(
            table_id(table),
            sql.SQL(", ").join(sql.Identifier(c) for c in values),
            sql.SQL("OVERRIDING SYSTEM VALUE ") if overriding else sql.SQL(""),
            sql.SQL(", ").join(values.values()),
        )
    if returning is not None:
        stmt = sql.SQL("{} RETURNING {}").format(stmt, returning)
    return stmt


# --------------------------------------------------------------------------- rows
class Rows:
    """Reads, counts and builds rows as the connecting role, inside the current transaction."""

    def __init__(
        self, session: Session, snapshot: Snapshot, row_tenancy: RowTenancy, *, sample: int, test_rows: bool = True
    ):
        self.session = session
        self.conn = session.conn
        self.snapshot = snapshot
        self.row_tenancy = row_tenancy
        self.sample = sample  # at most this many rows of a tenant are targeted
        self._counter = 0
        # False: never insert a row (nothing the probe does can extend a table); what needs one is not probed
        self.test_rows = test_rows
        # the tables a test row was inserted into (rolled back), in order, with their size before the first one
        self.built: dict[str, tuple[sql.Identifier, int]] = {}

    def of_tenant(self, table: Table, tenant: str) -> list[RowRef]:
        """Up to ``sample`` rows of ``tenant``."""
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                sql.SQL("SELECT t.tableoid::int8::text, t.ctid::text FROM {} AS t WHERE {} LIMIT {}").format(
                    table_id(table), self.row_tenancy.pred(table, tenant), sql.Literal(self.sample)
                )
            ).fetchall()
        ]

    def count(self, table: Table, rows: list[RowRef]) -> int:
        """How many of these row versions the connecting role still sees (updated or deleted ones are gone)."""
        if not rows:
            return 0
        return int(
            self.session.scalar(
                sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(table_id(table), where_rows(table, rows))
            )
        )

    def assignment(self, table: Table, tenant: str, rows: list[RowRef]) -> Optional[Query]:
        """SET clause (constants only) that makes a row belong to ``tenant``: the tenant column, or the first
        foreign key on the path copied from a row of that tenant."""
        info = self.row_tenancy.require(table)
        if info.parties:
            return sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), lit(tenant, column(table, c).type)) for c in info.parties
            )
        if info.direct_column:
            return sql.SQL("{} = {}").format(sql.Identifier(info.direct_column), lit(tenant, info.type))
        if not rows:
            return None
        cols = info.assign_columns
        vals = self.conn.execute(
            sql.SQL("SELECT {} FROM {} AS t WHERE {} LIMIT 1").format(
                _as_text(cols), table_id(table), where_rows(table, rows[:1])
            )
        ).fetchone()
        if vals is None:
            return None
        return sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c), lit(v, column(table, c).type))
            for c, v in zip(cols, vals, strict=True)
        )

    # ------------------------------------------------------------------ building rows
    def _fetch_row(self, table: Table, where: Optional[Query]) -> Optional[dict[str, Optional[str]]]:
        cols = [c.name for c in table.columns if not c.generated]
        if not cols:
            return None
        order: Query = sql.SQL("")
        if table.primary_key:
            order = sql.SQL(" ORDER BY {}").format(
                sql.SQL(", ").join(sql.Identifier("t", c) for c in table.primary_key.columns)
            )
        row = self.conn.execute(
            sql.SQL("SELECT {} FROM {} AS t{}{} LIMIT 1").format(
                _as_text(cols),
                table_id(table),
                sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
                order,
            )
        ).fetchone()
        return dict(zip(cols, row, strict=True)) if row else None

    def _fresh(self, table: Table, col: Column) -> str:
        """A value of ``col`` no row has yet (for unique, identity and serial columns)."""
        self._counter += 1
        base, n = base_type(self.session.domain_base.get(col.type, col.type))
        if base in NUM_TYPES:
            mx = self.session.scalar(
                sql.SQL("SELECT coalesce(max({c}), 0)::numeric FROM {t}").format(
                    c=sql.Identifier(col.name), t=table_id(table)
                )
            )
            return str(int(mx) + self._counter)
        if base == "uuid":
            return str(uuid.uuid4())
        if base in _TEXT_TYPES:
            s = f"dbguard-{uuid.uuid4().hex}"
            return s[:n] if n and n >= 12 else (uuid.uuid4().hex[:n] if n else s)
        if base == "date":
            return f"{2200 + self._counter % 7000:04d}-01-01"
        if base.startswith("timestamp"):
            return f"2200-01-01 00:00:00.{self._counter:06d}"
        raise CannotBuild(
            f"cannot make a unique value of type {col.type} for column {col.name} of {qname(table.schema, table.name)}"
        )

    def _filler(self, table: Table, col: Column) -> str:
        """Any valid value of a NOT NULL column without a default."""
        if col.type in self.session.enum_first:
            return self.session.enum_first[col.type]
        base, n = base_type(self.session.domain_base.get(col.type, col.type))  # a domain: fill by its base type
        if base.endswith("[]"):
            return "{}"
        if base in NUM_TYPES:
            return "0"
        if base in _TEXT_TYPES:
            return "dbguard probe"[: n or None]
        if base == "uuid":
            return str(uuid.uuid4())
        if base in _FIXED_VALUES:
            return _FIXED_VALUES[base]
        raise CannotBuild(
            f"cannot make a value of type {col.type} for NOT NULL column {col.name} of {qname(table.schema, table.name)}"
        )

    def _fresh_parents(self, table: Table, tc: Optional[str], fixed: dict[str, str]) -> tuple[list[str], set[str]]:
        """What makes each primary key and unique constraint of the new row unique: a fresh value in one of its
        plain columns, else a new parent row for one of its foreign keys."""
        fks = table.foreign_keys
        fk_cols = {c for fk in fks for c in fk.columns}
        fresh_cols: list[str] = []
        fresh_fks: set[str] = set()
        for u in [c for c in table.constraints if c.kind in ("primary_key", "unique")]:
            ucols = set(u.columns)
            if (
                ucols & set(fixed)
                or ucols & set(fresh_cols)
                or any(fk.name in fresh_fks and set(fk.columns) <= ucols for fk in fks)
            ):
                continue
            plain = [c for c in u.columns if c not in fk_cols and c != tc]
            if plain:
                fresh_cols.append(plain[0])
                continue
            cands = sorted((fk for fk in fks if set(fk.columns) <= ucols), key=lambda fk: (tc in fk.columns, fk.name))
            cands = [fk for fk in cands if set(fk.columns) != {tc}]
            if cands:
                fresh_fks.add(cands[0].name)
        return fresh_cols, fresh_fks

    def _fk_values(
        self,
        table: Table,
        fk: Constraint,
        tenant: Optional[str],
        template: Optional[dict[str, Any]],
        matches: bool,
        new_parent: bool,
        *,
        depth: int,
        stack: tuple[str, ...],
    ) -> dict[str, Query]:
        """Values of one foreign key's columns: copied from the template row, NULL, or the key of a parent row
        (found, or built and inserted)."""
        info = self.row_tenancy.info(table)
        parent = self.snapshot.table(f"{fk.ref_schema}.{fk.ref_table}")
        p_tenant = tenant if parent is not None and self.row_tenancy.info(parent) is not None else None
        from_template = template is not None and all(template.get(c) is not None for c in fk.columns)
        nullable = all(not column(table, c).not_null for c in fk.columns)
        path_fk = info.path[0].constraint if info and info.path else None
        if new_parent:
            mode = "new parent"  # a unique constraint needs a parent nobody else points to yet
        elif from_template and (matches or p_tenant is None):
            mode = "template"  # the template row belongs to the same tenant, or the parent has no tenant
        elif fk is path_fk or (p_tenant is not None and not nullable):
            mode = "parent"  # a parent row of the same tenant
        elif nullable:
            mode = "null"
        else:
            mode = "parent"  # any parent row (the parent holds no tenant data)
        if mode == "template":
            assert template is not None
            return {c: lit(template[c], column(table, c).type) for c in fk.columns}
        if mode == "null":
            return {c: sql.SQL("NULL") for c in fk.columns}
        if parent is None:
            raise CannotBuild(
                f"{qname(table.schema, table.name)} references {qname(fk.ref_schema or '', fk.ref_table or '')}, which is not in the snapshot"
            )
        prow = None
        if mode == "parent":
            prow = self._fetch_row(parent, self.row_tenancy.pred(parent, p_tenant) if p_tenant is not None else None)
        if prow is None:
            if parent.qualified == table.qualified:
                raise CannotBuild(f"{qname(table.schema, table.name)} needs a new parent row in itself ({fk.name})")
            prow = self.insert_built(parent, p_tenant, depth=depth + 1, stack=stack + (table.qualified,))
        return {c: lit(prow.get(rc), column(table, c).type) for c, rc in zip(fk.columns, fk.ref_columns, strict=True)}

    def build(
        self,
        table: Table,
        tenant: Optional[str],
        *,
        depth: int = 0,
        stack: tuple[str, ...] = (),
        fixed: Optional[dict[str, str]] = None,
    ) -> dict[str, Query]:
        """Values (SQL literals) for one valid new row of ``table`` belonging to ``tenant``. Parent rows it
        needs are found, or built and inserted (inside the current transaction)."""
        if depth > 6 or table.qualified in stack:
            raise CannotBuild(
                f"the foreign keys of {qname(table.schema, table.name)} form a cycle or a chain too deep to build a row"
            )
        info = self.row_tenancy.info(table)
        if info is None:
            tenant = None
        fixed = dict(fixed or {})
        template, matches = None, False
        if tenant is not None:
            template = self._fetch_row(table, self.row_tenancy.pred(table, tenant))
            matches = template is not None
        if template is None:
            template = self._fetch_row(table, None)
        tc = info.direct_column if info else None
        own = info.parties if info and info.parties else ((tc,) if tc is not None else ())  # get the tenant itself
        fresh_cols, fresh_fks = self._fresh_parents(table, tc, fixed)
        values: dict[str, Query] = {}
        for fk in table.foreign_keys:
            if set(fk.columns) & set(fixed) or (len(fk.columns) == 1 and fk.columns[0] in own and tenant is not None):
                continue  # the tenant column itself gets the tenant below
            values.update(
                self._fk_values(table, fk, tenant, template, matches, fk.name in fresh_fks, depth=depth, stack=stack)
            )
        if tenant is not None:
            for c in own:
                values[c] = lit(tenant, column(table, c).type)
        for c in fresh_cols:
            values[c] = lit(self._fresh(table, column(table, c)), column(table, c).type)
        for col in table.columns:
            if col.generated or col.name in values or col.name in fixed:
                continue
            sequence = bool(col.identity) or bool(col.default and "nextval(" in col.default)
            if template is not None and template.get(col.name) is not None:
                values[col.name] = lit(template[col.name], col.type)
            elif sequence:
                values[col.name] = lit(self._fresh(table, col), col.type)
            elif col.default is not None:
                continue  # DEFAULT (never a sequence: those got explicit values)
            elif not col.not_null:
                values[col.name] = sql.SQL("NULL")
            else:
                values[col.name] = lit(self._filler(table, col), col.type)
        for c, v in fixed.items():
            values[c] = lit(v, column(table, c).type)
        return values

    def insert_built(
        self,
        table: Table,
        tenant: Optional[str],
        *,
        depth: int = 0,
        stack: tuple[str, ...] = (),
        fixed: Optional[dict[str, str]] = None,
    ) -> dict[str, Optional[str]]:
        """Build a row and insert it as the connecting role (with the tenant's context set, as the application
        would); returns its columns as text plus ``__tableoid``/``__ctid``."""
        if not self.test_rows:
            raise CannotBuild(NO_TEST_ROWS)
        values = self.build(table, tenant, depth=depth, stack=stack, fixed=fixed)
        self._note_size(table)
        cols = [c.name for c in table.columns if not c.generated]
        returning = sql.SQL(", ").join(
            [sql.SQL("tableoid::int8::text"), sql.SQL("ctid::text")]
            + [sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols]
        )
        try:
            with self.conn.transaction():
                self.session.set_context(tenant)
                row = self.conn.execute(insert_sql(table, values, returning)).fetchone()
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            raise CannotBuild(
                f"could not create a test row in {qname(table.schema, table.name)}: {error_message(exc)}"
            ) from None
        if row is None:
            raise CannotBuild(
                f"could not create a test row in {qname(table.schema, table.name)}: a trigger discarded it"
            )
        out = dict(zip(cols, row[2:], strict=True))
        out["__tableoid"], out["__ctid"] = row[0], row[1]
        return out

    def _note_size(self, table: Table) -> None:
        """Remember the table's size before the probe's first row goes in (see :meth:`grown`)."""
        if table.qualified not in self.built:
            name = table_id(table)
            size = self.conn.execute(
                sql.SQL("SELECT pg_total_relation_size({}::regclass)").format(sql.Literal(name.as_string(self.conn)))
            ).fetchone()
            self.built[table.qualified] = (name, int(size[0]) if size else 0)

    def grown(self) -> dict[str, int]:
        """Every table a test row went into, and how many bytes larger it is now (0: the row fitted in a page
        that had room); a rolled-back row keeps the page it extended the table by."""
        out: dict[str, int] = {}
        for q, (name, before) in self.built.items():
            now = self.conn.execute(
                sql.SQL("SELECT pg_total_relation_size({}::regclass)").format(sql.Literal(name.as_string(self.conn)))
            ).fetchone()
            out[q] = (int(now[0]) if now else before) - before
        return out

    def fresh_row(self, table: Table, tenant: str) -> tuple[list[RowRef], str]:
        """Insert one new row of ``tenant`` (nothing references it, so writes to it meet no foreign key); else
        no row and the reason."""
        try:
            row = self.insert_built(table, tenant)
        except CannotBuild as exc:
            return [], str(exc)
        rows = [(str(row["__tableoid"]), str(row["__ctid"]))]
        ok = self.conn.execute(
            sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
                self.row_tenancy.pred(table, tenant), table_id(table), where_rows(table, rows)
            )
        ).fetchone()
        if not ok or not ok[0]:
            return [], f"a trigger changed the tenant of the test row built for {qname(table.schema, table.name)}"
        return rows, ""

    def candidate(
        self, table: Table, tenant: str, *, override: Optional[dict[str, str]] = None, prove: bool = True
    ) -> Candidate:
        """An INSERT of a valid new row of ``tenant`` (``override``: column -> value set on top): proven valid by
        inserting it as the connecting role in a savepoint that is rolled back, so that only row level security
        or privileges can refuse it. A row that only a unique, exclusion or foreign-key constraint refuses is
        still a candidate (``conflict``): PostgreSQL checks the policies' WITH CHECK before those constraints,
        so the application role meets 42501 first when row level security refuses the row. ``prove=False``:
        the proof is left for :meth:`Candidate.checked` (the probe may not need it)."""
        try:
            values = self.build(table, tenant)
        except CannotBuild as exc:
            return Candidate(None, {}, str(exc))
        for c, v in (override or {}).items():
            values[c] = lit(v, column(table, c).type)
        if not prove:
            return Candidate(
                insert_sql(table, values),
                values,
                "",
                conflict=self._key_taken(table, values),
                check=lambda: self._prove(table, tenant, values),
            )
        return self._prove(table, tenant, values)

    def _key_taken(self, table: Table, values: dict[str, Query]) -> str:
        """The error a primary key or unique constraint would raise on the row, read without inserting it (a
        candidate that is not proven valid: the witness still says that its key exists already)."""
        for c in table.constraints:
            if c.kind not in ("primary_key", "unique") or not c.columns or not all(k in values for k in c.columns):
                continue
            match = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier("t", k), values[k]) for k in c.columns
            )
            if self.conn.execute(
                sql.SQL("SELECT 1 FROM {} AS t WHERE {} LIMIT 1").format(table_id(table), match)
            ).fetchone():
                return f'duplicate key value violates unique constraint "{c.name}"'
        return ""

    def _prove(self, table: Table, tenant: str, values: dict[str, Query]) -> Candidate:
        if not self.test_rows:
            return Candidate(None, values, f"proving the INSERT's row valid would insert it: {NO_TEST_ROWS}")
        self._note_size(table)
        stmt = insert_sql(table, values)
        try:
            with self.conn.transaction(force_rollback=True):
                self.session.set_context(tenant)
                cur = self.conn.execute(stmt)
                if cur.rowcount != 1:
                    return Candidate(
                        None, values, f"a trigger discards rows inserted into {qname(table.schema, table.name)}"
                    )
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            if (exc.sqlstate or "") in AFTER_POLICY_STATES:
                return Candidate(stmt, values, "", conflict=error_message(exc))
            return Candidate(
                None,
                values,
                f"could not build a valid row of tenant B for {qname(table.schema, table.name)}: {error_message(exc)}",
            )
        return Candidate(stmt, values, "")

    def key_match(self, table: Table, values: dict[str, Query], skip: Sequence[str] = ()) -> Optional[Query]:
        """``t.c = value`` for the columns of the table's primary key (else first unique constraint) that
        ``values`` sets, leaving out ``skip`` (the columns that decide the tenant); None when there are none."""
        keys = [c for c in table.constraints if c.kind == "primary_key"] + [
            c for c in table.constraints if c.kind == "unique"
        ]
        for k in keys:
            cols = [c for c in k.columns if c not in skip]
            if cols and all(c in values for c in cols):
                return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("t", c), values[c]) for c in cols)
        return None

    def key_values(self, table: Table, rows: list[RowRef], skip: Sequence[str] = ()) -> Optional[Query]:
        """The same, for existing ``rows`` (their key values read now): None without a usable key."""
        keys = [c for c in table.constraints if c.kind == "primary_key"] + [
            c for c in table.constraints if c.kind == "unique"
        ]
        for k in keys:
            cols = [c for c in k.columns if c not in skip]
            if not cols:
                continue
            found = self.conn.execute(
                sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
                    _as_text(cols), table_id(table), where_rows(table, rows)
                )
            ).fetchall()
            if not found or any(v is None for r in found for v in r):
                return None
            return sql.SQL(" OR ").join(
                sql.SQL("({})").format(
                    sql.SQL(" AND ").join(
                        sql.SQL("{} = {}").format(sql.Identifier("t", c), lit(v, column(table, c).type))
                        for c, v in zip(cols, r, strict=True)
                    )
                )
                for r in found
            )
        return None

    def count_where(self, table: Table, where: Query) -> int:
        return int(self.session.scalar(sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(table_id(table), where)))

    def ensure_tenants(self, missing: Sequence[str]) -> None:
        """Create tenant keys the tenants table lacks (inside the current transaction)."""
        if not missing:
            return
        config = self.row_tenancy.config
        tenants_table = self.snapshot.table(config.tenant.tenants_qualified)
        key = tenancy.tenant_column(tenants_table, config) if tenants_table is not None else None
        assert tenants_table is not None and key is not None  # only tenants it lacks are ever missing
        for t in missing:
            self.insert_built(tenants_table, None, fixed={key: t})
