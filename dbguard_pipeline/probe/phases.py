"""The probes of views, the "join another tenant" INSERT, and the phases a relation is probed in
(``TABLE_PHASES``, ``VIEW_PHASES``): the probes of tables are in :mod:`.probes`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from psycopg import sql

from dbguard_pipeline.probe.identity import identity_columns
from dbguard_pipeline.probe.probes import (
    Attempt,
    DeleteOtherTenant,
    InsertForOtherTenant,
    MoveRowToOtherTenant,
    Probe,
    Relation,
    SelectOtherTenant,
    SelectWithoutContext,
    SkipAll,
    UpdateOtherTenant,
    Verdict,
    WriteRows,
    insert_unwritten,
    judge_insert,
    judge_read,
    prepare_reads,
    prepare_writes,
    stored_of_b,
)
from dbguard_pipeline.probe.rows import Candidate, lit
from dbguard_pipeline.probe.session import Outcome


# --------------------------------------------------------------------------- join another tenant
class JoinOtherTenant(Probe):
    """INSERT a row of tenant B that names tenant A's own user in every column that holds the acting user (the
    columns the table's policies compare with the caller's identity, or that reference a users table): a
    membership table whose INSERT policy checks only the user lets A's user join tenant B, and then read
    everything of B. Runs only on tables with such columns, when a user of tenant A is known."""

    name, command = "join_other_tenant", "insert"

    def __init__(self) -> None:
        self._cands: dict[str, tuple[tuple[str, ...], Candidate]] = {}

    def plan(self, rel: Relation, fx: WriteRows) -> Union[Attempt, str, None]:
        cols = identity_columns(rel.session.analyzer, rel.table, rel.rows.row_tenancy)
        if not cols:
            return None  # nothing on this table names the acting user
        users = self.users_of_a(rel, cols)
        if users is None:
            return (
                f"{rel.q} has columns that hold the acting user ({', '.join(cols)}), but no user of tenant A "
                f"is known to put in them"
            )
        cand = rel.rows.candidate(rel.table, rel.tenants.b, override=users, prove=fx.null_insert is None)
        if cand.stmt is None:
            return cand.why
        self._cands[rel.q] = (cols, cand)  # for judge, which runs next
        shape = f"INSERT INTO {rel.q} ({', '.join(cols)}, ...) VALUES (<tenant A's user>, ..., <tenant B>)"
        attempt = Attempt(rel.tenants.a, cand.stmt, shape, measure=stored_of_b(rel, cand.values))
        return insert_unwritten(rel, fx, cand, attempt)

    @staticmethod
    def users_of_a(rel: Relation, cols: tuple[str, ...]) -> Optional[dict[str, str]]:
        """Tenant A's user (the one sent as ``sub``), else the users a row of tenant A of this table names."""
        if rel.tenants.user_a:
            return {c: rel.tenants.user_a for c in cols}
        t = rel.table
        row = rel.session.conn.execute(
            sql.SQL("SELECT {} FROM {} AS t WHERE {} AND {} LIMIT 1").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("t", c)) for c in cols),
                sql.Identifier(t.schema, t.name),
                rel.rows.row_tenancy.pred(t, rel.tenants.a),
                sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier("t", c)) for c in cols),
            )
        ).fetchone()
        return dict(zip(cols, row, strict=True)) if row else None

    def judge(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Verdict:
        cols, cand = self._cands.pop(rel.q)
        what = f"INSERT into {rel.q} of a row of tenant B naming tenant A's own user ({', '.join(cols)})"
        return judge_insert(
            rel, cand, attempt, out, what, f"{what} succeeded: tenant A's user made himself a member of tenant B"
        )


# --------------------------------------------------------------------------- views
@dataclass(frozen=True)
class ViewRows:
    what: str  # "view" | "materialized view"
    total: int  # rows the view shows the connecting role (at most the sample size)


def prepare_view(rel: Relation, _previous: object = None) -> ViewRows:
    what = "materialized view" if rel.target.kind == "materialized view" else "view"
    total = rel.scalar(rel.count_sample())
    if total == 0:
        raise SkipAll(f"the {what} {rel.q} shows no rows even to the connecting role: nothing to leak")
    return ViewRows(what, total)


class ViewSelectWithoutContext(Probe):
    """With no tenant context at all, does the view show anything? (One that runs with its owner's rights
    shows every tenant's rows.)"""

    name, command = "select_without_context", "select"

    def plan(self, rel: Relation, fx: ViewRows) -> Union[Attempt, str]:
        return Attempt(None, rel.count_sample(), f"SELECT count(*) FROM {rel.q}", targeted=fx.total)

    def judge(self, rel: Relation, fx: ViewRows, attempt: Attempt, out: Outcome) -> Verdict:
        return judge_read(rel, attempt, out, rel.no_context, f"SELECT on {fx.what} {rel.q}")


class ViewSelectOtherTenant(Probe):
    """SELECT tenant B's rows of the view (by its tenant column) with tenant A's context."""

    name, command = "select_other_tenant", "select"

    def plan(self, rel: Relation, fx: ViewRows) -> Union[Attempt, str]:
        column = rel.session.tm.column
        tc_type = rel.session.view_tenant_columns.get(rel.target.qualified)
        if tc_type is None:
            return f"the {fx.what} has no {column} column, so tenant B's rows cannot be told apart in it"
        count_b = rel.count_sample(sql.SQL("{} = {}").format(sql.Identifier(column), lit(rel.tenants.b, tc_type)))
        n_b = rel.scalar(count_b)
        if n_b == 0:
            return f"the {fx.what} shows no rows of tenant B even to the connecting role"
        return Attempt(rel.tenants.a, count_b, f"SELECT * FROM {rel.q} WHERE {column} = <tenant B>", targeted=n_b)

    def judge(self, rel: Relation, fx: ViewRows, attempt: Attempt, out: Outcome) -> Verdict:
        return judge_read(rel, attempt, out, rel.as_a, f"SELECT on {fx.what} {rel.q}", of_tenant=" of tenant B")


# --------------------------------------------------------------------------- the probes, in the order they run
Phase = tuple[Callable[[Relation, Any], Any], Sequence[Probe]]  # (prepare its rows, its probes)

TABLE_PHASES: tuple[Phase, ...] = (
    (prepare_reads, (SelectWithoutContext(), SelectOtherTenant())),
    (
        prepare_writes,
        (
            InsertForOtherTenant(),
            JoinOtherTenant(),
            UpdateOtherTenant(blind=False),
            UpdateOtherTenant(blind=True),
            MoveRowToOtherTenant(blind=False),
            MoveRowToOtherTenant(blind=True),
            DeleteOtherTenant(blind=False),
            DeleteOtherTenant(blind=True),
        ),
    ),
)
VIEW_PHASES: tuple[Phase, ...] = ((prepare_view, (ViewSelectWithoutContext(), ViewSelectOtherTenant())),)
