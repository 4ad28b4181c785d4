"""Which policies PostgreSQL cannot evaluate because evaluating them means evaluating themselves again.

When a statement names a table, PostgreSQL's rewriter adds the table's policies for the statement's command
and the current role, then rewrites every subquery of those policies the same way: a table read by a policy
gets its own SELECT policies. A table that comes round again on that path raises "infinite recursion detected
in policy for relation ..." (SQLSTATE 42P17) before the statement runs, whatever the data. Through a SECURITY
INVOKER function the same loop is not seen by the rewriter (the function's query is rewritten when it runs):
it recurses at run time until "stack depth limit exceeded" (54001), as soon as a row is read. A SECURITY DEFINER
function runs its queries as its owner: where row level security does not apply to the owner (it owns the
table and RLS is not forced, or it bypasses RLS) the loop is broken; that is the usual fix.

The policy analyzer (:mod:`dbguard_pipeline.policy`) has no public answer to "which relations does this
expression read", so this module walks the parse tree's RangeVar nodes itself (conservatively: a name it cannot
resolve, a PL/pgSQL body, a function it cannot find is read as reading nothing, so doubt never reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.model.schema import Function, Policy, Table, View
from dbguard_pipeline.rules.context import RuleContext

if TYPE_CHECKING:  # pglast loads with the first expression read
    from pglast import ast

COMMANDS = ("select", "insert", "update", "delete")
_MAX_DEPTH = 8  # functions calling functions, views on views
_MAX_STEPS = 20_000  # node visits per statement checked: a pathological schema is left unreported, not hung


@dataclass(frozen=True)
class Read:
    """A table a policy expression reads, the role row level security is checked for there, and the function
    the read happens in (None: a subquery of the policy itself)."""

    table: Table
    role: str
    function: Optional[str] = None


@dataclass(frozen=True)
class Step:
    table: Table
    policy: Policy
    read: Read


@dataclass(frozen=True)
class Loop:
    """A statement that cannot be evaluated: the chain of policies from the statement's table to the table that
    comes round again (``steps[-1].read.table``)."""

    steps: tuple[Step, ...]
    start: int  # index of the step whose table comes round again

    @property
    def at_run_time(self) -> bool:
        """The loop goes through a function: PostgreSQL recurses at run time (54001), not at rewrite (42P17)."""
        return any(s.read.function for s in self.steps[self.start :])

    @property
    def sqlstate(self) -> str:
        return "54001" if self.at_run_time else "42P17"

    @property
    def error(self) -> str:
        if self.at_run_time:
            return "stack depth limit exceeded"
        return f'infinite recursion detected in policy for relation "{self.steps[-1].read.table.name}"'


def _expressions(table: Table, command: str, policy: Policy) -> list[str]:
    """The expressions of ``policy`` PostgreSQL adds to a ``command`` on ``table``. SELECT policies come in
    for UPDATE and DELETE too (their WHERE clause reads the rows) and for INSERT ... RETURNING / ON CONFLICT,
    which :func:`commands_failing` reports apart."""
    applies = policy.command in ("all", command)
    if command == "select":
        return [policy.using] if applies and policy.using else []
    if command == "insert":
        check = policy.with_check or (policy.using if policy.command == "all" else None)
        return [check] if applies and check else []
    out = [e for e in (policy.using, policy.with_check) if applies and e]
    if policy.command in ("all", "select") and policy.using and policy.using not in out:
        out.append(policy.using)
    return out


class Recursion:
    """The recursion analysis of one audit (held in the RuleContext's memo)."""

    def __init__(self, ctx: RuleContext):
        self.ctx = ctx
        self.snapshot = ctx.snapshot
        self.roles = ctx.roles
        self._views = {v.qualified: v for v in ctx.snapshot.views}
        self._functions: dict[tuple[str, str], list[Function]] = {}
        for f in ctx.snapshot.functions:
            self._functions.setdefault((f.schema, f.name), []).append(f)
            self._functions.setdefault(("", f.name), []).append(f)
        self._reads: dict[tuple[str, str], tuple[Read, ...]] = {}
        self._skip = frozenset(ctx.config.exclude_schemas) | {"pg_catalog", "information_schema"}

    # ------------------------------------------------------------------ what an expression reads
    def reads(self, text: str, role: str) -> tuple[Read, ...]:
        key = (text, role)
        if key not in self._reads:
            from dbguard_pipeline.policy.parse import PolicyParseError, parse_expression

            try:
                node = parse_expression(text)
            except PolicyParseError:
                self._reads[key] = ()
            else:
                out: list[Read] = []
                self._collect(node, role, None, out, 0)
                self._reads[key] = tuple(dict.fromkeys(out))
        return self._reads[key]

    def _collect(self, tree: object, role: str, function: Optional[str], out: list[Read], depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        from pglast import ast

        from dbguard_pipeline.policy.parse import PolicyParseError, parse_statements, walk

        nodes = list(walk(tree))
        ctes = {n.ctename for n in nodes if isinstance(n, ast.CommonTableExpr) and n.ctename}
        for n in nodes:
            if isinstance(n, ast.RangeVar) and n.relname:
                if not n.schemaname and n.relname in ctes:
                    continue
                self._relation(n.schemaname, n.relname, role, function, out, depth)
            elif isinstance(n, ast.FuncCall):
                fn = self._function(n)
                if fn is None or fn.language != "sql" or not fn.body:
                    continue  # PL/pgSQL and C bodies are not read: no finding from what is not seen
                try:
                    body = parse_statements(fn.body)
                except PolicyParseError:
                    continue
                runner = fn.owner if fn.security_definer and fn.owner else role
                self._collect(body, runner, fn.qualified, out, depth + 1)

    def _relation(
        self, schema: Optional[str], name: str, role: str, function: Optional[str], out: list[Read], depth: int
    ) -> None:
        table = self._table(schema, name)
        if table is not None:
            out.append(Read(table, role, function))
            return
        view = self._view(schema, name)
        if view is None or view.materialized:
            return
        runner = role if view.security_invoker else view.owner
        for dep in view.depends_on:
            dschema, _, dname = dep.partition(".")
            self._relation(dschema, dname, runner, function, out, depth + 1)

    def _table(self, schema: Optional[str], name: str) -> Optional[Table]:
        if schema:
            return self.snapshot.table(f"{schema}.{name}")
        return self.snapshot.table(f"public.{name}") or self.snapshot.table(name)

    def _view(self, schema: Optional[str], name: str) -> Optional[View]:
        if schema:
            return self._views.get(f"{schema}.{name}")
        found = self._views.get(f"public.{name}")
        if found is None:
            matches = [v for v in self._views.values() if v.name == name]
            found = matches[0] if len(matches) == 1 else None
        return found

    def _function(self, call: ast.FuncCall) -> Optional[Function]:
        from dbguard_pipeline.policy.parse import func_name

        schema, name = func_name(call)
        if schema in self._skip:
            return None
        nargs = len(call.args or ())
        cands = self._functions.get(("public", name) if not schema else (schema, name)) or (
            self._functions.get(("", name), []) if not schema else []
        )
        cands = [f for f in cands if f.schema not in self._skip and _arg_count(f.arguments) == nargs]
        return cands[0] if len(cands) == 1 else None

    # ------------------------------------------------------------------ the rewriter's walk
    def edges(self, table: Table, role: str, command: str) -> list[tuple[Policy, Read]]:
        """The reads of the policies PostgreSQL adds when ``role`` runs ``command`` on ``table``."""
        if not self.roles.rls_applies(role, table):
            return []
        out: list[tuple[Policy, Read]] = []
        for p in table.policies:
            if not self.roles.policy_applies(p, role):
                continue
            for text in _expressions(table, command, p):
                out.extend((p, r) for r in self.reads(text, role))
        return out

    def loop(self, table: Table, role: str, command: str) -> Optional[Loop]:
        """The first policy loop a ``command`` on ``table`` by ``role`` runs into, or None."""
        path: list[Step] = []
        on_path: dict[tuple[str, str], int] = {(table.qualified, role): 0}
        done: set[tuple[str, str]] = set()
        steps = 0

        def visit(current: Table, who: str, cmd: str) -> Optional[Loop]:
            nonlocal steps
            for policy, read in self.edges(current, who, cmd):
                steps += 1
                if steps > _MAX_STEPS:
                    return None
                key = (read.table.qualified, read.role)
                if not self.roles.rls_applies(read.role, read.table):
                    continue
                path.append(Step(current, policy, read))
                if key in on_path:
                    return Loop(tuple(path), on_path[key])
                if key not in done:
                    on_path[key] = len(path)
                    found = visit(read.table, read.role, "select")
                    if found is not None:
                        return found
                    del on_path[key]
                    done.add(key)
                path.pop()
            return None

        return visit(table, role, command)


def _arg_count(arguments: str) -> int:
    """Arguments of pg_get_function_identity_arguments() text (commas inside parentheses do not count)."""
    if not arguments.strip():
        return 0
    depth, count = 0, 1
    for ch in arguments:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            count += 1
    return count


def recursion(ctx: RuleContext) -> Recursion:
    return ctx.memo("recursion", "", lambda: Recursion(ctx))
