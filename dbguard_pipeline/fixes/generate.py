"""Fix migrations from templates: one planner per action, each returning a :class:`Migration` with its
forward and exact rollback blocks, or raising :class:`NothingToFix` (exit 0, nothing written) or a
one-line :class:`DbguardError` (exit 2, nothing written).

Planners read the schema snapshot; the few data checks that must happen before anything is written
(orphans that would make VALIDATE fail, rows that reach no tenant) run in read-only sessions.
Every identifier is quoted with psycopg's ``sql.Identifier``; every value with ``sql.Literal``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError, NotFoundError
from dbguard_pipeline.model.schema import Constraint, Policy, Snapshot, Table
from dbguard_pipeline.model.findings import Finding
from dbguard_pipeline.semantics import tenancy
from dbguard_pipeline.rules import fix_actions, rules_tagged
from dbguard_pipeline.fixes.plan import ACTIONS, Block, Migration
from dbguard_pipeline.fixes.sql import (checked_type, comment_safe, ident, literal, pg_name, qname, role_name, tenant_context)

BATCH_SIZE = 5_000

# Finding rule id -> the action that fixes it (used by --all and by the Dagster sensor): from the rule specs.
FIXABLE: dict[str, str] = fix_actions()
RLS_RULES = tuple(k for k, v in FIXABLE.items() if v == "fix-rls-policy")
# rules whose finding names a policy that fix-rls-policy replaces
REPLACED_POLICY_RULES = tuple(sorted(rules_tagged("replaces-policy")))


class NothingToFix(Exception):
    """The database already has what the action would create: write nothing, exit 0."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass
class Context:
    snapshot: Snapshot
    config: Config
    dsn: Optional[str] = None  # for the data checks; None skips them (with a note)
    findings: Optional[list[Finding]] = None  # the static rules' findings on this snapshot, when installed
    rules_available: bool = False
    notes: list[str] = field(default_factory=list)

    def table_findings(self, table: Table, rules: Iterable[str]) -> list[Finding]:
        rules = set(rules)
        return [f for f in (self.findings or []) if f.rule in rules and f.schema == table.schema
                and f.table == table.name]


def build_context(snapshot: Snapshot, config: Config, dsn: Optional[str] = None) -> Context:
    """A planning context with the audit's static findings (those the config ignores left out), when the rule
    modules are installed."""
    from dbguard_pipeline.audit import split_ignored, static_findings
    from dbguard_pipeline.rules import all_rules

    registry = all_rules()
    available = all(r in registry for r in ("weak_rls_policy", "missing_with_check"))
    findings, _ignored = split_ignored(static_findings(snapshot, config), config)
    return Context(snapshot=snapshot, config=config, dsn=dsn, findings=findings, rules_available=available)


# --------------------------------------------------------------------------- shared helpers
def resolve_table(snapshot: Snapshot, name: str) -> Table:
    t = snapshot.table(name)
    if t is None:
        candidates = [x.qualified for x in snapshot.tables if x.name == name]
        if len(candidates) > 1:
            raise DbguardError(f"table name {name!r} is ambiguous: {', '.join(sorted(candidates))} (use schema.table)")
        raise NotFoundError(f"table not found: {name!r} (in {snapshot.database}; use schema.table)")
    if t.kind == "partition":
        raise DbguardError(f"{t.qualified} is a partition of {t.parent}: run the action on the partitioned table")
    return t


def _why(findings: Sequence[Finding]) -> list[str]:
    return [f"{f.rule} ({f.severity.value}) {f.cache_key}: {f.message}" for f in findings]


def _relation_names(snapshot: Snapshot, schema: str) -> set[str]:
    names = set()
    for t in snapshot.tables:
        if t.schema == schema:
            names.add(t.name)
            names.update(i.name for i in t.indexes)
            names.update(c.name for c in t.constraints if c.kind in ("primary_key", "unique", "exclusion"))
    names.update(v.name for v in snapshot.views if v.schema == schema)
    return names


def _unique_name(taken: set[str], base: str, suffix: str, salt: str) -> str:
    name = pg_name(base, suffix)
    if name not in taken:
        return name
    digest = hashlib.sha256(salt.encode("utf-8")).hexdigest()[:6]
    name = pg_name(f"{base}_{digest}", suffix)
    if name in taken:
        raise DbguardError(f"cannot find a free name for {base}_{suffix}")
    return name


def _constraint_names(table: Table) -> set[str]:
    return {c.name for c in table.constraints}


def _check_role(ctx: Context) -> str:
    role = ctx.config.tenant.app_role
    if ctx.snapshot.roles and ctx.snapshot.role(role) is None and role != "public":
        raise DbguardError(f"the application role {role!r} (config tenant.app_role) does not exist in "
                           f"{ctx.snapshot.database}")
    return role


def _index_leads_with(table: Table, columns: Sequence[str]) -> bool:
    cols = tuple(columns)
    for ix in table.indexes:
        if ix.valid and ix.predicate is None and tuple(ix.columns[: len(cols)]) == cols:
            return True
    return False


def _create_policy(schema: str, table: str, p: Policy) -> str:
    parts = [f"CREATE POLICY {ident(p.name)} ON {qname(schema, table)}",
             f"    AS {'PERMISSIVE' if p.permissive else 'RESTRICTIVE'} FOR {p.command.upper()}",
             f"    TO {', '.join(role_name(r) for r in p.roles)}"]
    if p.using is not None:
        parts.append(f"    USING ({p.using})")
    if p.with_check is not None:
        parts.append(f"    WITH CHECK ({p.with_check})")
    return "\n".join(parts)


def _drop_policy(schema: str, table: str, name: str) -> str:
    return f"DROP POLICY IF EXISTS {ident(name)} ON {qname(schema, table)}"


def _data_value(ctx: Context, query: sql.Composable) -> Optional[int]:
    """One number from the database in a read-only session, or None without a DSN."""
    if not ctx.dsn:
        return None
    from dbguard_pipeline.pg.session import read_only_session

    with read_only_session(ctx.dsn, statement_timeout_ms=ctx.config.statement_timeout_ms,
                           lock_timeout_ms=ctx.config.lock_timeout_ms) as conn:
        # no parameters: values are embedded as literals, so a '%' in a hostile name is never a placeholder
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


# --------------------------------------------------------------------------- RLS part (shared)
@dataclass
class _RlsPlan:
    forward: list[str]
    rollback: list[str]
    what: list[str]
    undo: list[str]
    findings: list[Finding]


def _weak_policies(ctx: Context, table: Table, column: str, findings: list[Finding]) -> list[Policy]:
    from dbguard_pipeline.fixes.policies import policy_is_weak

    if ctx.rules_available:
        flagged = {f.object for f in findings if f.rule in REPLACED_POLICY_RULES and f.object}
        unknown = flagged - {p.name for p in table.policies}
        weak = [p for p in table.policies if p.name in flagged]
        if unknown or any(f.rule in REPLACED_POLICY_RULES and not f.object for f in findings):
            weak += [p for p in table.policies if p not in weak and policy_is_weak(p, column, ctx.config)]
        return sorted(weak, key=lambda p: p.name)
    return [p for p in table.policies if policy_is_weak(p, column, ctx.config)]


def _rls_plan(ctx: Context, table: Table, column: str, col_type: str, *, adding_column: bool) -> Optional[_RlsPlan]:
    """Enable (and FORCE) RLS, replace weak or unsafe policies by one tenant policy for every command."""
    from dbguard_pipeline.fixes.policies import policy_is_weak

    cfg = ctx.config
    role = _check_role(ctx)
    findings = ctx.table_findings(table, RLS_RULES)
    force = cfg.tenant.app_role_owns_tables or table.owner == cfg.tenant.app_role
    weak = _weak_policies(ctx, table, column, findings)
    kept = [p for p in table.policies if p not in weak]
    policy_name = pg_name(table.name, "tenant_isolation")
    name_kept = any(p.name == policy_name for p in kept)
    create = not name_kept and (bool(weak) or not kept or adding_column)
    if not create and not weak and table.rls_enabled and (table.rls_forced or not force):
        return None
    q = qname(table.schema, table.name)
    fwd, back, what, undo = [], [], [], []
    if not table.rls_enabled:
        fwd.append(f"ALTER TABLE {q} ENABLE ROW LEVEL SECURITY")
        what.append(f"enable row level security on {table.qualified}")
        undo.append("disable row level security again")
    if force and not table.rls_forced:
        fwd.append(f"ALTER TABLE {q} FORCE ROW LEVEL SECURITY")
        what.append("force row level security (the application role owns the table)")
        undo.append("remove FORCE ROW LEVEL SECURITY")
    for p in weak:
        fwd.append(_drop_policy(table.schema, table.name, p.name))
        what.append(f"drop the {'weak' if policy_is_weak(p, column, cfg) else 'unsafe'} policy {ident(p.name)} "
                    f"({p.command}, TO {', '.join(p.roles)})")
    if create:
        ctx_expr = tenant_context(cfg, col_type)
        fwd.append("\n".join([
            f"CREATE POLICY {ident(policy_name)} ON {q}",
            f"    AS PERMISSIVE FOR ALL TO {role_name(role)}",
            f"    USING ({ident(column)} = {ctx_expr})",
            f"    WITH CHECK ({ident(column)} = {ctx_expr})",
        ]))
        what.append(f"create policy {ident(policy_name)}: FOR ALL TO {role}, USING and WITH CHECK "
                    f"{column} = the current tenant ({'JWT claim' if cfg.tenant.context == 'jwt' else 'setting ' + cfg.tenant.guc})")
        back.append(_drop_policy(table.schema, table.name, policy_name))
        undo.append(f"drop policy {ident(policy_name)}")
    for p in weak:
        back.append(_drop_policy(table.schema, table.name, p.name))
        back.append(_create_policy(table.schema, table.name, p))
        undo.append(f"recreate policy {ident(p.name)} exactly as it was")
    if force and not table.rls_forced:
        back.append(f"ALTER TABLE {q} NO FORCE ROW LEVEL SECURITY")
    if not table.rls_enabled:
        back.append(f"ALTER TABLE {q} DISABLE ROW LEVEL SECURITY")
    return _RlsPlan(fwd, back, what, undo, findings)


# --------------------------------------------------------------------------- fix-rls-policy
def plan_fix_rls_policy(ctx: Context, table_name: str) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    cfg = ctx.config
    column = tenancy.tenant_column(table, cfg)
    if column is None:
        path = tenancy.tenant_path(ctx.snapshot, table, cfg)
        if path:
            via = " -> ".join([table.qualified] + [s.parent.qualified for s in path])
            raise DbguardError(f"{table.qualified} has no {cfg.tenant.column} column (its tenant is reached via {via}): "
                               f"run add-tenant-isolation {table.qualified} first, which also writes its policies")
        raise DbguardError(f"{table.qualified} is not tenant data: it has no {cfg.tenant.column} column and no "
                           "foreign-key path to a table that has one")
    col_type = table.column(column).type
    rls = _rls_plan(ctx, table, column, col_type, adding_column=False)
    if rls is None:
        raise NothingToFix(f"{table.qualified}: RLS is enabled{' and forced' if table.rls_forced else ''} and no "
                           "policy is weak: nothing to fix")
    m = _migration(ctx, "fix-rls-policy", table)
    m.what, m.undo = rls.what, list(reversed(rls.undo))
    m.why = _why(rls.findings)
    m.fixes = [f.cache_key for f in rls.findings]
    m.forward = [Block(tuple(rls.forward), comment="row level security and tenant policies (one transaction)")]
    m.rollback = [Block(tuple(rls.rollback), comment="restore the policies and RLS flags as they were")]
    return m


def _migration(ctx: Context, action: str, table: Table) -> Migration:
    return Migration(action=action, schema=table.schema, table=table.name,
                     lock_timeout_ms=ctx.config.lock_timeout_ms, statement_timeout_ms=ctx.config.statement_timeout_ms,
                     notes=list(ctx.notes))


# --------------------------------------------------------------------------- add-composite-index
def plan_add_composite_index(ctx: Context, table_name: str, column_sets: Sequence[Sequence[str]],
                             findings: Optional[list[Finding]] = None) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    if not column_sets or not all(column_sets):
        raise DbguardError("add-composite-index needs at least one column: add-composite-index TABLE COL1 [COL2 ...]")
    taken = _relation_names(ctx.snapshot, table.schema)
    fwd_blocks, back_blocks, what, undo, skipped = [], [], [], [], []
    seen = set()
    for cols in column_sets:
        cols = tuple(cols)
        missing = [c for c in cols if table.column(c) is None]
        if missing:
            raise NotFoundError(f"{table.qualified} has no column {', '.join(repr(c) for c in missing)}")
        if len(set(cols)) != len(cols):
            raise DbguardError(f"column listed twice in {', '.join(cols)}")
        if cols in seen:
            continue
        seen.add(cols)
        if _index_leads_with(table, cols):
            skipped.append(", ".join(cols))
            continue
        for ix in table.indexes:
            if not ix.valid and tuple(ix.columns[: len(cols)]) == cols:
                raise DbguardError(f"{table.qualified} has an invalid index {ix.name!r} on ({', '.join(cols)}) left "
                                   f"by a failed concurrent build: DROP INDEX CONCURRENTLY {qname(table.schema, ix.name)} first")
        name = _unique_name(taken, f"{table.name}_{'_'.join(cols)}", "idx", "\x00".join(cols))
        taken.add(name)
        col_sql = ", ".join(ident(c) for c in cols)
        fwd_blocks.append(Block((f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {ident(name)} ON {qname(table.schema, table.name)} ({col_sql})",),
                                transactional=False, untimed="all", comment=f"index ({', '.join(cols)}) without blocking writes"))
        back_blocks.insert(0, Block((f"DROP INDEX CONCURRENTLY IF EXISTS {qname(table.schema, name)}",), transactional=False, untimed="all"))
        what.append(f"create index {ident(name)} on {table.qualified} ({', '.join(cols)}) concurrently")
        undo.insert(0, f"drop index {ident(name)} concurrently")
    if not fwd_blocks:
        raise NothingToFix(f"{table.qualified} already has an index leading with ({'; '.join(skipped)}): nothing to fix")
    m = _migration(ctx, "add-composite-index", table)
    m.params = {"column_sets": [list(c) for c in sorted(seen)]}
    if findings is None:
        findings = [f for f in ctx.table_findings(table, ("unindexed_foreign_key", "missing_tenant_index"))
                    if set(_finding_columns(table, f) or ()) & {c for s in seen for c in s[:1]}]
    m.what, m.undo, m.forward, m.rollback = what, undo, fwd_blocks, back_blocks
    m.why, m.fixes = _why(findings), [f.cache_key for f in findings]
    return m


def _finding_columns(table: Table, f: Finding) -> Optional[tuple[str, ...]]:
    """The columns an index finding is about: its detail, its object (a constraint or a column), or None."""
    detail_cols = (f.detail or {}).get("columns")
    if detail_cols:
        return tuple(detail_cols)
    if f.object:
        for c in table.constraints:
            if c.name == f.object:
                return c.columns
        if table.column(f.object):
            return (f.object,)
        parts = tuple(p.strip() for p in f.object.split(","))
        if all(table.column(p) for p in parts):
            return parts
    return None


# --------------------------------------------------------------------------- add-foreign-key
def _single_key(table: Table) -> Optional[str]:
    pk = table.primary_key
    if pk and len(pk.columns) == 1:
        return pk.columns[0]
    for c in table.constraints:
        if c.kind == "unique" and len(c.columns) == 1:
            return c.columns[0]
    return None


def _has_fk(table: Table, cols: tuple[str, ...], ref: Table) -> Optional[Constraint]:
    for fk in table.foreign_keys:
        if fk.columns == cols and fk.ref_schema == ref.schema and fk.ref_table == ref.name:
            return fk
    return None


def _singular_candidates(name: str) -> list[str]:
    out = [name + "s", name, name + "es"]
    if name.endswith("y"):
        out.append(name[:-1] + "ies")
    return out


def _infer_fk(ctx: Context, table: Table, ref_name: Optional[str], column: Optional[str]) -> tuple[str, Table, str]:
    snap, cfg = ctx.snapshot, ctx.config
    tenants = snap.table(cfg.tenant.tenants_table)
    if ref_name:
        ref = resolve_table(snap, ref_name)
        key = cfg.tenant.tenants_key if tenancy.is_tenants_table(ref, cfg) else _single_key(ref)
        if key is None or ref.column(key) is None:
            raise DbguardError(f"{ref.qualified} has no single-column primary key or unique key to reference")
        if column is None:
            guesses = []
            if tenancy.is_tenants_table(ref, cfg):
                guesses.append(cfg.tenant.column)
            base = ref.name
            for suffix in ("ies", "es", "s"):
                if base.endswith(suffix):
                    guesses.append((base[: -len(suffix)] + ("y" if suffix == "ies" else "")) + "_id")
            guesses.append(base + "_id")
            column = next((g for g in guesses if table.column(g)), None)
            if column is None:
                raise DbguardError(f"cannot tell which column of {table.qualified} references {ref.qualified}: "
                                   f"name it: add-foreign-key {table.qualified} {ref.qualified} COLUMN")
        return column, ref, key
    if column is None and tenants is not None and table.column(cfg.tenant.column) and \
            not tenancy.is_tenants_table(table, cfg) and not _has_fk(table, (cfg.tenant.column,), tenants):
        return cfg.tenant.column, tenants, cfg.tenant.tenants_key
    candidates = []
    for col in table.columns:
        if column and col.name != column:
            continue
        if not col.name.endswith("_id") or any(fk.columns == (col.name,) for fk in table.foreign_keys):
            continue
        stem = col.name[:-3]
        if col.name == cfg.tenant.column and tenants is not None:
            candidates.append((col.name, tenants, cfg.tenant.tenants_key))
            continue
        found = None
        for guess in _singular_candidates(stem):
            ref = snap.table(f"{table.schema}.{guess}") or snap.table(guess)
            if ref is not None and ref.qualified != table.qualified and _single_key(ref):
                found = ref
                break
        if found is None:  # image_id -> vehicle_images: a unique table of the schema named *_<stem>s
            suffixes = tuple(f"_{g}" for g in _singular_candidates(stem))
            near = [t for t in snap.tables if t.schema == table.schema and t.name.endswith(suffixes)
                    and t.qualified != table.qualified and _single_key(t)]
            found = near[0] if len(near) == 1 else None
        if found is not None:
            candidates.append((col.name, found, _single_key(found)))
    if not candidates:
        if column is None and tenants is not None and table.column(cfg.tenant.column):
            fk = _has_fk(table, (cfg.tenant.column,), tenants)
            if fk is not None:
                raise NothingToFix(f"{table.qualified}.{cfg.tenant.column} already references {tenants.qualified} "
                                   f"({fk.name}) and no other column lacks its foreign key: nothing to fix")
        if column:
            raise DbguardError(f"cannot infer the table {table.qualified}.{column} references: name it: "
                               f"add-foreign-key {table.qualified} REFTABLE {column}")
        raise NothingToFix(f"{table.qualified}: no column without a foreign key whose referenced table can be "
                           "inferred (name it: add-foreign-key TABLE REFTABLE [COLUMN])")
    if len(candidates) > 1:
        names = ", ".join(f"{c} -> {r.qualified}" for c, r, _ in candidates)
        raise DbguardError(f"{table.qualified} has several columns without a foreign key ({names}): name the "
                           "referenced table: add-foreign-key TABLE REFTABLE [COLUMN]")
    return candidates[0]


def plan_add_foreign_key(ctx: Context, table_name: str, ref_name: Optional[str] = None,
                         column: Optional[str] = None, findings: Optional[list[Finding]] = None) -> Migration:
    table = resolve_table(ctx.snapshot, table_name)
    if column is not None and table.column(column) is None:
        raise NotFoundError(f"{table.qualified} has no column {column!r}")
    column, ref, key = _infer_fk(ctx, table, ref_name, column)
    existing = _has_fk(table, (column,), ref)
    if existing is not None:
        state = "" if existing.validated else " (NOT VALID: run ALTER TABLE ... VALIDATE CONSTRAINT to check old rows)"
        raise NothingToFix(f"{table.qualified}.{column} already references {ref.qualified}: {existing.name}{state}")
    ctype, rtype = table.column(column).type, ref.column(key).type
    if ctype != rtype:
        raise DbguardError(f"{table.qualified}.{column} is {ctype} but {ref.qualified}.{key} is {rtype}: "
                           "the foreign key needs the same type")
    # Rows that would make VALIDATE fail: report them before writing anything.
    orphans = _data_value(ctx, sql.SQL(
        "select count(*) from {t} c where c.{col} is not null and not exists "
        "(select 1 from {r} p where p.{key} = c.{col})").format(
        t=sql.Identifier(table.schema, table.name), col=sql.Identifier(column),
        r=sql.Identifier(ref.schema, ref.name), key=sql.Identifier(key)))
    if orphans:
        raise DbguardError(f"cannot add the foreign key {table.qualified}({column}) -> {ref.qualified}({key}): "
                           f"{orphans} row{'s' if orphans != 1 else ''} of {table.qualified} reference a missing "
                           f"{ref.qualified} row and would make VALIDATE fail; fix or delete them first")
    if orphans is None:
        ctx.notes.append("orphans were not counted (no database connection): VALIDATE fails if any exist")
    q = qname(table.schema, table.name)
    fk_name = _unique_name(_constraint_names(table) | _relation_names(ctx.snapshot, table.schema),
                           f"{table.name}_{column}", "fkey", ref.qualified)
    m = _migration(ctx, "add-foreign-key", table)
    m.notes = list(ctx.notes)
    m.params = {"ref": ref.qualified, "column": column}
    m.forward = [
        Block((f"ALTER TABLE {q} ADD CONSTRAINT {ident(fk_name)} FOREIGN KEY ({ident(column)}) "
               f"REFERENCES {qname(ref.schema, ref.name)} ({ident(key)}) NOT VALID",),
              comment="new and updated rows are checked from now on; the short lock does not scan the table"),
        Block((f"ALTER TABLE {q} VALIDATE CONSTRAINT {ident(fk_name)}",),
              comment="check the existing rows without blocking reads or writes"),
    ]
    m.what = [f"add foreign key {ident(fk_name)}: {table.qualified}({column}) -> {ref.qualified}({key}), "
              "NOT VALID then VALIDATE"]
    m.undo = []
    m.rollback = []
    if not _index_leads_with(table, (column,)):
        idx = _unique_name(_relation_names(ctx.snapshot, table.schema), f"{table.name}_{column}", "idx", column)
        m.forward.append(Block((f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {ident(idx)} ON {q} ({ident(column)})",),
                               transactional=False, untimed="all", comment=f"index the referencing column ({column})"))
        m.rollback.append(Block((f"DROP INDEX CONCURRENTLY IF EXISTS {qname(table.schema, idx)}",), transactional=False, untimed="all"))
        m.what.append(f"create index {ident(idx)} on ({column}) concurrently (no index leads with it)")
        m.undo.append(f"drop index {ident(idx)} concurrently")
    m.rollback.append(Block((
        f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {ident(fk_name)}",),
        comment="the constraint did not exist before the forward migration"))
    m.undo.append(f"drop constraint {ident(fk_name)}")
    if findings is None:
        rules = ("tenant_fk_missing", "orphaned_rows") if column == ctx.config.tenant.column else ("orphaned_rows",)
        findings = [f for f in ctx.table_findings(table, rules) if f.object in (None, column, fk_name)
                    or f.rule == "tenant_fk_missing"]
        if column == ctx.config.tenant.column:
            findings = [f for f in findings if f.rule == "tenant_fk_missing"]
    m.why, m.fixes = _why(findings), [f.cache_key for f in findings]
    return m


# --------------------------------------------------------------------------- add-tenant-isolation
def _path_join(snap_path: list[tenancy.FkStep], table: Table, config: Config) -> tuple[str, str]:
    """FROM/JOIN text from ``table`` (alias s0) along the path, and the expression of the tenant at its end."""
    parts = [f"{qname(table.schema, table.name)} AS s0"]
    prev = "s0"
    for i, step in enumerate(snap_path, start=1):
        alias = f"p{i}"
        conds = " AND ".join(f"{alias}.{ident(rc)} = {prev}.{ident(cc)}"
                             for cc, rc in zip(step.constraint.columns, step.constraint.ref_columns))
        parts.append(f"JOIN {qname(step.parent.schema, step.parent.name)} AS {alias} ON {conds}")
        prev = alias
    end = snap_path[-1].parent
    return "\n".join(parts), f"{prev}.{ident(tenancy.tenant_column(end, config))}"


def _dollar_tag(body: str) -> str:
    tag, n = "$dbguard$", 0
    while tag in body:
        n += 1
        tag = f"$dbguard{n}$"
    return tag


def plan_add_tenant_isolation(ctx: Context, table_name: str, tenant_default: Optional[str] = None) -> Migration:
    snap, cfg = ctx.snapshot, ctx.config
    tm = cfg.tenant
    table = resolve_table(snap, table_name)
    if tenancy.is_tenants_table(table, cfg):
        raise DbguardError(f"{table.qualified} is the tenants table itself (config tenant.tenants_table)")
    column = tm.column
    if table.column(column) is not None:
        raise NothingToFix(f"{table.qualified} already has a {column} column: for its policies run fix-rls-policy, "
                           "for its foreign key add-foreign-key")
    tenants = snap.table(tm.tenants_table)
    if tenants is None or tenants.column(tm.tenants_key) is None:
        raise DbguardError(f"the tenants table {tm.tenants_table}({tm.tenants_key}) (config tenant.tenants_table) "
                           f"is not in {snap.database}")
    col_type = checked_type(tenants.column(tm.tenants_key).type)
    _check_role(ctx)
    path = tenancy.tenant_path(snap, table, cfg)
    q = qname(table.schema, table.name)
    tq = qname(tenants.schema, tenants.name)
    default_sql = None
    if tenant_default is not None:
        default_sql = f"{literal(tenant_default)}::{col_type}"
        if ctx.dsn:
            try:
                found = _data_value(ctx, sql.SQL("select count(*) from {t} where {k} = {v}::{ty}").format(
                    t=sql.Identifier(tenants.schema, tenants.name), k=sql.Identifier(tm.tenants_key),
                    v=sql.Literal(tenant_default), ty=sql.SQL(col_type)))
            except DbguardError:
                raise
            except Exception:
                raise DbguardError(f"--tenant-default {tenant_default!r} is not a valid {col_type}") from None
            if not found:
                raise DbguardError(f"--tenant-default {tenant_default!r}: no such tenant in {tenants.qualified}")
    if path is None and default_sql is None:
        raise DbguardError(f"{table.qualified} has no foreign-key path to a table with a {column} column (or to "
                           f"{tenants.qualified}), so its rows cannot be given a tenant: add that foreign key first, "
                           "or pass --tenant-default TENANT_ID to give every existing row one tenant")
    pk = table.primary_key
    keys = list(pk.columns) if pk else None
    key_sel = ", ".join(f"s0.{ident(k)} AS k{i}" for i, k in enumerate(keys)) if keys else "s0.ctid AS k0"
    key_match = " AND ".join(f"t0.{ident(k)} = src.k{i}" for i, k in enumerate(keys)) if keys else "t0.ctid = src.k0"
    col = ident(column)

    if path:
        joins, tenant_expr = _path_join(path, table, cfg)
        unresolved = None
        if ctx.dsn:
            lefts = joins.replace("JOIN ", "LEFT JOIN ")
            unresolved = _data_value(ctx, sql.SQL(f"select count(*) from {lefts} where {tenant_expr} is null"))
        if unresolved and default_sql is None:
            via = " -> ".join([table.qualified] + [s.parent.qualified for s in path])
            raise DbguardError(f"{unresolved} row{'s' if unresolved != 1 else ''} of {table.qualified} reach no tenant "
                               f"through {via} (NULL or dangling references): fix them first, or pass "
                               "--tenant-default TENANT_ID to give them one tenant")
        select = (f"SELECT {key_sel}, {tenant_expr} AS tenant\n"
                  f"      FROM {joins.replace(chr(10), chr(10) + '      ')}\n"
                  f"      WHERE s0.{col} IS NULL AND {tenant_expr} IS NOT NULL")
        fill_batch = (f"UPDATE {q} AS t0 SET {col} = src.tenant\n"
                      f"    FROM ({select}\n      LIMIT {BATCH_SIZE}) AS src\n"
                      f"    WHERE {key_match}")
        fill_rest = (f"UPDATE {q} AS t0 SET {col} = src.tenant\n"
                     f"    FROM ({select}) AS src\n    WHERE {key_match}")
        source = "through " + " -> ".join([table.qualified] + [f"{s.parent.qualified}" for s in path])
    else:
        fill_batch = fill_rest = None
        source = f"with the tenant {tenant_default}"
    default_batch = default_rest = None
    if default_sql is not None:
        ksel = ", ".join(f"s0.{ident(k)} AS k{i}" for i, k in enumerate(keys)) if keys else "s0.ctid AS k0"
        default_batch = (f"UPDATE {q} AS t0 SET {col} = {default_sql}\n"
                         f"    FROM (SELECT {ksel} FROM {q} AS s0 WHERE s0.{col} IS NULL LIMIT {BATCH_SIZE}) AS src\n"
                         f"    WHERE {key_match}")
        default_rest = f"UPDATE {q} SET {col} = {default_sql} WHERE {col} IS NULL"

    loops = []
    for stmt in (fill_batch, default_batch):
        if stmt:
            loops.append("  LOOP\n    " + stmt.replace("\n", "\n    ") + ";\n"
                         "    GET DIAGNOSTICS batch_rows = ROW_COUNT;\n"
                         "    EXIT WHEN batch_rows = 0;\n"
                         "    COMMIT;\n"
                         "  END LOOP;")
    body = "\nDECLARE\n  batch_rows bigint;\nBEGIN\n" + "\n".join(loops) + "\nEND\n"
    tag = _dollar_tag(body)
    backfill = f"DO {tag}{body}{tag}"

    taken = _constraint_names(table) | _relation_names(snap, table.schema)
    fk_name = _unique_name(taken, f"{table.name}_{column}", "fkey", "fk")
    chk_name = _unique_name(taken | {fk_name}, f"{table.name}_{column}", "not_null", "nn")
    idx_name = _unique_name(_relation_names(snap, table.schema) | {fk_name, chk_name}, f"{table.name}_{column}", "idx", "ix")

    catch_up = [f"ALTER TABLE {q} ADD CONSTRAINT {ident(chk_name)} CHECK ({col} IS NOT NULL) NOT VALID",
                f"ALTER TABLE {q} ADD CONSTRAINT {ident(fk_name)} FOREIGN KEY ({col}) REFERENCES {tq} "
                f"({ident(tm.tenants_key)}) NOT VALID"]
    if fill_rest:
        catch_up.append(fill_rest)
    if default_rest:
        catch_up.append(default_rest)

    # The table as it will be: the new column, for the RLS planner.
    from dbguard_pipeline.model.schema import Column
    import dataclasses

    future = dataclasses.replace(table, columns=table.columns + (Column(name=column, type=col_type, not_null=True),))
    rls = _rls_plan(ctx, future, column, col_type, adding_column=True)

    m = _migration(ctx, "add-tenant-isolation", table)
    m.params = {"tenant_default": tenant_default}
    m.forward = [
        Block((f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS {col} {col_type}",
               f"ALTER TABLE {q} ALTER COLUMN {col} SET DEFAULT {tenant_context(cfg, col_type, for_default=True)}"),
              comment="1. the tenant column (nullable, no rewrite); new rows take the tenant from the context"),
        Block((backfill,), transactional=False, untimed="statement",
              comment=f"2. fill it {source}, {BATCH_SIZE} rows per transaction"),
        Block(tuple(catch_up),
              comment="3. from now on every row needs a tenant (checked for new rows only), and the rows written\n"
                      "   during step 2 are filled under the same lock"),
        Block((f"ALTER TABLE {q} VALIDATE CONSTRAINT {ident(fk_name)}",),
              comment="4. check the existing rows reference a tenant, without blocking reads or writes"),
        Block((f"ALTER TABLE {q} VALIDATE CONSTRAINT {ident(chk_name)}",),
              comment="5. check every row has a tenant, without blocking reads or writes"),
        Block((f"ALTER TABLE {q} ALTER COLUMN {col} SET NOT NULL",
               f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {ident(chk_name)}"),
              comment="6. NOT NULL without a scan (the validated CHECK proves it); the CHECK is then redundant"),
        Block((f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {ident(idx_name)} ON {q} ({col})",), transactional=False,
              untimed="all", comment="7. index the tenant column without blocking writes"),
        Block(tuple(rls.forward), comment="8. row level security and the tenant policy"),
    ]
    m.rollback = [
        Block(tuple(rls.rollback), comment="policies and RLS flags as they were"),
        Block((f"DROP INDEX CONCURRENTLY IF EXISTS {qname(table.schema, idx_name)}",), transactional=False,
              untimed="all"),
        Block((f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {ident(fk_name)}",
               f"-- squawk-ignore ban-drop-constraint\nALTER TABLE {q} DROP CONSTRAINT IF EXISTS {ident(chk_name)}",
               f"-- squawk-ignore ban-drop-column\nALTER TABLE {q} DROP COLUMN IF EXISTS {col}"),
              comment="the column and its constraints did not exist before the forward migration"),
    ]
    m.what = [f"add column {column} {col_type} to {table.qualified}, default: the current tenant",
              f"fill it {source} in batches of {BATCH_SIZE}",
              f"foreign key {ident(fk_name)} -> {tenants.qualified}({tm.tenants_key}), NOT VALID then VALIDATE",
              f"NOT NULL through the validated CHECK {ident(chk_name)}",
              f"index {ident(idx_name)} on ({column}) concurrently"] + rls.what
    m.undo = list(reversed(rls.undo)) + [f"drop index {ident(idx_name)}", f"drop the column {column} and its constraints"]
    findings = ctx.table_findings(table, ("missing_tenant_column",)) + rls.findings
    m.why, m.fixes = _why(findings), [f.cache_key for f in findings]
    if not findings:
        m.why = [f"{table.qualified} holds tenant data (it reaches {tenants.qualified} through foreign keys) but has no "
                 f"{column} column" if path else f"{table.qualified} has no {column} column"]
    return m


# --------------------------------------------------------------------------- dispatch
def replan(ctx: Context, m: Migration) -> Migration:
    """Plan the same action again (on a newer snapshot): NothingToFix once the migration has been applied."""
    table = f"{m.schema}.{m.table}"
    if m.action == "add-composite-index":
        return plan_add_composite_index(ctx, table, m.params.get("column_sets") or [])
    if m.action == "add-foreign-key":
        return plan_add_foreign_key(ctx, table, m.params.get("ref"), m.params.get("column"))
    if m.action == "fix-rls-policy":
        return plan_fix_rls_policy(ctx, table)
    return plan_add_tenant_isolation(ctx, table, m.params.get("tenant_default"))


def plan_action(ctx: Context, action: str, table: str, args: Sequence[str] = (),
                tenant_default: Optional[str] = None) -> Migration:
    if action not in ACTIONS:
        raise DbguardError(f"unknown action {action!r} (choose from {', '.join(ACTIONS)})")
    args = list(args)
    if action == "add-composite-index":
        return plan_add_composite_index(ctx, table, [args])
    if action == "add-foreign-key":
        if len(args) > 2:
            raise DbguardError("add-foreign-key takes TABLE [REFTABLE [COLUMN]]")
        return plan_add_foreign_key(ctx, table, args[0] if args else None, args[1] if len(args) > 1 else None)
    if args:
        raise DbguardError(f"{action} takes only TABLE (got extra arguments: {' '.join(args)})")
    if action == "fix-rls-policy":
        return plan_fix_rls_policy(ctx, table)
    return plan_add_tenant_isolation(ctx, table, tenant_default)


@dataclass
class PlanAll:
    migrations: list[Migration]
    skipped: list[str]  # one line each: a group with nothing to fix, a fix already pending, or why it cannot be fixed


def plan_all(ctx: Context, findings: Optional[Iterable[Finding]] = None, pending_fixes: Iterable[str] = (),
             tenant_default: Optional[str] = None) -> PlanAll:
    """One migration per (action, table) over the fixable findings that no pending migration file fixes."""
    findings = list(ctx.findings or [] if findings is None else findings)
    pending = set(pending_fixes)
    groups: dict[tuple[str, str, str], list[Finding]] = {}
    skipped: list[str] = []
    for f in findings:
        action = FIXABLE.get(f.rule)
        if action is None:
            continue
        if f.cache_key in pending or comment_safe(f.cache_key) in pending:
            skipped.append(f"{f.cache_key}: a migration for it is already in the folder")
            continue
        groups.setdefault((action, f.schema, f.table), []).append(f)
    out: list[Migration] = []
    for (action, schema, table_name), group in sorted(groups.items()):
        qualified = f"{schema}.{table_name}"
        ctx.notes = []
        try:
            if action == "add-composite-index":
                table = resolve_table(ctx.snapshot, qualified)
                sets = []
                for f in group:
                    cols = _finding_columns(table, f)
                    if cols is None and f.rule == "missing_tenant_index":
                        cols = (ctx.config.tenant.column,)
                    if cols:
                        sets.append(cols)
                m = plan_add_composite_index(ctx, qualified, sets, findings=group)
            elif action == "add-foreign-key":
                table = resolve_table(ctx.snapshot, qualified)
                m = plan_add_foreign_key(ctx, qualified, ctx.config.tenant.tenants_table, ctx.config.tenant.column,
                                         findings=group)
            elif action == "fix-rls-policy":
                m = plan_fix_rls_policy(ctx, qualified)
            else:
                m = plan_add_tenant_isolation(ctx, qualified, tenant_default)
        except NothingToFix as exc:
            skipped.append(f"{action} {qualified}: {exc}")
            continue
        except DbguardError as exc:
            skipped.append(f"{action} {qualified}: cannot fix: {exc}")
            continue
        keys = {f.cache_key for f in group}
        m.fixes = sorted(set(m.fixes) | keys)
        if not m.why:
            m.why = _why(group)
        out.append(m)
    return PlanAll(out, skipped)
