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
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import psycopg
from psycopg import sql

from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.config import Config
from dbguard_pipeline.pg.session import connect
from dbguard_pipeline.pg.dsn import describe_dsn, mask_secrets
from dbguard_pipeline.errors import ConnectionError_, DbguardError, NotFoundError, PermissionError_
from dbguard_pipeline.model.schema import Snapshot, Table, View

COMMANDS = ("select", "insert", "update", "delete")
DEFAULT_SAMPLE_ROWS = 1000

PROBES = {  # probe name -> command it reports as
    "select_without_context": "select",
    "select_other_tenant": "select",
    "insert_for_other_tenant": "insert",
    "update_other_tenant": "update",
    "update_other_tenant_blind": "update",
    "move_row_to_other_tenant": "update",
    "move_row_to_other_tenant_blind": "update",
    "delete_other_tenant": "delete",
    "delete_other_tenant_blind": "delete",
}
VIEW_PROBES = ("select_without_context", "select_other_tenant")


class ProbeRefused(PermissionError_):
    """The probe will not run as asked (a superuser or BYPASSRLS application role, missing rights)."""


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ProbeResult:
    schema: str
    table: str
    command: str  # select | insert | update | delete
    probe: str  # one of PROBES
    isolated: bool
    detail: str  # the witness: what was tried, as whom, and what came back
    statement: str = ""  # the shape of the statement that was tried
    rows: int = 0  # rows of the other tenant reached (or moved to it)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "command": self.command, "isolated": self.isolated,
                "detail": self.detail, "probe": self.probe, "statement": self.statement, "rows": self.rows}


@dataclass(frozen=True)
class NotProbed:
    schema: str
    table: str
    command: str
    probe: str
    reason: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "table": self.table, "command": self.command, "probe": self.probe,
                "reason": self.reason}


@dataclass
class ProbeReport:
    database: str  # user@host:port/db, never a password
    app_role: str
    tenant_context: dict[str, Any]
    results: list[ProbeResult] = field(default_factory=list)
    not_probed: list[NotProbed] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # relations probed, "schema.name"
    kinds: dict[str, str] = field(default_factory=dict)  # "schema.name" -> table | view | materialized view
    table_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.isolated]

    def leaking_tables(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.leaks:
            seen.setdefault(r.qualified, None)
        return list(seen)

    def summary(self) -> dict[str, Any]:
        return {
            "tables": len(self.tables),
            "leaks": len(self.leaks),
            "leaking_tables": len(self.leaking_tables()),
            "probes": len(self.results),
            "not_probed": len(self.not_probed),
            "seconds": round(self.seconds, 3),
        }

    def outcome(self, qualified: str, command: str) -> tuple[str, list[ProbeResult], list[NotProbed]]:
        """Verdict for one table and command: "leak" (any probe leaked), "isolated" (every probe ran and
        held), "not probed" (no leak, but at least one probe could not run)."""
        res = [r for r in self.results if r.qualified == qualified and r.command == command]
        nps = [n for n in self.not_probed if n.qualified == qualified and n.command == command]
        if any(not r.isolated for r in res):
            return "leak", res, nps
        if nps or not res:
            return "not probed", res, nps
        return "isolated", res, nps

    def cases(self) -> list[tuple[str, str]]:
        """(qualified, command) pairs in report order: what the pytest plugin and JUnit output name."""
        out = []
        for q in self.tables:
            for cmd in (("select",) if self.kinds.get(q, "table") != "table" else COMMANDS):
                out.append((q, cmd))
        return out

    # ------------------------------------------------------------------ renderings
    def to_json_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "tenant_context": self.tenant_context,
            "app_role": self.app_role,
            "results": [r.to_dict() for r in self.results],
            "not_probed": [n.to_dict() for n in self.not_probed],
            "summary": self.summary(),
            "warnings": list(self.warnings),
            "table_seconds": {k: round(v, 4) for k, v in self.table_seconds.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        ctx = self.tenant_context
        lines = [
            f"dbguard test-isolation: {self.database} as {self.app_role}",
            f"  tenant A = {ctx.get('tenant_a')}, tenant B = {ctx.get('tenant_b')} "
            f"(context: {ctx.get('mechanism')} {ctx.get('setting')}"
            + (f", sub {ctx['user_a']}" if ctx.get("user_a") else "") + ")",
            "",
        ]
        width = max([len(q) for q in self.tables] + [5])
        lines.append(f"  {'table'.ljust(width)}  select      insert      update      delete")
        mark = {"leak": "LEAK", "isolated": "ok", "not probed": "not probed"}
        for q in self.tables:
            cells = []
            for cmd in COMMANDS:
                if self.kinds.get(q, "table") != "table" and cmd != "select":
                    cells.append("-".ljust(10))
                    continue
                cells.append(mark[self.outcome(q, cmd)[0]].ljust(10))
            lines.append(f"  {q.ljust(width)}  " + "  ".join(cells).rstrip())
        if self.leaks:
            lines += ["", "Leaks:"]
            for r in self.leaks:
                lines.append(f"  LEAK {r.qualified} {r.command} ({r.probe}): {r.detail}")
        if self.not_probed:
            lines += ["", "Not probed (never counted as isolated):"]
            for n in self.not_probed:
                lines.append(f"  {n.qualified} {n.command} ({n.probe}): not probed: {n.reason}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        s = self.summary()
        lines += ["", f"{s['tables']} relations, {s['probes']} probes: {s['leaks']} leaks in {s['leaking_tables']} "
                      f"relations, {s['not_probed']} not probed ({self.seconds:.2f} s; all rolled back)"]
        return "\n".join(printable(line) for line in lines) + "\n"

    def to_junit(self) -> str:
        from xml.etree import ElementTree as ET

        cases = self.cases()
        suite = ET.Element("testsuite", name="dbguard.isolation", tests=str(len(cases)))
        failures = skipped = 0
        for q, cmd in cases:
            verdict, res, nps = self.outcome(q, cmd)
            tc = ET.SubElement(suite, "testcase", classname="dbguard.isolation", name=printable(f"test_isolation[{q}-{cmd}]"),
                               time=f"{self.table_seconds.get(q, 0.0) / (1 if self.kinds.get(q) != 'table' else 4):.4f}")
            if verdict == "leak":
                failures += 1
                leaks = [r for r in res if not r.isolated]
                el = ET.SubElement(tc, "failure", message=printable(leaks[0].detail), type="TenantIsolationLeak")
                el.text = "\n".join(printable(f"{r.probe}: {r.detail}") for r in leaks)
            elif verdict == "not probed":
                skipped += 1
                reason = "; ".join(f"{n.probe}: {n.reason}" for n in nps) or "no probe ran"
                ET.SubElement(tc, "skipped", message=printable(f"not probed: {reason}"))
            else:
                out = ET.SubElement(tc, "system-out")
                out.text = "\n".join(printable(f"{r.probe}: {r.detail}") for r in res)
        suite.set("failures", str(failures))
        suite.set("skipped", str(skipped))
        suite.set("errors", "0")
        suite.set("time", f"{self.seconds:.3f}")
        ET.indent(suite)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"

    def markdown(self) -> str:
        """One row per relation, one column per command (for Dagster metadata)."""
        lines = ["| relation | select | insert | update | delete |", "|---|---|---|---|---|"]
        mark = {"leak": "**LEAK**", "isolated": "ok", "not probed": "not probed"}
        for q in self.tables:
            cells = []
            for cmd in COMMANDS:
                if self.kinds.get(q, "table") != "table" and cmd != "select":
                    cells.append("-")
                else:
                    cells.append(mark[self.outcome(q, cmd)[0]])
            lines.append(f"| {q.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


# --------------------------------------------------------------------------- what to probe
@dataclass(frozen=True)
class Target:
    schema: str
    name: str
    kind: str  # "table" | "view" | "materialized view"
    table: Optional[Table] = None
    view: Optional[View] = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def commands(self) -> tuple[str, ...]:
        return COMMANDS if self.kind == "table" else ("select",)


def _audited_schema(schema: str, config: Config) -> bool:
    if config.schemas:
        return schema in config.schemas
    return schema not in config.exclude_schemas


def plan_targets(snapshot: Snapshot, config: Config, tables: Optional[Sequence[str]] = None) -> list[Target]:
    """The relations the probe covers: tenant tables (``tenancy.tenant_tables``) and the views of the
    audited schemas that read one. ``tables`` narrows it ("schema.table" or an unambiguous bare name);
    an unknown name, or a table that holds no tenant data, is a one-line error."""
    tenant = tenancy.tenant_tables(snapshot, config)
    targets = [Target(t.schema, t.name, "table", table=t) for t in tenant]
    tenant_names = {t.qualified for t in tenant}
    for v in snapshot.views:
        if _audited_schema(v.schema, config) and any(d in tenant_names for d in v.depends_on):
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
                raise NotFoundError(f"table name {name!r} is ambiguous: use one of "
                                    + ", ".join(t.qualified for t in bare))
            known = snapshot.table(name)
            if known is not None and tenancy.is_tenants_table(known, config):
                raise NotFoundError(f"{known.qualified} is the tenants table itself (the root of the tenant model), "
                                    f"not tenant data: nothing to probe")
            if known is not None:
                raise NotFoundError(f"{known.qualified} holds no tenant data (no {config.tenant.column} column and no "
                                    f"foreign-key path to a table that has one): nothing to probe")
            raise NotFoundError(f"table not found in {snapshot.database}: {name}")
        if match[0] not in chosen:
            chosen.append(match[0])
    return chosen


# --------------------------------------------------------------------------- helpers
class _CannotBuild(Exception):
    """A test row could not be built; the message says why (it becomes a "not probed" reason)."""


@dataclass
class _Outcome:
    rows: Optional[list] = None
    rowcount: int = 0
    measured: Any = None
    error: Optional[psycopg.Error] = None

    @property
    def sqlstate(self) -> str:
        return (self.error.sqlstate or "") if self.error is not None else ""

    @property
    def kind(self) -> str:
        s = self.sqlstate
        if not self.error:
            return "ok"
        if s == "42501":
            return "refused"  # insufficient privilege, including "violates row-level security policy"
        if s.startswith("23"):
            return "integrity"
        if s in ("57014", "55P03", "40001", "40P01"):
            return "timeout"
        return "error"

    @property
    def message(self) -> str:
        if self.error is None:
            return ""
        diag = getattr(self.error, "diag", None)
        msg = (diag.message_primary if diag is not None else None) or str(self.error).splitlines()[0]
        return " ".join(msg.split())


def printable(text: str) -> str:
    """Names as a terminal or an XML file can show them: control characters escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def _lit(value: Optional[str], type_: str) -> sql.Composable:
    if value is None:
        return sql.SQL("NULL")
    return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(type_))


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


_INT_TYPES = {"smallint", "integer", "bigint", "int", "int2", "int4", "int8"}
_NUM_TYPES = _INT_TYPES | {"numeric", "decimal", "real", "double precision"}
_TEXT_TYPES = {"text", "character varying", "varchar", "character", "char", "citext", "name", "bpchar"}


def _base_type(type_: str) -> tuple[str, Optional[int]]:
    m = re.match(r"^(.*?)\((\d+)(?:,\s*\d+)?\)(.*)$", type_)
    if m:
        return (m.group(1) + m.group(3)).strip().lower(), int(m.group(2))
    return type_.strip().lower(), None


@dataclass(frozen=True)
class _TenantInfo:
    direct_column: Optional[str]  # the tenant column when the table has it (or the tenants key)
    path: tuple  # tenancy.FkStep chain when it does not
    type: str  # SQL type of the tenant value as this table sees it

    @property
    def assign_columns(self) -> tuple[str, ...]:
        """The columns whose values decide the row's tenant (what a "move" rewrites)."""
        if self.direct_column:
            return (self.direct_column,)
        return tuple(self.path[0].constraint.columns)


# --------------------------------------------------------------------------- the prober
class _Prober:
    def __init__(self, conn: psycopg.Connection, snapshot: Snapshot, config: Config, *, sample_rows: int):
        self.conn = conn
        self.snapshot = snapshot
        self.config = config
        self.tm = config.tenant
        self.role = self.tm.app_role
        self.sample = max(1, int(sample_rows))
        self.tenant_a: str = ""
        self.tenant_b: str = ""
        self.user_a: Optional[str] = None
        self.missing_tenants: list[str] = []  # tenant keys to create in the tenants table per transaction
        self.superuser = False
        self.enum_first: dict[str, str] = {}  # enum type -> its first label
        self.domain_base: dict[str, str] = {}  # domain type -> its base type
        self.warnings: list[str] = []
        self.delete_triggers: set[str] = set()  # tables with user triggers on DELETE
        self.view_tenant_columns: dict[str, str] = {}  # "schema.view" -> type of its tenant column
        self._counter = 0
        self._info_cache: dict[str, Optional[_TenantInfo]] = {}

    # ------------------------------------------------------------------ set up
    def preflight(self) -> None:
        row = self.conn.execute(
            "select cu.rolname::text, cu.rolsuper, cu.rolbypassrls, r.rolname is not null, coalesce(r.rolsuper, false),"
            " coalesce(r.rolbypassrls, false), coalesce(pg_has_role(current_user, r.oid, 'MEMBER'), false)"
            " from pg_roles cu left join pg_roles r on r.rolname = %s where cu.rolname = current_user",
            (self.role,),
        ).fetchone()
        me, me_super, me_bypass, exists, app_super, app_bypass, can_set = row
        if not exists:
            raise NotFoundError(f"the application role {self.role!r} does not exist in {self.snapshot.database}: set "
                                f"tenant.app_role in dbguard.yaml to the role the application's queries run as")
        if app_super:
            raise ProbeRefused(f"refusing to probe as {self.role}: it is a superuser, and row level security never "
                               f"applies to superusers, so the probes would prove nothing; set tenant.app_role to the "
                               f"role the application's queries run as")
        if app_bypass:
            raise ProbeRefused(f"refusing to probe as {self.role}: it has BYPASSRLS, so row level security never applies "
                               f"to it and every tenant's rows are open to it; run the application as a role without "
                               f"BYPASSRLS (ALTER ROLE {self.role} NOBYPASSRLS) and probe again")
        if not (me_super or me_bypass):
            raise ProbeRefused(f"connected as {me}, which is neither a superuser nor BYPASSRLS: the probe builds test "
                               f"rows and counts tenant B's rows behind row level security; connect as the database "
                               f"owner (postgres on Supabase)")
        if not can_set:
            raise ProbeRefused(f"connected as {me}, which cannot SET ROLE {self.role}: GRANT {self.role} TO {me}")
        self.superuser = bool(me_super)
        for typ, kind, value in self.conn.execute(
            "select format_type(t.oid, null), 'e', (select e.enumlabel::text from pg_enum e where e.enumtypid = t.oid"
            " order by e.enumsortorder limit 1) from pg_type t where t.typtype = 'e'"
            " union all select format_type(t.oid, null), 'd', format_type(t.typbasetype, t.typtypmod)"
            " from pg_type t where t.typtype = 'd'"
        ).fetchall():
            if value is not None:
                (self.enum_first if kind == "e" else self.domain_base)[typ] = value
        self.delete_triggers = {
            q for (q,) in self.conn.execute(
                "select distinct n.nspname || '.' || c.relname from pg_trigger g join pg_class c on c.oid = g.tgrelid"
                " join pg_namespace n on n.oid = c.relnamespace where not g.tgisinternal and (g.tgtype & 8) <> 0"
            ).fetchall()
        }
        self.view_tenant_columns = {
            q: typ for q, typ in self.conn.execute(
                "select n.nspname || '.' || c.relname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
                " join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace"
                " where c.relkind in ('v', 'm') and a.attnum > 0 and not a.attisdropped and a.attname = %s",
                (self.tm.column,),
            ).fetchall()
        }

    def info(self, table: Table) -> Optional[_TenantInfo]:
        """How a row of ``table`` names its tenant; None when it has no tenant at all."""
        if table.qualified in self._info_cache:
            return self._info_cache[table.qualified]
        info = None
        path = tenancy.tenant_path(self.snapshot, table, self.config)
        if path is not None:
            if not path:
                col = tenancy.tenant_column(table, self.config)
                if col is not None:
                    info = _TenantInfo(col, (), table.column(col).type)
            else:
                last = path[-1].parent
                col = tenancy.tenant_column(last, self.config)
                if col is not None:
                    info = _TenantInfo(None, tuple(path), last.column(col).type)
        self._info_cache[table.qualified] = info
        return info

    def tenant_expr(self, table: Table, alias: str = "t") -> sql.Composable:
        info = self.info(table)
        if info.direct_column:
            return sql.Identifier(alias, info.direct_column)
        steps = info.path
        last = steps[-1].parent
        joins = [sql.SQL("{} AS {}").format(sql.Identifier(steps[0].parent.schema, steps[0].parent.name),
                                            sql.Identifier("p1"))]
        for i, step in enumerate(steps[1:], start=2):
            on = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(f"p{i}", rc), sql.Identifier(f"p{i - 1}", c))
                for c, rc in zip(step.constraint.columns, step.constraint.ref_columns))
            joins.append(sql.SQL("JOIN {} AS {} ON {}").format(
                sql.Identifier(step.parent.schema, step.parent.name), sql.Identifier(f"p{i}"), on))
        first = steps[0].constraint
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier("p1", rc), sql.Identifier(alias, c))
            for c, rc in zip(first.columns, first.ref_columns))
        col = tenancy.tenant_column(last, self.config)
        return sql.SQL("(SELECT {} FROM {} WHERE {} LIMIT 1)").format(
            sql.Identifier(f"p{len(steps)}", col), sql.SQL(" ").join(joins), where)

    def tenant_pred(self, table: Table, tenant: str, alias: str = "t") -> sql.Composable:
        return sql.SQL("{} = {}").format(self.tenant_expr(table, alias), _lit(tenant, self.info(table).type))

    def choose_tenants(self, explicit: Optional[Sequence[str]], targets: list[Target]) -> None:
        tenants_table = self.snapshot.table(self.tm.tenants_table)
        key = tenancy.tenant_column(tenants_table, self.config) if tenants_table is not None else None
        found: list[str] = []
        existing: set[str] = set()
        if tenants_table is not None and key is not None:
            found = [r[0] for r in self.conn.execute(sql.SQL("SELECT {k}::text FROM {t} ORDER BY {k} LIMIT 2").format(
                k=sql.Identifier(key), t=sql.Identifier(tenants_table.schema, tenants_table.name))).fetchall()]
            existing = set(found)
        if explicit:
            a, b = (str(x) for x in explicit)
            if a == b:
                raise DbguardError("tenant A and tenant B must differ")
            if tenants_table is not None and key is not None:
                existing = {r[0] for r in self.conn.execute(
                    sql.SQL("SELECT {k}::text FROM {t} WHERE {k}::text = ANY({v})").format(
                        k=sql.Identifier(key), t=sql.Identifier(tenants_table.schema, tenants_table.name),
                        v=sql.Literal([a, b]))).fetchall()}
            found = [a, b]
        if len(found) < 2:
            for t in targets:
                if t.kind == "table" and self.info(t.table).direct_column:
                    col = self.info(t.table).direct_column
                    for (v,) in self.conn.execute(sql.SQL(
                            "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL ORDER BY 1 LIMIT 2").format(
                            c=sql.Identifier(col), t=sql.Identifier(t.schema, t.name))).fetchall():
                        if v not in found and len(found) < 2:
                            found.append(v)
                if len(found) == 2:
                    break
        if len(found) < 2:
            type_ = (tenants_table.column(key).type if tenants_table is not None and key else self.tm.column_type)
            base, _ = _base_type(type_)
            synthetic = []
            for i in (1, 2):
                if base == "uuid":
                    synthetic.append(f"00000000-0000-4000-8000-0000db9a{i:04d}")
                elif base in _NUM_TYPES:
                    synthetic.append(str(1_900_000_000 + i))
                else:
                    synthetic.append(f"dbguard-probe-tenant-{'ab'[i - 1]}")
            for s in synthetic:
                if len(found) < 2 and s not in found:
                    found.append(s)
        self.tenant_a, self.tenant_b = found[0], found[1]
        if tenants_table is not None and key is not None:
            self.missing_tenants = [x for x in (self.tenant_a, self.tenant_b) if x not in existing]
        self._find_user_a()

    def _find_user_a(self) -> None:
        """JWT tenancy: a user of tenant A who is not also a member of tenant B (for the ``sub`` claim)."""
        if self.tm.context != "jwt":
            return
        candidates = []
        for t in tenancy.tenant_tables(self.snapshot, self.config):
            info = self.info(t)
            if not info or not info.direct_column:
                continue
            for fk in t.foreign_keys:
                if len(fk.columns) == 1 and fk.ref_table == "users":
                    pk = set(t.primary_key.columns) if t.primary_key else set()
                    rank = 0 if {fk.columns[0], info.direct_column} <= pk else 1 if pk == {fk.columns[0]} else 2
                    candidates.append((rank, fk.ref_schema != "auth", t.qualified, t, fk.columns[0]))
        for *_ignored, t, col in sorted(candidates, key=lambda c: c[:3]):
            tc = self.info(t).direct_column
            row = self.conn.execute(sql.SQL(
                "SELECT m.{u}::text FROM {t} AS m WHERE m.{tc} = {a} AND m.{u} IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM {t} AS o WHERE o.{u} = m.{u} AND o.{tc} = {b}) ORDER BY m.{u} LIMIT 1").format(
                u=sql.Identifier(col), t=sql.Identifier(t.schema, t.name), tc=sql.Identifier(tc),
                a=_lit(self.tenant_a, self.info(t).type), b=_lit(self.tenant_b, self.info(t).type))).fetchone()
            if row:
                self.user_a = row[0]
                return

    def tenant_context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {"mechanism": self.tm.context, "tenant_a": self.tenant_a, "tenant_b": self.tenant_b}
        if self.tm.context == "jwt":
            ctx.update(setting="request.jwt.claims", claim=self.tm.jwt_claim, user_a=self.user_a)
        else:
            ctx.update(setting=self.tm.guc)
        return ctx

    # ------------------------------------------------------------------ context switching
    def _claims(self, tenant: Optional[str]) -> str:
        claims: dict[str, Any] = {"role": self.role}
        if tenant is not None:
            node = claims
            parts = self.tm.jwt_claim.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = tenant
            if self.user_a:
                claims["sub"] = self.user_a
        return json.dumps(claims, sort_keys=True)

    def set_context(self, tenant: Optional[str]) -> None:
        """Tenant context as the application sets it (transaction-local); None = no tenant context."""
        if self.tm.context == "jwt":
            self.conn.execute("select set_config('request.jwt.claims', %s, true)", (self._claims(tenant),))
        else:
            self.conn.execute("select set_config(%s, %s, true)", (self.tm.guc, tenant or ""))

    def as_app(self, tenant: Optional[str]) -> None:
        self.set_context(tenant)
        self.conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))

    def timeouts(self) -> None:
        st, lt = int(self.config.statement_timeout_ms), int(self.config.lock_timeout_ms)
        self.conn.execute(
            "select set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
            " set_config('idle_in_transaction_session_timeout', %s, true)",
            (f"{st}ms", f"{lt}ms", f"{st * 2}ms"))

    def attempt(self, tenant: Optional[str], stmt: sql.Composable, measure: Optional[Callable[[], Any]] = None,
                *, before: Optional[Callable[[], None]] = None) -> _Outcome:
        """Run ``stmt`` as the application role in a savepoint that is always rolled back; measure its effect
        as the connecting role inside the same savepoint."""
        assert self.conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        try:
            with self.conn.transaction(force_rollback=True):
                if before:
                    before()
                self.as_app(tenant)
                cur = self.conn.execute(stmt)
                rows = cur.fetchall() if cur.description else None
                rowcount = cur.rowcount
                self.conn.execute("RESET ROLE")
                measured = measure() if measure else None
                return _Outcome(rows=rows, rowcount=rowcount, measured=measured)
        except psycopg.Error as exc:
            if self.conn.broken or isinstance(exc, psycopg.OperationalError) and self.conn.closed:
                raise
            return _Outcome(error=exc)

    # ------------------------------------------------------------------ rows
    def targets(self, table: Table, tenant: str, limit: int) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.conn.execute(sql.SQL(
            "SELECT t.tableoid::int8::text, t.ctid::text FROM {} AS t WHERE {} LIMIT {}").format(
            sql.Identifier(table.schema, table.name), self.tenant_pred(table, tenant), sql.Literal(limit))).fetchall()]

    @staticmethod
    def where_rows(table: Table, rows: list[tuple[str, str]], alias: str = "t") -> sql.Composable:
        ctids = sql.SQL("{}.ctid = ANY({}::tid[])").format(sql.Identifier(alias), sql.Literal([c for _, c in rows]))
        if table.kind != "partitioned":
            return ctids
        return sql.SQL("{} AND ({}.tableoid, {}.ctid) IN (SELECT * FROM unnest({}::oid[], {}::tid[]))").format(
            ctids, sql.Identifier(alias), sql.Identifier(alias), sql.Literal([o for o, _ in rows]),
            sql.Literal([c for _, c in rows]))

    def count_rows(self, table: Table, rows: list[tuple[str, str]]) -> int:
        """How many of these row versions the connecting role still sees (updated or deleted ones are gone)."""
        if not rows:
            return 0
        return self.conn.execute(sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(
            sql.Identifier(table.schema, table.name), self.where_rows(table, rows))).fetchone()[0]

    def assignment(self, table: Table, tenant: str, rows: list[tuple[str, str]]) -> Optional[sql.Composable]:
        """SET clause (constants only) that makes a row belong to ``tenant``: the tenant column, or the first
        foreign key on the path copied from a row of that tenant."""
        info = self.info(table)
        if info.direct_column:
            return sql.SQL("{} = {}").format(sql.Identifier(info.direct_column), _lit(tenant, info.type))
        if not rows:
            return None
        cols = info.assign_columns
        vals = self.conn.execute(sql.SQL("SELECT {} FROM {} AS t WHERE {} LIMIT 1").format(
            sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in cols),
            sql.Identifier(table.schema, table.name), self.where_rows(table, rows[:1]))).fetchone()
        if vals is None:
            return None
        return sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c), _lit(v, table.column(c).type)) for c, v in zip(cols, vals))

    def _select_cols(self, table: Table) -> list[str]:
        return [c.name for c in table.columns if not c.generated]

    def _fetch_row(self, table: Table, where: Optional[sql.Composable]) -> Optional[dict[str, Optional[str]]]:
        cols = self._select_cols(table)
        if not cols:
            return None
        order = sql.SQL("")
        if table.primary_key:
            order = sql.SQL(" ORDER BY {}").format(
                sql.SQL(", ").join(sql.Identifier("t", c) for c in table.primary_key.columns))
        row = self.conn.execute(sql.SQL("SELECT {} FROM {} AS t{}{} LIMIT 1").format(
            sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in cols),
            sql.Identifier(table.schema, table.name),
            sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""), order)).fetchone()
        return dict(zip(cols, row)) if row else None

    def _fresh(self, table: Table, col) -> str:
        self._counter += 1
        base, n = _base_type(self.domain_base.get(col.type, col.type))
        if base in _NUM_TYPES:
            mx = self.conn.execute(sql.SQL("SELECT coalesce(max({c}), 0)::numeric FROM {t}").format(
                c=sql.Identifier(col.name), t=sql.Identifier(table.schema, table.name))).fetchone()[0]
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
        raise _CannotBuild(f"cannot make a unique value of type {col.type} for column {col.name} of {table.qualified}")

    def _filler(self, table: Table, col) -> str:
        if col.type in self.enum_first:
            return self.enum_first[col.type]
        base, n = _base_type(self.domain_base.get(col.type, col.type))  # a domain: fill by its base type
        if base.endswith("[]"):
            return "{}"
        if base in _NUM_TYPES:
            return "0"
        if base in _TEXT_TYPES:
            return "dbguard probe"[: n or None]
        fixed = {"boolean": "false", "json": "{}", "jsonb": "{}", "date": "2000-01-01", "time without time zone": "00:00",
                 "time with time zone": "00:00+00", "interval": "0", "bytea": "\\x", "inet": "127.0.0.1",
                 "cidr": "127.0.0.1/32", "timestamp without time zone": "2000-01-01 00:00:00",
                 "timestamp with time zone": "2000-01-01 00:00:00+00", "uuid": str(uuid.uuid4())}
        if base in fixed:
            return fixed[base]
        raise _CannotBuild(f"cannot make a value of type {col.type} for NOT NULL column {col.name} of {table.qualified}")

    def build(self, table: Table, tenant: Optional[str], *, depth: int = 0, stack: tuple = (),
              fixed: Optional[dict[str, str]] = None) -> dict[str, sql.Composable]:
        """Values (SQL literals) for one valid new row of ``table`` belonging to ``tenant``. Parent rows it
        needs are found, or built and inserted (inside the current transaction)."""
        if depth > 6 or table.qualified in stack:
            raise _CannotBuild(f"the foreign keys of {table.qualified} form a cycle or a chain too deep to build a row")
        info = self.info(table)
        if info is None:
            tenant = None
        fixed = dict(fixed or {})
        template, matches = None, False
        if tenant is not None:
            template = self._fetch_row(table, self.tenant_pred(table, tenant))
            matches = template is not None
        if template is None:
            template = self._fetch_row(table, None)
        tc = info.direct_column if info else None
        path_fk = info.path[0].constraint if info and info.path else None
        fks = list(table.foreign_keys)
        fk_cols = {c for fk in fks for c in fk.columns}
        values: dict[str, sql.Composable] = {}
        fresh_cols: list[str] = []
        fresh_fks: set[str] = set()
        for u in [c for c in table.constraints if c.kind in ("primary_key", "unique")]:
            ucols = set(u.columns)
            if ucols & set(fixed) or ucols & set(fresh_cols) or any(
                    fk.name in fresh_fks and set(fk.columns) <= ucols for fk in fks):
                continue
            plain = [c for c in u.columns if c not in fk_cols and c != tc]
            if plain:
                fresh_cols.append(plain[0])
                continue
            cands = sorted((fk for fk in fks if set(fk.columns) <= ucols),
                           key=lambda fk: (tc in fk.columns, fk.name))
            cands = [fk for fk in cands if set(fk.columns) != {tc}]
            if cands:
                fresh_fks.add(cands[0].name)
        for fk in fks:
            if set(fk.columns) & set(fixed) or (tc is not None and set(fk.columns) == {tc} and tenant is not None):
                continue  # the tenant column itself gets the tenant below
            parent = self.snapshot.table(f"{fk.ref_schema}.{fk.ref_table}")
            p_tenant = tenant if parent is not None and self.info(parent) is not None else None
            from_template = template is not None and all(template.get(c) is not None for c in fk.columns)
            nullable = all(not table.column(c).not_null for c in fk.columns)
            if fk.name in fresh_fks:
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
                for c in fk.columns:
                    values[c] = _lit(template[c], table.column(c).type)
                continue
            if mode == "null":
                for c in fk.columns:
                    values[c] = sql.SQL("NULL")
                continue
            if parent is None:
                raise _CannotBuild(f"{table.qualified} references {fk.ref_schema}.{fk.ref_table}, which is not in "
                                   f"the snapshot")
            prow = None
            if mode == "parent":
                prow = self._fetch_row(parent, self.tenant_pred(parent, p_tenant) if p_tenant is not None else None)
            if prow is None:
                if parent.qualified == table.qualified:
                    raise _CannotBuild(f"{table.qualified} needs a new parent row in itself ({fk.name})")
                prow = self.insert_built(parent, p_tenant, depth=depth + 1, stack=stack + (table.qualified,))
            for c, rc in zip(fk.columns, fk.ref_columns):
                values[c] = _lit(prow.get(rc), table.column(c).type)
        if tc is not None and tenant is not None:
            values[tc] = _lit(tenant, table.column(tc).type)
        for c in fresh_cols:
            values[c] = _lit(self._fresh(table, table.column(c)), table.column(c).type)
        for col in table.columns:
            if col.generated or col.name in values or col.name in fixed:
                continue
            sequence = bool(col.identity) or bool(col.default and "nextval(" in col.default)
            if template is not None and template.get(col.name) is not None:
                values[col.name] = _lit(template[col.name], col.type)
            elif sequence:
                values[col.name] = _lit(self._fresh(table, col), col.type)
            elif col.default is not None:
                continue  # DEFAULT (never a sequence: those got explicit values)
            elif not col.not_null:
                values[col.name] = sql.SQL("NULL")
            else:
                values[col.name] = _lit(self._filler(table, col), col.type)
        for c, v in fixed.items():
            values[c] = _lit(v, table.column(c).type)
        return values

    @staticmethod
    def insert_sql(table: Table, values: dict[str, sql.Composable],
                   returning: Optional[sql.Composable] = None) -> sql.Composable:
        target = sql.Identifier(table.schema, table.name)
        if not values:
            stmt = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target)
        else:
            overriding = any((table.column(c).identity == "always") for c in values)
            stmt = sql.SQL("INSERT INTO {} ({}) {}VALUES ({})").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in values),
                sql.SQL("OVERRIDING SYSTEM VALUE ") if overriding else sql.SQL(""),
                sql.SQL(", ").join(values.values()))
        if returning is not None:
            stmt = sql.SQL("{} RETURNING {}").format(stmt, returning)
        return stmt

    def insert_built(self, table: Table, tenant: Optional[str], *, depth: int = 0, stack: tuple = (),
                     fixed: Optional[dict[str, str]] = None) -> dict[str, Optional[str]]:
        """Build a row and insert it as the connecting role (with the tenant's context set, as the application
        would); returns its columns as text plus ``__tableoid``/``__ctid``."""
        values = self.build(table, tenant, depth=depth, stack=stack, fixed=fixed)
        cols = self._select_cols(table)
        returning = sql.SQL(", ").join(
            [sql.SQL("tableoid::int8::text"), sql.SQL("ctid::text")] +
            [sql.SQL("{}::text").format(sql.Identifier(c)) for c in cols])
        try:
            with self.conn.transaction():
                self.set_context(tenant)
                row = self.conn.execute(self.insert_sql(table, values, returning)).fetchone()
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            raise _CannotBuild(f"could not create a test row in {table.qualified}: {_Outcome(error=exc).message}") from None
        if row is None:
            raise _CannotBuild(f"could not create a test row in {table.qualified}: a trigger discarded it")
        out = dict(zip(cols, row[2:]))
        out["__tableoid"], out["__ctid"] = row[0], row[1]
        return out

    def fresh_row(self, table: Table, tenant: str) -> tuple[list[tuple[str, str]], str]:
        """Insert one new row of ``tenant`` (nothing references it, so writes to it meet no foreign key)."""
        try:
            row = self.insert_built(table, tenant)
        except _CannotBuild as exc:
            return [], str(exc)
        rows = [(row["__tableoid"], row["__ctid"])]
        ok = self.conn.execute(sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(
            self.tenant_pred(table, tenant), sql.Identifier(table.schema, table.name),
            self.where_rows(table, rows))).fetchone()
        if not ok or not ok[0]:
            return [], f"a trigger changed the tenant of the test row built for {table.qualified}"
        return rows, ""

    def candidate(self, table: Table, tenant: str) -> tuple[Optional[sql.Composable], str]:
        """An INSERT of a valid new row of ``tenant``: proven valid by inserting it as the connecting role in a
        savepoint that is rolled back, so that only row level security or privileges can refuse it."""
        try:
            values = self.build(table, tenant)
        except _CannotBuild as exc:
            return None, str(exc)
        stmt = self.insert_sql(table, values)
        try:
            with self.conn.transaction(force_rollback=True):
                self.set_context(tenant)
                cur = self.conn.execute(stmt)
                if cur.rowcount != 1:
                    return None, f"a trigger discards rows inserted into {table.qualified}"
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            return None, f"could not build a valid row of tenant B for {table.qualified}: {_Outcome(error=exc).message}"
        return stmt, ""

    def ensure_tenants(self) -> None:
        if not self.missing_tenants:
            return
        tenants_table = self.snapshot.table(self.tm.tenants_table)
        key = tenancy.tenant_column(tenants_table, self.config)
        for t in self.missing_tenants:
            self.insert_built(tenants_table, None, fixed={key: t})


# --------------------------------------------------------------------------- probing one relation
class _TableRun:
    def __init__(self, prober: _Prober, target: Target):
        self.p = prober
        self.target = target
        self.results: list[ProbeResult] = []
        self.not_probed: list[NotProbed] = []

    def held(self, probe: str, detail: str, statement: str = "") -> None:
        self.results.append(ProbeResult(self.target.schema, self.target.name, PROBES[probe], probe, True, detail,
                                        statement, 0))

    def leak(self, probe: str, detail: str, statement: str = "", rows: int = 0) -> None:
        t = self.target.table
        if t is not None and t.owner == self.p.role and not t.rls_forced:
            detail += (f" ({self.p.role} owns {self.target.qualified} and row level security is not forced, so no "
                       f"policy applies to it)")
        elif t is not None and not t.rls_enabled:
            detail += " (row level security is disabled on this table)"
        self.results.append(ProbeResult(self.target.schema, self.target.name, PROBES[probe], probe, False, detail,
                                        statement, rows))

    def skip(self, probe: str, reason: str) -> None:
        self.not_probed.append(NotProbed(self.target.schema, self.target.name, PROBES[probe], probe, reason))

    def skip_all(self, reason: str, probes=None) -> None:
        for probe in probes or (PROBES if self.target.kind == "table" else VIEW_PROBES):
            self.skip(probe, reason)

    # ------------------------------------------------------------------
    def run(self) -> None:
        p = self.p
        try:
            with p.conn.transaction(force_rollback=True):
                p.timeouts()
                if self.target.kind == "table":
                    self.run_table()
                else:
                    self.run_view()
        except psycopg.Error as exc:
            if p.conn.broken:
                raise
            done = {r.probe for r in self.results} | {n.probe for n in self.not_probed}
            self.skip_all(f"the probe transaction failed: {_Outcome(error=exc).message}",
                          [x for x in (PROBES if self.target.kind == "table" else VIEW_PROBES) if x not in done])

    def run_table(self) -> None:
        p, t, q = self.p, self.target.table, self.target.qualified
        ident = sql.Identifier(t.schema, t.name)
        role = p.role
        as_a = f"as {role} with tenant A"
        try:
            p.ensure_tenants()
        except _CannotBuild as exc:
            self.skip_all(f"tenants {p.tenant_a} and {p.tenant_b} are not both in {p.tm.tenants_table} and could not be "
                          f"created: {exc}")
            return
        b_existing = p.targets(t, p.tenant_b, p.sample)
        a_existing = p.targets(t, p.tenant_a, p.sample)
        # The read probes count the table's own rows; test rows are built only when a tenant has none.
        fresh_b, why_b = ([], "") if b_existing else p.fresh_row(t, p.tenant_b)
        fresh_a, why_a = ([], "") if a_existing else p.fresh_row(t, p.tenant_a)
        self.read_probes(b_existing + fresh_b, a_existing + fresh_a, why_b or why_a)
        if b_existing:
            fresh_b, why_b = p.fresh_row(t, p.tenant_b)
        if a_existing:
            fresh_a, why_a = p.fresh_row(t, p.tenant_a)
        cand, why_c = p.candidate(t, p.tenant_b)
        b_sel, a_sel = b_existing + fresh_b, a_existing + fresh_a
        # Writes target a fresh row when one could be built: nothing references it, so no foreign key gets in
        # the way of measuring what row level security allows.
        b_write, a_write = fresh_b or b_existing, fresh_a or a_existing
        no_b = f"{q} has no row of tenant B and none could be built: {why_b}"
        no_a = f"{q} has no row of tenant A and none could be built: {why_a}"

        # ---- insert a row for tenant B
        if cand is None:
            self.skip("insert_for_other_tenant", why_c)
        else:
            out = p.attempt(p.tenant_a, cand)
            shape = f"INSERT INTO {q} (...) VALUES (<a valid row of tenant B>)"
            if out.kind == "ok" and out.rowcount > 0:
                self.leak("insert_for_other_tenant", f"{as_a}, INSERT of a row of tenant B into {q} succeeded", shape, 1)
            elif out.kind == "ok":
                self.held("insert_for_other_tenant", f"{as_a}, INSERT of a row of tenant B into {q} inserted nothing",
                          shape)
            else:
                self.judge_write_error("insert_for_other_tenant", out, as_a, f"INSERT of a row of tenant B into {q}",
                                       shape, filtered=False)

        # ---- update tenant B's rows (filtered and blind), move A's row to B (filtered and blind)
        set_a = p.assignment(t, p.tenant_a, a_sel)
        set_b = p.assignment(t, p.tenant_b, b_sel)
        cols = ", ".join(p.info(t).assign_columns)
        if not b_write:
            self.skip("update_other_tenant", no_b)
            self.skip("update_other_tenant_blind", no_b)
        elif set_a is None:
            self.skip("update_other_tenant", no_a)
            self.skip("update_other_tenant_blind", no_a)
        else:
            measure = lambda: len(b_write) - p.count_rows(t, b_write)  # noqa: E731
            out = p.attempt(p.tenant_a, sql.SQL("UPDATE {} AS t SET {} WHERE {}").format(
                ident, set_a, p.where_rows(t, b_write)), measure)
            self.judge_write("update_other_tenant", out, as_a, f"UPDATE of tenant B's rows in {q} (filtered to them)",
                             f"UPDATE {q} SET {cols} = <tenant A> WHERE ctid = ANY(<{_rows(len(b_write))} of tenant B>)",
                             total=len(b_write), filtered=True, verb="changed")
            out = p.attempt(p.tenant_a, sql.SQL("UPDATE {} SET {}").format(ident, set_a), measure)
            self.judge_write("update_other_tenant_blind", out, as_a, f"blind UPDATE of {q} (no WHERE, reads no column)",
                             f"UPDATE {q} SET {cols} = <tenant A>", total=len(b_write), filtered=False,
                             verb="changed")
        if not a_write:
            self.skip("move_row_to_other_tenant", no_a)
            self.skip("move_row_to_other_tenant_blind", no_a)
        elif set_b is None:
            self.skip("move_row_to_other_tenant", no_b)
            self.skip("move_row_to_other_tenant_blind", no_b)
        else:
            measure = lambda: len(a_write) - p.count_rows(t, a_write)  # noqa: E731
            out = p.attempt(p.tenant_a, sql.SQL("UPDATE {} AS t SET {} WHERE {}").format(
                ident, set_b, p.where_rows(t, a_write)), measure)
            self.judge_move("move_row_to_other_tenant", out, as_a, q,
                            f"UPDATE {q} SET {cols} = <tenant B> WHERE ctid = ANY(<{_rows(len(a_write))} of tenant A>)")
            out = p.attempt(p.tenant_a, sql.SQL("UPDATE {} SET {}").format(ident, set_b), measure)
            self.judge_move("move_row_to_other_tenant_blind", out, as_a, q, f"UPDATE {q} SET {cols} = <tenant B>")

        # ---- delete tenant B's rows (filtered and blind)
        if not b_write:
            self.skip("delete_other_tenant", no_b)
            self.skip("delete_other_tenant_blind", no_b)
        else:
            measure = lambda: len(b_write) - p.count_rows(t, b_write)  # noqa: E731
            out = p.attempt(p.tenant_a, sql.SQL("DELETE FROM {} AS t WHERE {}").format(ident, p.where_rows(t, b_write)),
                            measure)
            self.judge_write("delete_other_tenant", out, as_a, f"DELETE of tenant B's rows from {q} (filtered to them)",
                             f"DELETE FROM {q} WHERE ctid = ANY(<{_rows(len(b_write))} of tenant B>)",
                             total=len(b_write), filtered=True, verb="deleted")
            blind = sql.SQL("DELETE FROM {}").format(ident)
            out = p.attempt(p.tenant_a, blind, measure)
            note = ""
            if out.sqlstate == "23503":
                # Rows of tenant A (visible to the DELETE) are referenced by other tables. Measure again with the
                # foreign-key triggers off, which only a superuser may do, and only when no user trigger on this
                # table could be part of the isolation.
                if p.superuser and q not in p.delete_triggers:
                    out = p.attempt(p.tenant_a, blind, measure, before=lambda: p.conn.execute(
                        "SET LOCAL session_replication_role = replica"))
                    note = (" (measured with foreign-key checks off: other tables reference rows of tenant A that "
                            "the DELETE reached)")
            self.judge_write("delete_other_tenant_blind", out, as_a, f"blind DELETE FROM {q} (no WHERE)",
                             f"DELETE FROM {q}", total=len(b_write), filtered=False, verb="deleted", note=note)

    def read_probes(self, b_sel: list, a_sel: list, why: str) -> None:
        p, t, q = self.p, self.target.table, self.target.qualified
        ident = sql.Identifier(t.schema, t.name)
        # ---- select without any tenant context
        count_all = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) s").format(ident, sql.Literal(p.sample))
        total = p.conn.execute(count_all).fetchone()[0]
        if total == 0:
            self.skip("select_without_context", f"{q} has no rows and none could be built: {why}")
        else:
            out = p.attempt(None, count_all)
            self.judge_read("select_without_context", out, f"as {p.role} with no tenant context", f"SELECT on {q}",
                            f"SELECT count(*) FROM {q}", of_tenant="", total=total)
        # ---- select tenant B's rows as tenant A
        if not b_sel:
            self.skip("select_other_tenant", f"{q} has no row of tenant B and none could be built: {why}")
            return
        stmt = sql.SQL("SELECT (SELECT count(*) FROM {i} AS t WHERE {b}), {a}").format(
            i=ident, b=p.where_rows(t, b_sel),
            a=sql.SQL("(SELECT count(*) FROM {} AS t WHERE {})").format(ident, p.where_rows(t, a_sel))
            if a_sel else sql.SQL("0"))
        out = p.attempt(p.tenant_a, stmt)
        self.judge_read("select_other_tenant", out, f"as {p.role} with tenant A", f"SELECT on {q}",
                        f"SELECT * FROM {q} WHERE ctid = ANY(<{_rows(len(b_sel))} of tenant B>)",
                        of_tenant=" of tenant B", total=len(b_sel),
                        own=(len(a_sel), out.rows[0][1] if out.rows else None))

    def run_view(self) -> None:
        p, q = self.p, self.target.qualified
        ident = sql.Identifier(self.target.schema, self.target.name)
        what = "materialized view" if self.target.kind == "materialized view" else "view"
        total = p.conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) s").format(
            ident, sql.Literal(p.sample))).fetchone()[0]
        if total == 0:
            self.skip_all(f"the {what} {q} shows no rows even to the connecting role: nothing to leak")
            return
        out = p.attempt(None, sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) s").format(
            ident, sql.Literal(p.sample)))
        self.judge_read("select_without_context", out, f"as {p.role} with no tenant context", f"SELECT on {what} {q}",
                        f"SELECT count(*) FROM {q}", of_tenant="", total=total)
        tc_type = p.view_tenant_columns.get(q)
        if tc_type is None:
            self.skip("select_other_tenant", f"the {what} has no {p.tm.column} column, so tenant B's rows cannot be "
                                             f"told apart in it")
            return
        where = sql.SQL("{} = {}").format(sql.Identifier(p.tm.column), _lit(p.tenant_b, tc_type))
        count_b = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} LIMIT {}) s").format(
            ident, where, sql.Literal(p.sample))
        n_b = p.conn.execute(count_b).fetchone()[0]
        if n_b == 0:
            self.skip("select_other_tenant", f"the {what} shows no rows of tenant B even to the connecting role")
            return
        out = p.attempt(p.tenant_a, count_b)
        self.judge_read("select_other_tenant", out, f"as {p.role} with tenant A", f"SELECT on {what} {q}",
                        f"SELECT * FROM {q} WHERE {p.tm.column} = <tenant B>", of_tenant=" of tenant B", total=n_b)

    # ------------------------------------------------------------------ verdicts
    def judge_read(self, probe: str, out: _Outcome, who: str, what: str, shape: str, *, of_tenant: str, total: int,
                   own: Optional[tuple[int, Optional[int]]] = None) -> None:
        if out.kind == "timeout":
            self.skip(probe, f"{what} did not finish: {out.message}")
            return
        if out.error is not None:
            how = "was refused" if out.kind == "refused" else "failed with an error and returned nothing"
            self.held(probe, f"{who}, {what} {how}: {out.message}", shape)
            return
        n = out.rows[0][0]
        if n > 0:
            more = "at least " if (not of_tenant and n >= self.p.sample) else ""
            self.leak(probe, f"{who}, {what} returned {more}{_rows(n)}{of_tenant}", shape, n)
            return
        if of_tenant:
            detail = f"{who}, {what} returned none of the rows{of_tenant} ({total} targeted)"
        else:
            detail = f"{who}, {what} returned no rows"
        if own is not None and own[0]:
            seen = own[1] or 0
            detail += f" (tenant A saw {seen} of its {own[0]})"
            if seen == 0:
                self.p.warnings.append(
                    f"{self.target.qualified}: {who}, none of tenant A's own {_rows(own[0])} were visible either: if "
                    f"the application can read them, tenant.context/guc/jwt_claim or tenant.app_role in the config "
                    f"do not match it, and the probes that held prove little")
        self.held(probe, detail, shape)

    def judge_write_error(self, probe: str, out: _Outcome, who: str, what: str, shape: str, *, filtered: bool) -> None:
        if out.kind == "refused":
            self.held(probe, f"{who}, {what} was refused: {out.message}", shape)
        elif out.kind == "timeout":
            self.skip(probe, f"{what} did not finish: {out.message}")
        elif out.kind == "integrity" and filtered:
            self.leak(probe, f"{who}, row level security let {what} through; only the constraint "
                             f"{out.error.diag.constraint_name or ''} stopped it ({out.message})", shape)
        elif out.kind == "integrity":
            self.skip(probe, f"{what} failed on a constraint, so its effect on tenant B's rows could not be measured: "
                             f"{out.message}")
        else:
            self.skip(probe, f"{what} failed, so its effect could not be measured: {out.message}")

    def judge_write(self, probe: str, out: _Outcome, who: str, what: str, shape: str, *, total: int, filtered: bool,
                    verb: str, note: str = "") -> None:
        if out.error is not None:
            self.judge_write_error(probe, out, who, what, shape, filtered=filtered)
            return
        n = out.measured or 0
        if n > 0:
            self.leak(probe, f"{who}, {what} {verb} {_rows(n)} of tenant B{note}", shape, n)
        else:
            self.held(probe, f"{who}, {what} {verb} none of the tenant B rows ({total} targeted){note}", shape)

    def judge_move(self, probe: str, out: _Outcome, who: str, q: str, shape: str) -> None:
        blind = probe.endswith("_blind")
        what = (f"blind UPDATE of {q} moving rows to tenant B" if blind
                else f"UPDATE of tenant A's row in {q} moving it to tenant B")
        if out.error is not None:
            self.judge_write_error(probe, out, who, what, shape, filtered=False)
            return
        n = out.measured or 0
        if n > 0:
            self.leak(probe, f"{who}, {what} succeeded: {_rows(n)} of tenant A now {'belongs' if n == 1 else 'belong'} to tenant B", shape, n)
        else:
            self.held(probe, f"{who}, {what} moved nothing", shape)


# --------------------------------------------------------------------------- entry point
def probe(dsn: str, config: Optional[Config] = None, tables: Optional[Sequence[str]] = None, *,
          snapshot: Optional[Snapshot] = None, tenants: Optional[Sequence[str]] = None,
          sample_rows: int = DEFAULT_SAMPLE_ROWS) -> ProbeReport:
    """Probe tenant isolation of every tenant table (or ``tables``) of the database at ``dsn``.

    Connect as a superuser or BYPASSRLS role (the probe builds rows and counts tenant B's rows); the probes
    themselves run as ``config.tenant.app_role``, which must be neither. Nothing is ever committed.
    ``tenants`` = (A, B) overrides the deterministic choice (the first two keys of the tenants table).
    """
    from dbguard_pipeline.pg.catalog import introspect

    config = config or Config()
    started = time.perf_counter()
    conn = connect(dsn, autocommit=True, application_name="dbguard test-isolation")
    try:
        if snapshot is None:
            snapshot = introspect(conn, None, statement_timeout_ms=config.statement_timeout_ms,
                                  lock_timeout_ms=config.lock_timeout_ms)
        targets = plan_targets(snapshot, config, tables)
        prober = _Prober(conn, snapshot, config, sample_rows=sample_rows)
        with conn.transaction(force_rollback=True):  # read only, with the same timeouts as the probes
            conn.execute("SET TRANSACTION READ ONLY")
            prober.timeouts()
            prober.preflight()
            prober.choose_tenants(tenants, targets)
        report = ProbeReport(database=describe_dsn(dsn), app_role=config.tenant.app_role,
                             tenant_context=prober.tenant_context())
        for target in targets:
            t0 = time.perf_counter()
            run = _TableRun(prober, target)
            run.run()
            report.results.extend(run.results)
            report.not_probed.extend(run.not_probed)
            report.tables.append(target.qualified)
            report.kinds[target.qualified] = target.kind
            report.table_seconds[target.qualified] = time.perf_counter() - t0
        report.warnings = list(dict.fromkeys(prober.warnings))
        report.seconds = time.perf_counter() - started
        return report
    except psycopg.Error as exc:
        msg = mask_secrets(_Outcome(error=exc).message, dsn)
        if conn.broken or conn.closed:
            raise ConnectionError_(f"lost the connection to {describe_dsn(dsn)}: {msg}") from None
        raise DbguardError(f"isolation probe failed on {describe_dsn(dsn)}: {msg}") from None
    finally:
        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE and not conn.closed:
                conn.rollback()
        finally:
            conn.close()
