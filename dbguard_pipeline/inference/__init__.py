"""Infer the tenant model of a database from its snapshot (``dbguard init``). Pure: no I/O.

What is decided, and from what (each answer carries its reason, which ``dbguard init`` writes as a comment):

* the tenant column: the column name most tables share as a single-column foreign key to one table (the
  tenants table, whose referenced column is its key); without such keys, the tenant-like column name
  (``tenant_id``, ``org_id``, ...) most tables carry, and a table named after it (``tenants``);
* its type, from the column;
* the context: which setting (``current_setting('...')``), JWT claim path (``auth.jwt() -> 'a' ->> 'b'`` is
  ``a.b``) or context function the existing policies compare the tenant column with -- each candidate is tried
  with the policy analyzer (:mod:`dbguard_pipeline.policy`) and the one that makes the most policies pin the
  tenant wins; membership helpers and subqueries keyed by the caller (``auth.uid()``) mean the JWT context;
* the app role: the role the policies on tenant tables are granted to (not PUBLIC, not a role that bypasses
  RLS), else the role granted the most privileges on them, else the login role owning every tenant table;
* the schemas: the ones holding tenant tables, when that is not just ``public``.

What cannot be decided is listed in :attr:`Inference.undecided` and left at the default.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from pglast import ast
from pglast.enums import A_Expr_Kind

from dbguard_pipeline.config import Config, TenantModel
from dbguard_pipeline.model.schema import Snapshot, Table
from dbguard_pipeline.policy.analyzer import Analyzer
from dbguard_pipeline.policy.context import JWT_CLAIMS_SETTINGS, is_setting_read
from dbguard_pipeline.policy.inline import AUTH_IDENTITY_FUNCS
from dbguard_pipeline.policy.parse import (
    JSON_OPERATORS,
    PolicyParseError,
    const_string,
    func_name,
    operator,
    parse_expression,
    path_keys,
    single_value,
    strip_casts,
    walk,
)
from dbguard_pipeline.semantics.roles import SUPABASE_BYPASS_JWT_ROLES, bypass_roles
from dbguard_pipeline.text import config_qname, ident, qname, split_qualified

_TENANTISH = re.compile(r"tenant|org|account|company|workspace|team|customer|client", re.I)
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "auth")
# Supabase's API roles that are never "the" application role of a tenant.
_NOT_APP_ROLES = frozenset({"public", "anon", "postgres", *SUPABASE_BYPASS_JWT_ROLES})


@dataclass
class Inference:
    """The inferred tenant model and schemas, each value with the reason it was chosen."""

    tenant: dict[str, object] = field(default_factory=dict)  # TenantModel field -> value
    schemas: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)  # "tenant.column", "schemas", ... -> why
    undecided: list[str] = field(default_factory=list)  # what it could not decide (left at the default)
    notes: list[str] = field(default_factory=list)  # what it saw but the config cannot express

    def config(self) -> Config:
        data: dict = {"tenant": dict(self.tenant)}
        if self.schemas:
            data["schemas"] = list(self.schemas)
        return Config.model_validate(data)


# --------------------------------------------------------------------------- the tenant column
def _candidate_tables(snapshot: Snapshot) -> list[Table]:
    excluded = set(Config().exclude_schemas) | set(_SYSTEM_SCHEMAS)
    return [t for t in snapshot.tables if t.schema not in excluded and t.kind != "partition"]


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("ses", "xes", "ches", "shes")):
        return name[:-2]
    return name[:-1] if name.endswith("s") else name


def _tenant_column(snapshot: Snapshot, tables: list[Table], out: Inference) -> Optional[str]:
    excluded = set(Config().exclude_schemas) | set(_SYSTEM_SCHEMAS)
    edges: dict[tuple[str, str, str], set[str]] = {}  # (column, "schema.table", key) -> referencing tables
    ref_parts: dict[str, tuple[str, str]] = {}  # "schema.table" -> (schema, table)
    for t in tables:
        for c in t.constraints:
            if c.kind != "foreign_key" or len(c.columns) != 1 or len(c.ref_columns) != 1 or not c.ref_table:
                continue
            ref = f"{c.ref_schema or 'public'}.{c.ref_table}"
            ref_parts[ref] = (c.ref_schema or "public", c.ref_table)
            if ref == t.qualified or (c.ref_schema or "public") in excluded:
                continue
            edges.setdefault((c.columns[0], ref, c.ref_columns[0]), set()).add(t.qualified)
    if edges:
        # most referencing tables; then a tenant-like name; then the name, for a stable answer
        def rank(kv: tuple[tuple[str, str, str], set[str]]) -> tuple:
            (c, r, _), users = kv
            named = c in (_singular(ref_parts[r][1]) + "_id", "tenant_id")  # farms <- farm_id
            return (len(users), named, bool(_TENANTISH.search(c) or _TENANTISH.search(r)), -len(c), kv[0])

        (col, ref, key), users = max(edges.items(), key=rank)
        rivals = [k for k, v in edges.items() if len(v) == len(users) and k != (col, ref, key)]
        out.tenant.update(column=col, tenants_table=config_qname(*ref_parts[ref]), tenants_key=key)
        out.reasons["tenant.column"] = (
            f"{len(users)} table{'s reference' if len(users) != 1 else ' references'} "
            f"{qname(*ref_parts[ref])} through a foreign key on {ident(col)}"
        )
        out.reasons["tenant.tenants_table"] = f"the table {col} references"
        out.reasons["tenant.tenants_key"] = f"the column {col} references"
        if rivals:
            out.undecided.append(
                "tenant column: as many tables share "
                + ", ".join(f"{ident(c)} -> {qname(*ref_parts[r])}" for c, r, _ in rivals)
                + f"; chose {ident(col)} -> {qname(*ref_parts[ref])}"
            )
        return col
    # no foreign keys: the tenant-like column name most tables carry
    names: Counter[str] = Counter()
    for t in tables:
        for column in t.columns:
            if column.name.endswith("_id") and _TENANTISH.search(column.name):
                names[column.name] += 1
    if not names:
        out.undecided.append(
            "tenant column: no table references another through a foreign key and no column "
            "has a tenant-like name; kept the default tenant_id"
        )
        return None
    col, n = max(names.items(), key=lambda kv: (kv[1], kv[0]))
    out.tenant["column"] = col
    out.reasons["tenant.column"] = f"no foreign keys: the tenant-like column name {n} tables carry"
    stem = col[: -len("_id")]
    by_name = {t.name: t for t in tables}
    for name in (stem + "s", stem + "es", stem.removesuffix("y") + "ies", stem):
        candidate = by_name.get(name)
        if candidate is not None and candidate.column("id") is not None:
            out.tenant.update(tenants_table=config_qname(candidate.schema, candidate.name), tenants_key="id")
            out.reasons["tenant.tenants_table"] = f"named after {col} (no foreign key says so)"
            out.reasons["tenant.tenants_key"] = "its id column"
            break
    else:
        out.undecided.append(
            f"tenants table: no foreign key on {col} and no table named after it; kept the default public.tenants"
        )
    return col


def _type_of(tables: list[Table], column: str, out: Inference) -> None:
    types = Counter(c.type for t in tables for c in t.columns if c.name == column)
    if not types:
        return
    raw = types.most_common(1)[0][0]
    simple = {"uuid": "uuid", "bigint": "bigint", "integer": "integer", "text": "text"}.get(raw)
    if simple is None and raw.startswith("character varying"):
        simple = "text"
    out.tenant["column_type"] = simple or raw
    out.reasons["tenant.column_type"] = f"the type of {column}" + (f" ({raw})" if simple != raw else "")


# --------------------------------------------------------------------------- the context
def _effective(tables: list[Table]) -> list[Table]:
    """The tables whose policies are in force (RLS on); all of them when none has RLS on."""
    on = [t for t in tables if t.rls_enabled]
    return on or tables


@dataclass(frozen=True)
class _Candidate:
    kind: str  # "guc" | "jwt" | "function"
    value: str


def _jwt_base(node: Optional[ast.Node]) -> bool:
    node = strip_casts(node)
    if isinstance(node, ast.SubLink):
        node = strip_casts(single_value(node.subselect))
    if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_NULLIF:
        node = strip_casts(node.lexpr)  # nullif(...)
    if isinstance(node, ast.FuncCall):
        schema, name = func_name(node)
        if schema == "auth" and name == "jwt":
            return True
        if is_setting_read(node) and node.args:
            return (const_string(node.args[0]) or "").lower() in JWT_CLAIMS_SETTINGS
    return False


def _jwt_path(node: ast.A_Expr) -> Optional[list[str]]:
    """The keys of a ``->``/``->>``/``#>``/``#>>`` chain over the JWT claims, else None."""
    keys: list[str] = []
    cur: Optional[ast.Node] = node
    while isinstance(cur, ast.A_Expr) and operator(cur.name) in JSON_OPERATORS:
        right = cur.rexpr if isinstance(cur.rexpr, ast.Node) else None
        step = [const_string(right) or "?"] if operator(cur.name) in ("->", "->>") else path_keys(right)
        keys = step + keys
        cur = cur.lexpr
    return keys if _jwt_base(cur) and keys and "?" not in keys else None


_READS_JWT = re.compile(r"auth\s*\.\s*(uid|jwt|email)\s*\(|request\.jwt\.claim", re.I)


def _candidates(
    text: str, functions: frozenset[tuple[str, str]], helpers: frozenset[tuple[str, str]]
) -> tuple[list[_Candidate], bool, set[str]]:
    """(context candidates in one policy expression, reads the caller's JWT identity, membership helpers
    called: functions whose body reads the JWT)."""
    try:
        node = parse_expression(text)
    except PolicyParseError:
        return [], False, set()
    found: list[_Candidate] = []
    identity = False
    called: set[str] = set()
    for n in walk(node):
        if isinstance(n, ast.FuncCall):
            schema, name = func_name(n)
            if is_setting_read(n) and n.args:
                guc = (const_string(n.args[0]) or "").lower()
                if guc.startswith("request.jwt.claim."):
                    found.append(_Candidate("jwt", guc[len("request.jwt.claim.") :]))
                elif guc in JWT_CLAIMS_SETTINGS:
                    identity = True
                elif "." in guc:
                    found.append(_Candidate("guc", guc))
            elif schema == "auth" and (name in AUTH_IDENTITY_FUNCS or name == "jwt"):
                identity = True
            elif not n.args and (schema or "public", name) in functions:
                found.append(_Candidate("function", f"{schema or 'public'}.{name}"))
            elif (schema or "public", name) in helpers:
                identity = True
                called.add(f"{schema or 'public'}.{name}")
        elif isinstance(n, ast.A_Expr) and operator(n.name) in JSON_OPERATORS:
            path = _jwt_path(n)
            if path:
                found.append(_Candidate("jwt", ".".join(path)))
    return found, identity, called


def _model(base: dict, cand: Optional[_Candidate]) -> TenantModel:
    data = dict(base)
    if cand is not None and cand.kind == "guc":
        data.update(context="guc", guc=cand.value)
    elif cand is not None and cand.kind == "jwt":
        data.update(context="jwt", jwt_claim=cand.value)
    elif cand is not None:
        data.update(context_functions=(cand.value,))
    return TenantModel.model_validate(data)


def _context(snapshot: Snapshot, tenant_tables: list[Table], out: Inference) -> None:
    user_funcs = frozenset(
        (f.schema, f.name) for f in snapshot.functions if f.schema not in _SYSTEM_SCHEMAS and not f.arguments
    )
    texts: list[tuple[Table, str]] = [
        (t, e) for t in _effective(tenant_tables) for p in t.policies for e in (p.using, p.with_check) if e
    ]
    helpers = frozenset(
        (f.schema, f.name)
        for f in snapshot.functions
        if f.schema not in _SYSTEM_SCHEMAS and f.body and _READS_JWT.search(f.body)
    )
    seen: Counter[_Candidate] = Counter()
    identity = False
    membership: set[str] = set()
    uses: list[set[_Candidate]] = []
    for _, text in texts:
        found, ident, called = _candidates(text, user_funcs, helpers)
        uses.append(set(found))
        seen.update(set(found))
        identity = identity or ident
        membership |= called
    column = str(out.tenant.get("column", "tenant_id"))
    tenants = "{}.{}".format(*split_qualified(str(out.tenant.get("tenants_table", "public.tenants"))))
    key = str(out.tenant.get("tenants_key", "id"))
    base = {k: v for k, v in out.tenant.items() if k in ("column", "column_type", "tenants_table", "tenants_key")}

    def pins(cand: Optional[_Candidate]) -> int:
        # The analyzer names a claim by the last key of its path (context.TenantContext.claim_kind): score a
        # nested claim by that key; the config keeps the whole path (the probes build the nested claims from it).
        scored = _Candidate("jwt", cand.value.rsplit(".", 1)[-1]) if cand and cand.kind == "jwt" else cand
        an = Analyzer(snapshot, tenant=_model(base, scored))
        # only the expressions that use the candidate count: a membership helper pins the tenant whatever the
        # candidate (`auth.jwt() ->> 'email'` in an invitations policy beside them is no tenant claim)
        return sum(
            an.analyze(text, table=t, tenant_column=key if t.qualified == tenants else column).pins_tenant
            for (t, text), used in zip(texts, uses, strict=True)
            if cand is None or cand in used
        )

    scored = sorted(((pins(c), n, c) for c, n in seen.items()), key=lambda x: (-x[0], -x[1], x[2].kind, x[2].value))
    best = scored[0] if scored and scored[0][0] > 0 else None
    if best is not None:
        n_pins, _, cand = best
        how = {
            "guc": f"the setting {cand.value}",
            "jwt": f"the JWT claim {cand.value}",
            "function": f"the function {cand.value}()",
        }[cand.kind]
        why = f"{n_pins} policy expression{'s' if n_pins != 1 else ''} on tenant tables compare {column} with {how}"
        if cand.kind == "guc":
            out.tenant.update(context="guc", guc=cand.value)
            out.reasons["tenant.context"] = "the policies read the tenant from a setting (current_setting)"
            out.reasons["tenant.guc"] = why
        elif cand.kind == "jwt":
            out.tenant.update(context="jwt", jwt_claim=cand.value)
            out.reasons["tenant.context"] = "the policies read the tenant from the request's JWT claims"
            out.reasons["tenant.jwt_claim"] = why
        else:
            out.tenant.update(context="jwt" if identity else "guc", context_functions=[cand.value])
            out.reasons["tenant.context_functions"] = why
            out.reasons["tenant.context"] = (
                "the policies read the caller's JWT (auth.*, request.jwt.claims)"
                if identity
                else "no JWT in the policies"
            )
        others = [c for _, _, c in scored[1:] if c.kind == cand.kind and c.kind != "jwt"]
        if others:
            out.notes.append("other contexts the policies use: " + ", ".join(c.value for c in others))
        return
    if identity:
        out.tenant["context"] = "jwt"
        via = (
            f"the membership helper {', '.join(sorted(membership))}" if membership else "auth.uid()/request.jwt.claims"
        )
        out.reasons["tenant.context"] = (
            f"the policies restrict rows to the caller's tenants through {via} "
            "(membership); the probes sign in as a member"
        )
        out.notes.append(
            "tenancy by membership: no policy compares the tenant column with a setting or a claim; "
            "jwt_claim stays the default (the claim a fix migration would use)"
        )
        return
    out.undecided.append(
        "context: no policy on a tenant table compares the tenant column with a setting, a JWT "
        "claim or a function; kept the default setting app.current_tenant_id"
    )


# --------------------------------------------------------------------------- the app role
def _app_role(snapshot: Snapshot, tenant_tables: list[Table], out: Inference) -> None:
    bypass = bypass_roles(snapshot) | _NOT_APP_ROLES
    policy_roles: Counter[str] = Counter(
        r for t in _effective(tenant_tables) for p in t.policies for r in p.roles if r not in bypass
    )
    if "authenticated" in policy_roles and "authenticated" in {r.name for r in snapshot.roles}:
        role, why = "authenticated", "the policies are granted to it (Supabase's signed-in role)"
    elif policy_roles:
        role, n = policy_roles.most_common(1)[0]
        why = f"{n} polic{'ies are' if n != 1 else 'y is'} granted to it (not PUBLIC, not bypassing RLS)"
    else:
        owners = {t.owner for t in tenant_tables}
        grants: Counter[str] = Counter(
            g.grantee for t in tenant_tables for g in t.grants if g.grantee not in bypass and g.grantee not in owners
        )
        roles = {r.name: r for r in snapshot.roles}
        owner = roles.get(next(iter(owners))) if len(owners) == 1 else None
        if not grants and owner is not None and owner.can_login and owner.name not in bypass:
            # an application that owns its tables (its migrations created them) and queries them itself
            role, why = owner.name, "the policies are granted to PUBLIC; it owns every tenant table and can log in"
        elif not grants:
            out.undecided.append(
                "app role: the policies are granted to PUBLIC and no other role has privileges on "
                "the tenant tables; kept the default authenticated"
            )
            return
        else:
            role, n = grants.most_common(1)[0]
            why = f"the policies are granted to PUBLIC; it holds the most privileges ({n}) on the tenant tables"
    out.tenant["app_role"] = role
    out.reasons["tenant.app_role"] = why
    # (no tenant.app_role_owns_tables: deprecated, the audit reads from the catalog who owns each table)


# --------------------------------------------------------------------------- all of it
def infer(snapshot: Snapshot) -> Inference:
    out = Inference()
    tables = _candidate_tables(snapshot)
    column = _tenant_column(snapshot, tables, out)
    col = column or "tenant_id"
    _type_of(tables, col, out)
    tenants = "{}.{}".format(*split_qualified(str(out.tenant.get("tenants_table", "public.tenants"))))
    tenant_tables = [t for t in tables if t.column(col) is not None or t.qualified == tenants]
    _context(snapshot, tenant_tables, out)
    _app_role(snapshot, tenant_tables, out)
    schemas = sorted({t.schema for t in tenant_tables})
    if schemas and schemas != ["public"]:
        out.schemas = tuple(schemas)
        out.reasons["schemas"] = "the schemas holding the tenant tables"
    return out
