"""The caller's context: which values a policy compares rows with tell who the caller is or which tenant the
caller acts for, however they are spelled.

* a setting read with ``current_setting('app.current_tenant_id')`` (the configured GUC, or any custom setting
  whose name says tenant/org/account/... or user/sub/email), through ``nullif``, casts and ``(select ...)``;
* a Supabase JWT claim (``auth.jwt() ->> 'tenant_id'``, ``request.jwt.claims`` settings, paths such as
  ``#>> '{app_metadata,tenant_id}'``), and Supabase's ``auth.uid()``/``auth.email()``;
* ``current_user`` and friends (where tenants are database roles);
* a function named in the configuration, or a SQL/PL/pgSQL function whose body returns one of these;
* a membership lookup keyed by the caller (:meth:`ContextReader.subquery_kind`, in restriction.py).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, TypeGuard

from pglast import ast
from pglast.enums import A_Expr_Kind, SQLValueFunctionOp, SubLinkType

from dbguard_pipeline.config import TenantModel
from dbguard_pipeline.policy.fold import Folder
from dbguard_pipeline.policy.inline import AUTH_IDENTITY_FUNCS, Functions, bind
from dbguard_pipeline.policy.parse import (
    JSON_OPERATORS,
    Node,
    children,
    const_string,
    func_name,
    operator,
    path_keys,
    single_value,
)
from dbguard_pipeline.policy.scope import Frame, Pass, resolve


class ContextKind(enum.IntEnum):
    """What a value says about the caller. Ordered: TENANT pins more than IDENTITY."""

    ROW = -1  # depends on a row (a column, a parameter): not the caller's context
    IDENTITY = 1  # who the caller is: auth.uid(), current_user, a user setting or claim
    TENANT = 2  # which tenant the caller acts for: the tenant setting or claim, a membership lookup


Kind = Optional[ContextKind]  # None: the value holds no context (a constant, auth.role(), ...)


def is_context(kind: Kind) -> TypeGuard[ContextKind]:
    """The value is the caller's context (not None, not ROW)."""
    return kind is ContextKind.IDENTITY or kind is ContextKind.TENANT


def combine(a: Kind, b: Kind) -> Kind:
    """The kind of a value derived from two parts: a row-dependent part spoils it, else the stronger one."""
    if a is ContextKind.ROW or b is ContextKind.ROW:
        return ContextKind.ROW
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# Names under which tenant ids travel in JWT claims and settings, besides the configured ones.
TENANT_CLAIMS = frozenset(
    {
        "tenant_id",
        "tenant",
        "tenantid",
        "org_id",
        "orgid",
        "org",
        "organization_id",
        "organisation_id",
        "organizationid",
        "organization",
        "organisation",
        "account_id",
        "accountid",
        "team_id",
        "teamid",
        "workspace_id",
        "workspaceid",
        "company_id",
        "companyid",
        "customer_id",
        "client_id",
    }
)
IDENTITY_CLAIMS = frozenset({"sub", "email", "phone", "user_id", "userid", "uid"})
JWT_CLAIMS_SETTINGS = ("request.jwt.claims", "request.jwt.claim")
_TENANTISH = re.compile(r"tenant|org|account|company|workspace|team|customer|client", re.I)
_USERISH = re.compile(r"user|uid|sub\b|email", re.I)
_IDENTITY_SVF = frozenset(
    {
        SQLValueFunctionOp.SVFOP_CURRENT_USER,
        SQLValueFunctionOp.SVFOP_SESSION_USER,
        SQLValueFunctionOp.SVFOP_USER,
        SQLValueFunctionOp.SVFOP_CURRENT_ROLE,
    }
)


def is_identity_function(node: ast.SQLValueFunction) -> bool:
    """``current_user``, ``session_user``, ``user``, ``current_role``."""
    return node.op in _IDENTITY_SVF


def is_setting_read(call: ast.FuncCall) -> bool:
    """A call of ``current_setting(...)``."""
    schema, name = func_name(call)
    return schema in (None, "pg_catalog") and name == "current_setting"


@dataclass(frozen=True)
class TenantContext:
    """How the configured tenant model names the context: its setting, claim, column and functions."""

    guc: str
    column: str
    claims: frozenset[str]
    functions: frozenset[tuple[Optional[str], str]]
    claim_path: tuple[str, ...] = ()  # the configured claim as a JSON path: app_metadata.org -> (app_metadata, org)

    @classmethod
    def of(cls, tenant: TenantModel) -> TenantContext:
        path = tuple(k for k in tenant.jwt_claim.lower().split(".") if k)
        flat = {tenant.jwt_claim.lower()} if len(path) == 1 else set()  # a dotted claim is a path, not a key
        return cls(
            guc=tenant.guc.lower(),
            column=tenant.column.lower(),
            claims=TENANT_CLAIMS | flat | {tenant.column.lower()},
            functions=frozenset(_schema_and_name(n) for n in tenant.context_functions),
            claim_path=path,
        )

    def path_kind(self, path: list[str]) -> Kind:
        """The kind of the JWT claim at ``path``: the configured claim at its real (possibly nested) path is the
        tenant; otherwise the last key decides."""
        if self.claim_path and tuple(k.lower() for k in path) == self.claim_path:
            return ContextKind.TENANT
        return self.claim_kind(path[-1] if path else "")

    def claim_kind(self, key: str) -> Kind:
        k = key.lower()
        if k in self.claims:
            return ContextKind.TENANT
        if k in IDENTITY_CLAIMS:
            return ContextKind.IDENTITY
        if _TENANTISH.search(k) or self.column in k:
            return ContextKind.TENANT  # tenants, tenant_ids, orgs, ...: the tenants the token lists
        return None

    def setting_kind(self, guc: str) -> Kind:
        g = guc.strip().lower()
        if g == self.guc:
            return ContextKind.TENANT
        if g in JWT_CLAIMS_SETTINGS:
            return None
        if g.startswith("request.jwt.claim."):
            return self.claim_kind(g[len("request.jwt.claim.") :])
        if "." not in g:
            return None  # a built-in setting (search_path, role, ...)
        if _USERISH.search(g):
            return ContextKind.IDENTITY
        if _TENANTISH.search(g) or self.column in g:
            return ContextKind.TENANT
        return None

    def is_context_function(self, schema: Optional[str], name: str) -> bool:
        return (
            (schema, name) in self.functions
            or (None, name) in self.functions
            or (schema is None and any(n == name for _, n in self.functions))
        )


def _schema_and_name(name: str) -> tuple[Optional[str], str]:
    """(schema, function) of a config's context_functions entry: ``schema.name`` or SQL-quoted ``"s"."f"``."""
    from dbguard_pipeline.text import split_qualified

    return split_qualified(name, None)


class ContextReader:
    """Classifies the values of one analysis (see the module docstring). Subqueries are left to
    :meth:`subquery_kind`, which restriction.py's :class:`Restrictor` implements."""

    def __init__(self, functions: Functions, tenant: TenantContext, state: Pass):
        self.functions = functions
        self.tenant = tenant
        self.state = state
        self.folder = Folder(functions, state)
        self.fold = self.folder.fold

    def subquery_kind(self, subselect: Optional[Node], frame: Frame) -> Kind:
        raise NotImplementedError

    def binder(self, frame: Frame) -> Callable[[Node], Node]:
        """Prepares call arguments to be placed into a function body (see inline.bind)."""
        return lambda arg: bind(arg, lambda fields: resolve(fields, frame, self.state) if frame.scopes else 0)

    def kind(self, node: Optional[Node], frame: Frame) -> Kind:
        """IDENTITY or TENANT when the expression is (derived only from) the caller's context; None when it
        holds no context; ROW when it depends on a column of an enclosing scope (or a parameter)."""
        if node is None or frame.depth > 40:
            return None
        inner = frame.deeper()
        if isinstance(node, (ast.ColumnRef, ast.ParamRef)):
            return ContextKind.ROW  # a value of the row (or of an enclosing query's row), not the caller's
        if isinstance(node, ast.A_Const):
            return None
        if isinstance(node, ast.SQLValueFunction):
            return ContextKind.IDENTITY if is_identity_function(node) else None
        if isinstance(node, ast.FuncCall):
            return self._call_kind(node, inner)
        if isinstance(node, ast.A_Expr) and operator(node.name) in JSON_OPERATORS:
            jwt, path = self.json_path(node, inner)
            if jwt:
                return self.tenant.path_kind(path)
        if isinstance(node, ast.SubLink):
            if node.subLinkType in (SubLinkType.EXPR_SUBLINK, SubLinkType.ARRAY_SUBLINK):
                return self.subquery_kind(node.subselect, inner)
            return None
        # anything else (casts, nullif, coalesce, CASE, operators, ...): derived from its parts
        kind: Kind = None
        for c in children(node):
            kind = combine(kind, self.kind(c, inner))
            if kind is ContextKind.ROW:
                return kind
        return kind

    def _call_kind(self, call: ast.FuncCall, frame: Frame) -> Kind:
        schema, name = func_name(call)
        args = call.args or ()
        if is_setting_read(call):
            guc = const_string(args[0]) if args else None
            return self.tenant.setting_kind(guc) if guc is not None else None
        if schema == "auth" and name in AUTH_IDENTITY_FUNCS:
            return ContextKind.IDENTITY
        if schema == "auth" and name in ("jwt", "role"):
            return None
        if self.tenant.is_context_function(schema, name):
            return ContextKind.TENANT
        fn = self.functions.find(schema, name, len(args))
        if fn is not None and fn.schema != "pg_catalog":
            inside = frame.inline(fn)
            if inside is None:
                return None
            exprs = self.functions.returns(fn, args, self.binder(frame))
            if not exprs:
                return None
            kinds = [self.kind(e, inside) for e in exprs]
            if any(k is ContextKind.ROW for k in kinds):
                return ContextKind.ROW
            if any(k is None for k in kinds):
                return None
            return min(k for k in kinds if k is not None)
        kind: Kind = None
        for a in args:
            kind = combine(kind, self.kind(a, frame))
        return kind

    def json_path(self, node: Optional[Node], frame: Frame) -> tuple[bool, list[str]]:
        """(reads the JWT, keys) for a chain of ->, ->>, #>, #>> over the JWT claims."""
        if isinstance(node, ast.A_Expr) and operator(node.name) in JSON_OPERATORS:
            jwt, path = self.json_path(node.lexpr, frame.deeper())
            right = node.rexpr if isinstance(node.rexpr, ast.Node) else None
            if operator(node.name) in ("->", "->>"):
                key = const_string(right)
                if key is None:  # a constant expression, or an array index (-> 0); a boolean is no key
                    v = self.fold(right)
                    key = (
                        v if isinstance(v, str) else (str(v) if isinstance(v, int) and not isinstance(v, bool) else "?")
                    )
                return jwt, path + [key]
            return jwt, path + path_keys(right)
        return self.is_jwt(node, frame), []

    def is_jwt(self, node: Optional[Node], frame: Frame) -> bool:
        """The expression is the request's JWT claims (``auth.jwt()``, the ``request.jwt.claims`` setting, a
        function returning it), through casts, nullif, coalesce and ``(select ...)``."""
        if frame.depth > 40:
            return False
        inner = frame.deeper()
        if isinstance(node, ast.TypeCast):
            return self.is_jwt(node.arg, inner)
        if isinstance(node, ast.A_Expr) and node.kind == A_Expr_Kind.AEXPR_NULLIF:
            return self.is_jwt(node.lexpr, inner)
        if isinstance(node, ast.CoalesceExpr):
            return any(self.is_jwt(a, inner) for a in node.args or ())
        if isinstance(node, ast.SubLink) and node.subLinkType == SubLinkType.EXPR_SUBLINK:
            value = single_value(node.subselect)
            return value is not None and self.is_jwt(value, inner)
        if isinstance(node, ast.FuncCall):
            schema, name = func_name(node)
            if schema == "auth" and name == "jwt":
                return True
            if is_setting_read(node):
                guc = const_string(node.args[0]) if node.args else None
                return (guc or "").lower() in JWT_CLAIMS_SETTINGS
            fn = self.functions.find(schema, name, len(node.args or ()))
            inside = frame.inline(fn) if fn is not None and not node.args else None
            if fn is not None and inside is not None:
                exprs = self.functions.returns(fn)
                return bool(exprs) and all(self.is_jwt(e, inside.deeper()) for e in exprs)
        return False
