"""The probes, one small object each: its name, the command it reports as, the statement it builds (or why it
cannot run), and its judge (held, leaked, or not probed, with the witness).

A relation is probed in phases; each phase prepares the rows its probes act on (:class:`ReadRows`,
:class:`WriteRows`, :class:`ViewRows`), then runs its probes in order (``TABLE_PHASES``, ``VIEW_PHASES``).
The read probes count the table's own rows, so the rows the writes target are built only after them.

Longer than 500 lines on purpose: the probes share one vocabulary of verdicts and witnesses, and the phase
lists at the end read as the probe's whole plan; split, each half would import the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

from psycopg import sql

from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.probe.identity import identity_columns
from dbguard_pipeline.probe.report import Target
from dbguard_pipeline.probe.rows import (
    AFTER_POLICY_STATES,
    NO_TEST_ROWS,
    Candidate,
    CannotBuild,
    RowRef,
    Rows,
    insert_sql,
    where_rows,
)
from dbguard_pipeline.probe.session import Outcome, Query, Session
from dbguard_pipeline.probe.tenants import Tenants
from dbguard_pipeline.probe.unwritten import Unwritten, unwritten_column
from dbguard_pipeline.text import ident, plural, qname


def _rows(n: int) -> str:
    return plural(n, "row")


# --------------------------------------------------------------------------- what a probe needs and returns
class SkipAll(Exception):
    """No probe of the relation can run (the message says why)."""


@dataclass(frozen=True)
class Relation:
    """The relation being probed, and what every probe of it works with."""

    session: Session
    rows: Rows
    tenants: Tenants
    target: Target

    @property
    def table(self) -> Table:
        """The table (for the probes of tables)."""
        assert self.target.table is not None
        return self.target.table

    @property
    def q(self) -> str:
        """The relation's name for people: each part quoted when PostgreSQL needs it (``"a""b"."My Table"``)."""
        return qname(self.target.schema, self.target.name)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.target.schema, self.target.name)

    @property
    def as_a(self) -> str:
        note = f" ({self.tenants.stand_in})" if self.tenants.stand_in else ""
        return f"as {ident(self.session.role)} with tenant A{note}"

    @property
    def no_context(self) -> str:
        return f"as {ident(self.session.role)} with no tenant context"

    @property
    def of_b(self) -> str:
        """ " of tenant B", and on a two-party table what that means: B in every party column, A in none."""
        info = self.rows.row_tenancy.info(self.table) if self.target.table is not None else None
        if info is not None and info.parties:
            return f" of tenant B (naming B as {' and '.join(info.parties)}, A as neither)"
        return " of tenant B"

    def count_sample(self, where: Optional[sql.Composable] = None) -> Query:
        """How many rows (at most the sample size) the relation shows, optionally filtered."""
        return sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {}{} LIMIT {}) s").format(
            self.ident,
            sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
            sql.Literal(self.rows.sample),
        )

    def scalar(self, stmt: Query) -> Any:
        return self.session.scalar(stmt)


@dataclass(frozen=True)
class Attempt:
    """A statement to run as the application, and what its judge needs to know about it."""

    tenant: Optional[str]  # the tenant context it runs with (None: no context at all)
    statement: Query
    shape: str  # the statement as the report shows it
    targeted: int = 0  # rows of the other tenant it aims at (reads: rows there are to see)
    measure: Optional[Callable[[], int]] = None  # its effect, counted as the connecting role
    before: Optional[Callable[[], object]] = None  # run first, in the same savepoint
    note: str = ""  # appended to the witness
    # the NOT NULL column the statement sets to NULL, so that a row the policies admit fails before it is
    # written (:mod:`.unwritten`); the real write to run instead when the outcome says anything else
    unwritten: Optional[Unwritten] = None
    # the real write, or how to plan it when it is needed (on fresh test rows, or proving the INSERT valid
    # first): an Attempt, or the verdict when it cannot be made
    fallback: Optional[Union[Attempt, Callable[[], Union[Attempt, Verdict]]]] = None
    stopped: bool = False  # the statement raises STOPPED once a row it targets got through the policies

    def admitted(self, out: Outcome) -> bool:
        """The policies admitted the row and nothing was written (23502 on the column set to NULL), or the
        statement reached a targeted row and stopped there (:data:`STOPPED`)."""
        if self.stopped:
            return out.sqlstate == "22P02" and STOPPED in out.message
        return self.unwritten is not None and self.unwritten.admitted(out)


# A DELETE probe on an existing row proves the policies let it through without deleting it: an expression that
# raises, and names this marker, evaluated only on the rows that passed the policies
# (see ``DeleteOtherTenant._stopping``)
STOPPED = "dbguard probe: the policies let this row through"


def unwritten(attempt: Attempt, u: Optional[Unwritten], statement: Query, shape: str) -> Attempt:
    """``attempt`` with the column ``u`` set to NULL (``statement``, ``shape``), the real write kept as its
    fallback; ``attempt`` itself when there is no such column."""
    if u is None:
        return attempt
    return replace(attempt, statement=statement, shape=shape, unwritten=u, fallback=attempt)


@dataclass(frozen=True)
class Verdict:
    """What a probe found: held, leaked (with the witness), or not probed (with the reason)."""

    isolated: Optional[bool]  # None: not probed
    text: str  # the witness, or why the probe could not run
    shape: str = ""
    rows: int = 0
    warning: str = ""
    state: str = ""  # not probed because of this error state ("policy recursion")


RECURSION = "policy recursion"


def error_state(out: Outcome, what: str) -> Optional[Verdict]:
    """A statement PostgreSQL cannot evaluate (42P17: infinite recursion in a policy): neither held nor leaked;
    the application cannot use the table either (and the usual "fix", RLS off, leaks)."""
    if out.sqlstate == "42P17":
        return Verdict(
            None,
            f"{what} cannot be evaluated: {out.message} (a policy that reads its own table, "
            f"directly or through another table's policy)",
            state=RECURSION,
        )
    return None


def held(text: str, shape: str, warning: str = "") -> Verdict:
    return Verdict(True, text, shape, 0, warning)


def leaked(text: str, shape: str, rows: int = 0) -> Verdict:
    return Verdict(False, text, shape, rows)


def not_probed(reason: str) -> Verdict:
    return Verdict(None, reason)


class Probe(ABC):
    """One probe. ``plan`` returns the attempt, or the reason it cannot run; ``judge`` reads the outcome."""

    name: str = ""  # reported as ProbeResult.probe / NotProbed.probe
    command: str = ""  # select | insert | update | delete: the verdict it counts towards

    @abstractmethod
    def plan(self, rel: Relation, fx: Any) -> Union[Attempt, str, None]:
        """The attempt, the reason it cannot run, or None when the probe does not apply to the relation."""

    def retry(self, rel: Relation, fx: Any, attempt: Attempt, out: Outcome) -> Union[Attempt, Verdict, None]:
        """A second attempt that measures what the first could not (None: the first one stands; a verdict: it
        could not be made): the real write, when the attempt that writes nothing met an error other than a
        refusal or its own 23502."""
        if attempt.fallback is None or out.error is None or out.kind == "refused" or attempt.admitted(out):
            return None
        return attempt.fallback() if callable(attempt.fallback) else attempt.fallback

    @abstractmethod
    def judge(self, rel: Relation, fx: Any, attempt: Attempt, out: Outcome) -> Verdict: ...


# --------------------------------------------------------------------------- judges
def judge_read(
    rel: Relation,
    attempt: Attempt,
    out: Outcome,
    who: str,
    what: str,
    *,
    of_tenant: str = "",
    own: Optional[tuple[int, Optional[int]]] = None,
) -> Verdict:
    if out.kind == "timeout":
        return not_probed(f"{what} did not finish: {out.message}")
    stuck = error_state(out, what)
    if stuck is not None:
        return stuck
    if out.kind == "refused":  # a SELECT is never refused by a policy: the role lacks a privilege
        warning = (
            f"{rel.q}: the application role cannot read it at all ({out.message}): if the application reads "
            f"it, tenant.app_role in the config is not the role its queries run as, and the probes that held "
            f"prove little"
        )
        return held(f"{who}, {what} was refused: {out.message}", attempt.shape, warning)
    if out.error is not None:  # an error proves nothing: never isolated
        return not_probed(f"{what} failed with an error, so what it would show is unknown: {out.message}")
    assert out.rows is not None
    n = out.rows[0][0]
    if n > 0:
        more = "at least " if (not of_tenant and n >= rel.rows.sample) else ""
        return leaked(f"{who}, {what} returned {more}{_rows(n)}{of_tenant}", attempt.shape, n)
    if of_tenant:
        detail = f"{who}, {what} returned none of the rows{of_tenant} ({attempt.targeted} targeted)"
    else:
        detail = f"{who}, {what} returned no rows"
    warning = ""
    if own is not None and own[0]:
        seen = own[1] or 0
        detail += f" (tenant A saw {seen} of its {own[0]})"
        if seen == 0:
            warning = (
                f"{rel.q}: {who}, none of tenant A's own {_rows(own[0])} were visible either: if the "
                f"application can read them, tenant.context/guc/jwt_claim or tenant.app_role in the config "
                f"do not match it, and the probes that held prove little"
            )
    return held(detail, attempt.shape, warning)


def judge_write_error(out: Outcome, who: str, what: str, shape: str, *, filtered: bool) -> Verdict:
    """A write that failed: refused by row level security or privileges (held), or not measurable."""
    stuck = error_state(out, what)
    if stuck is not None:
        return stuck
    if out.kind == "refused":
        return held(f"{who}, {what} was refused: {out.message}", shape)
    if out.kind == "timeout":
        return not_probed(f"{what} did not finish: {out.message}")
    if out.kind == "integrity" and filtered:
        constraint = (out.error.diag.constraint_name if out.error is not None else None) or ""
        return leaked(
            f"{who}, row level security let {what} through; only the constraint {constraint} stopped it "
            f"({out.message})",
            shape,
        )
    if out.kind == "integrity":
        return not_probed(
            f"{what} failed on a constraint, so its effect on tenant B's rows could not be measured: {out.message}"
        )
    return not_probed(f"{what} failed, so its effect could not be measured: {out.message}")


def judge_write(attempt: Attempt, out: Outcome, who: str, what: str, *, filtered: bool, verb: str) -> Verdict:
    if attempt.stopped and attempt.admitted(out):
        return leaked(
            f"{who}, row level security admitted {what}: 1 row of tenant B would be {verb} (admitted; the probe "
            f"stopped the statement on that row, before any trigger or foreign-key action ran){attempt.note}",
            attempt.shape,
            1,
        )
    if attempt.unwritten is not None and attempt.admitted(out):
        return leaked(
            f"{who}, row level security admitted {what}: 1 row of tenant B would be {verb} (admitted, not written"
            f"{attempt.unwritten.note}){attempt.note}",
            attempt.shape,
            1,
        )
    if out.error is not None:
        return judge_write_error(out, who, what, attempt.shape, filtered=filtered)
    n = out.measured or 0
    if n > 0:
        return leaked(f"{who}, {what} {verb} {_rows(n)} of tenant B{attempt.note}", attempt.shape, n)
    return held(
        f"{who}, {what} {verb} none of the tenant B rows ({attempt.targeted} targeted){attempt.note}", attempt.shape
    )


# --------------------------------------------------------------------------- tables: reads
@dataclass(frozen=True)
class ReadRows:
    """Rows of tenants B and A in the table: the existing ones (a sample), or one built when there were none."""

    b_existing: list[RowRef]
    a_existing: list[RowRef]
    fresh_b: list[RowRef]
    fresh_a: list[RowRef]
    why_b: str  # why a row of B could not be built, when one was needed
    why_a: str

    @property
    def b_sel(self) -> list[RowRef]:
        return self.b_existing + self.fresh_b

    @property
    def a_sel(self) -> list[RowRef]:
        return self.a_existing + self.fresh_a


def prepare_reads(rel: Relation, _previous: object = None) -> ReadRows:
    t, tenants = rel.table, rel.tenants
    try:
        rel.rows.ensure_tenants(tenants.missing)
    except CannotBuild as exc:
        raise SkipAll(
            f"tenants {tenants.a} and {tenants.b} are not both in {qname(rel.session.tm.tenants_schema, rel.session.tm.tenants_name)} and "
            f"could not be created: {exc}"
        ) from None
    b_existing = rel.rows.of_tenant(t, tenants.b)
    a_existing = rel.rows.of_tenant(t, tenants.a)
    fresh_b, why_b = ([], "") if b_existing else rel.rows.fresh_row(t, tenants.b)
    fresh_a, why_a = ([], "") if a_existing else rel.rows.fresh_row(t, tenants.a)
    return ReadRows(b_existing, a_existing, fresh_b, fresh_a, why_b, why_a)


class SelectWithoutContext(Probe):
    """With no tenant context at all, is anything visible?"""

    name, command = "select_without_context", "select"

    def plan(self, rel: Relation, fx: ReadRows) -> Union[Attempt, str]:
        stmt = rel.count_sample()
        total = rel.scalar(stmt)
        if total == 0:
            return f"{rel.q} has no rows and none could be built: {fx.why_b or fx.why_a}"
        return Attempt(None, stmt, f"SELECT count(*) FROM {rel.q}", targeted=total)

    def judge(self, rel: Relation, fx: ReadRows, attempt: Attempt, out: Outcome) -> Verdict:
        if out.sqlstate.startswith("22"):  # the policy cannot read an absent context: it fails closed
            return held(
                f"{rel.no_context}, SELECT on {rel.q} failed in the policy's reading of the absent tenant "
                f"context, so it shows nothing: {out.message}",
                attempt.shape,
            )
        return judge_read(rel, attempt, out, rel.no_context, f"SELECT on {rel.q}")


class SelectOtherTenant(Probe):
    """SELECT tenant B's rows (counted by their ctid) with tenant A's context."""

    name, command = "select_other_tenant", "select"

    def plan(self, rel: Relation, fx: ReadRows) -> Union[Attempt, str]:
        t, b_sel, a_sel = rel.table, fx.b_sel, fx.a_sel
        if not b_sel:
            return f"{rel.q} has no row of tenant B and none could be built: {fx.why_b or fx.why_a}"
        stmt = sql.SQL("SELECT (SELECT count(*) FROM {i} AS t WHERE {b}), {a}").format(
            i=rel.ident,
            b=where_rows(t, b_sel),
            a=sql.SQL("(SELECT count(*) FROM {} AS t WHERE {})").format(rel.ident, where_rows(t, a_sel))
            if a_sel
            else sql.SQL("0"),
        )
        shape = f"SELECT * FROM {rel.q} WHERE ctid = ANY(<{_rows(len(b_sel))} of tenant B>)"
        return Attempt(rel.tenants.a, stmt, shape, targeted=len(b_sel))

    def judge(self, rel: Relation, fx: ReadRows, attempt: Attempt, out: Outcome) -> Verdict:
        own = (len(fx.a_sel), out.rows[0][1] if out.rows else None)
        return judge_read(rel, attempt, out, rel.as_a, f"SELECT on {rel.q}", of_tenant=rel.of_b, own=own)


# --------------------------------------------------------------------------- tables: writes
@dataclass(frozen=True)
class WriteRows:
    """What the writes target: a fresh row of each tenant when one could be built (nothing references it, so
    no foreign key gets in the way of measuring what row level security allows), else the existing ones."""

    b_write: list[RowRef]
    a_write: list[RowRef]
    candidate: Candidate  # INSERT of a valid new row of tenant B
    set_a: Optional[Query]  # SET clause that makes a row tenant A's
    set_b: Optional[Query]
    columns: str  # the columns those SET clauses assign, for the report
    a_key: Optional[Query]  # the targeted rows of A by key, without the columns that decide the tenant
    no_a: str  # why there is no row of tenant A
    no_b: str
    null_insert: Optional[Unwritten] = None  # the column an INSERT probe sets to NULL (None: a real write)
    null_update: Optional[Unwritten] = None  # the same for the UPDATE probes
    # the writes target existing rows and write nothing (UPDATEs set ``null_update``, DELETEs stop on the row
    # they reach); ``real`` builds the fresh-row targets for a real write, when one is needed after all
    in_place: bool = False
    real: Optional[Callable[[], WriteRows]] = None


def prepare_writes(rel: Relation, reads: ReadRows) -> WriteRows:
    """The targets of the write probes. When every write can be proven without writing (the UPDATEs set a NOT
    NULL column to NULL, the DELETEs stop on the row they reach, and no trigger or rule on the table could
    change what they do), they target the rows the reads did: the existing rows of each tenant, or the test
    row built for a tenant that has none; no other row is built (a row inserted and rolled back extends the
    table when its last page is full). Otherwise a fresh row of each tenant is built, as the writes on it
    meet no foreign key."""
    t, tenants, rows = rel.table, rel.tenants, rel.rows
    assign = rows.row_tenancy.require(t).assign_columns
    keep = frozenset(assign) | frozenset(identity_columns(rel.session.analyzer, t, rows.row_tenancy))
    null_insert = unwritten_column(rel.session, t, "INSERT", keep)
    null_update = unwritten_column(rel.session, t, "UPDATE", keep, assigned=frozenset(assign))
    candidate = rows.candidate(t, tenants.b, prove=null_insert is None)
    delete_trigger = rel.target.qualified in rel.session.delete_triggers
    if reads.b_sel and reads.a_sel and null_update is not None and not delete_trigger:
        a_write = reads.a_sel[:1]
        memo: list[WriteRows] = []

        def real() -> WriteRows:
            if not memo:
                memo.append(_fresh_writes(rel, reads, assign, candidate))
            return memo[0]

        return WriteRows(
            b_write=reads.b_sel,
            a_write=a_write,
            candidate=candidate,
            set_a=rows.assignment(t, tenants.a, reads.a_sel),
            set_b=rows.assignment(t, tenants.b, reads.b_sel),
            columns=", ".join(assign),
            a_key=rows.key_values(t, a_write, assign),
            no_a=f"{rel.q}: the values that make a row tenant A's could not be read from its rows",
            no_b=f"{rel.q}: the values that make a row tenant B's could not be read from its rows",
            null_insert=null_insert,
            null_update=null_update,
            in_place=True,
            real=real if rows.test_rows else None,  # without test rows, never a real write on the app's rows
        )
    if not rows.test_rows:  # the writes would be made for real: on the application's own rows, or on test rows
        if not (reads.b_sel and reads.a_sel):
            why = f"{rel.q} has no row of tenant {'B' if not reads.b_sel else 'A'}, and {NO_TEST_ROWS}"
        elif delete_trigger:
            why = f"{rel.q} has a DELETE trigger, so its writes are proven only by writing, and {NO_TEST_ROWS}"
        else:
            why = (
                f"{rel.q} has no NOT NULL column the probe can set to NULL (or a write trigger or rule), so its "
                f"writes are proven only by writing, and {NO_TEST_ROWS}"
            )
        return WriteRows(
            b_write=[],
            a_write=[],
            candidate=candidate,
            set_a=None,
            set_b=None,
            columns=", ".join(assign),
            a_key=None,
            no_a=why,
            no_b=why,
            null_insert=null_insert,
            null_update=null_update,
        )
    return replace(_fresh_writes(rel, reads, assign, candidate), null_insert=null_insert, null_update=null_update)


def _fresh_writes(rel: Relation, reads: ReadRows, assign: tuple[str, ...], candidate: Candidate) -> WriteRows:
    """The writes' targets on a fresh row of each tenant (the existing ones when none could be built)."""
    t, tenants, rows = rel.table, rel.tenants, rel.rows
    fresh_b, why_b, fresh_a, why_a = reads.fresh_b, reads.why_b, reads.fresh_a, reads.why_a
    if reads.b_existing:
        fresh_b, why_b = rows.fresh_row(t, tenants.b)
    if reads.a_existing:
        fresh_a, why_a = rows.fresh_row(t, tenants.a)
    b_sel, a_sel = reads.b_existing + fresh_b, reads.a_existing + fresh_a
    a_write = fresh_a or reads.a_existing
    return WriteRows(
        b_write=fresh_b or reads.b_existing,
        a_write=a_write,
        candidate=candidate,
        set_a=rows.assignment(t, tenants.a, a_sel),
        set_b=rows.assignment(t, tenants.b, b_sel),
        columns=", ".join(assign),
        a_key=rows.key_values(t, a_write, assign) if a_write else None,
        no_a=f"{rel.q} has no row of tenant A and none could be built: {why_a}",
        no_b=f"{rel.q} has no row of tenant B and none could be built: {why_b}",
    )


def real_write(
    fx: WriteRows, plan: Callable[[WriteRows], Union[Attempt, str]]
) -> Callable[[], Union[Attempt, Verdict]]:
    """The fallback of an attempt on existing rows: the real write, planned on fresh test rows (built now)."""

    def build() -> Union[Attempt, Verdict]:
        if fx.real is None:
            return not_probed(f"the attempt that writes nothing met an unexpected error, and {NO_TEST_ROWS}")
        attempt = plan(fx.real())
        return not_probed(attempt) if isinstance(attempt, str) else attempt

    return build


def insert_unwritten(rel: Relation, fx: WriteRows, cand: Candidate, attempt: Attempt) -> Attempt:
    """The INSERT ``attempt`` of ``cand`` with the chosen NOT NULL column set to NULL (:mod:`.unwritten`)."""
    u = fx.null_insert
    if u is None or cand.stmt is None:
        return attempt
    values = {**cand.values, u.column: sql.SQL("NULL")}
    nulled = unwritten(attempt, u, insert_sql(rel.table, values), f"{attempt.shape} with {ident(u.column)} NULL")
    if cand.check is None:
        return nulled

    def prove_then_write() -> Union[Attempt, Verdict]:
        proven = cand.checked()
        if proven.stmt is None:
            return not_probed(proven.why)
        return replace(attempt, statement=proven.stmt)

    return replace(nulled, fallback=prove_then_write)


def stored_of_b(rel: Relation, values: dict[str, Query]) -> Optional[Callable[[], int]]:
    """Rows of tenant B stored with the candidate's key (None when the candidate's key decides the tenant):
    a BEFORE INSERT trigger may have stamped another tenant on the row that was stored."""
    assign = rel.rows.row_tenancy.require(rel.table).assign_columns
    match = rel.rows.key_match(rel.table, values, assign)
    if match is None:
        return None
    where = sql.SQL("{} AND {}").format(match, rel.rows.row_tenancy.pred(rel.table, rel.tenants.b))
    return lambda: rel.rows.count_where(rel.table, where)


def judge_insert(rel: Relation, cand: Candidate, attempt: Attempt, out: Outcome, what: str, leak: str) -> Verdict:
    """An INSERT of a row of tenant B: stored as B's = leak; refused by row level security = held; a unique,
    exclusion or foreign-key error (raised only after the policies admitted the row) = leak; a row stored for
    another tenant (a trigger stamped it) = held; a 23502 on the column set to NULL (:mod:`.unwritten`) = leak."""
    cand = cand.known  # proven valid, when the probe needed the proof
    if attempt.unwritten is not None and attempt.admitted(out):
        return leaked(
            f"{rel.as_a}, row level security admitted {what} (not written{attempt.unwritten.note})"
            + (
                f"; its key exists already ({cand.conflict}), which would not stop a row whose key is new"
                if cand.conflict
                else ""
            ),
            attempt.shape,
            1,
        )
    if out.kind == "ok" and out.rowcount > 0:
        if out.measured is not None and out.measured == 0:
            return held(
                f"{rel.as_a}, {what} succeeded, but the row stored does not belong to tenant B (a trigger "
                f"set its tenant)",
                attempt.shape,
            )
        return leaked(f"{rel.as_a}, {leak}", attempt.shape, 1)
    if out.kind == "ok":
        return held(f"{rel.as_a}, {what} inserted nothing", attempt.shape)
    if out.sqlstate in AFTER_POLICY_STATES and cand.conflict:
        constraint = (out.error.diag.constraint_name if out.error is not None else None) or ""
        return leaked(
            f"{rel.as_a}, row level security admitted {what}; only the constraint {constraint} stopped "
            f"it ({out.message}), and it would not stop a row whose key is new",
            attempt.shape,
            1,
        )
    return judge_write_error(out, rel.as_a, what, attempt.shape, filtered=False)


class InsertForOtherTenant(Probe):
    """INSERT a valid new row that belongs to tenant B (tried even when its key exists already: see
    :func:`judge_insert`)."""

    name, command = "insert_for_other_tenant", "insert"

    def plan(self, rel: Relation, fx: WriteRows) -> Union[Attempt, str]:
        cand = fx.candidate
        if cand.stmt is None:
            return cand.why
        shape = f"INSERT INTO {rel.q} (...) VALUES (<a valid row of tenant B>)"
        if cand.conflict:
            shape += " (its key exists already)"
        attempt = Attempt(rel.tenants.a, cand.stmt, shape, measure=stored_of_b(rel, cand.values))
        return insert_unwritten(rel, fx, cand, attempt)

    def judge(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Verdict:
        what = f"INSERT of a row of tenant B into {rel.q}"
        return judge_insert(rel, fx.candidate, attempt, out, what, f"{what} succeeded")


def _measure(rel: Relation, rows: list[RowRef]) -> Callable[[], int]:
    """How many of ``rows`` the statement changed or deleted (they are no longer visible as they were)."""
    return lambda: len(rows) - rel.rows.count(rel.table, rows)


CURSOR = sql.Identifier("dbguard_probe_row")


def _cursor_on(rel: Relation, row: RowRef) -> Callable[[], object]:
    """Declare (as the connecting role, inside the probe's savepoint) a cursor standing on one row: a statement
    ``WHERE CURRENT OF`` it reads no column, so only the policies of its own command apply (a blind write),
    and it touches that one row instead of the whole table."""

    def declare() -> None:
        conn = rel.session.conn
        conn.execute(
            sql.SQL(
                "DECLARE {c} NO SCROLL CURSOR FOR SELECT 1 FROM {t} AS t WHERE t.ctid = {r}::tid "
                "AND t.tableoid = {o}::oid; FETCH NEXT FROM {c}"
            ).format(c=CURSOR, t=rel.ident, r=sql.Literal(row[1]), o=sql.Literal(row[0]))
        )

    return declare


def _update(
    rel: Relation,
    columns: str,
    assignment: Query,
    rows: list[RowRef],
    *,
    to: str,
    of: str,
    blind: bool,
    measure: Optional[Callable[[], int]] = None,
    null: Optional[Unwritten] = None,
) -> Attempt:
    """An UPDATE (with tenant A's context) that makes ``rows`` of tenant ``of`` belong to tenant ``to``: filtered
    to them by ctid, or blind: ``WHERE CURRENT OF`` a cursor on the first of them (no column is read, so no
    SELECT policy applies, as with no WHERE at all, and one row is written instead of every row of the table).
    With ``null``, the SET list also sets that NOT NULL column to NULL, the real UPDATE kept as the fallback."""

    def build(assign: Query, set_shape: str) -> Attempt:
        shape = f"UPDATE {rel.q} SET {set_shape}"
        if blind:
            stmt = sql.SQL("UPDATE {} SET {} WHERE CURRENT OF {}").format(rel.ident, assign, CURSOR)
            shape += f" WHERE CURRENT OF <a cursor on 1 row of tenant {of}>"
            before: Optional[Callable[[], object]] = _cursor_on(rel, rows[0])
        else:
            stmt = sql.SQL("UPDATE {} AS t SET {} WHERE {}").format(rel.ident, assign, where_rows(rel.table, rows))
            shape += f" WHERE ctid = ANY(<{_rows(len(rows))} of tenant {of}>)"
            before = None
        return Attempt(
            rel.tenants.a, stmt, shape, targeted=len(rows), measure=measure or _measure(rel, rows), before=before
        )

    if blind:
        rows = rows[:1]
    real = build(assignment, f"{columns} = <tenant {to}>")
    if null is None:
        return real
    nulled = build(
        sql.SQL("{}, {} = NULL").format(assignment, sql.Identifier(null.column)),
        f"{columns} = <tenant {to}>, {ident(null.column)} = NULL",
    )
    return unwritten(real, null, nulled.statement, nulled.shape)


class _FilteredOrBlind(Probe):
    """A write in two forms: filtered to the targeted rows, or blind (reads no column; named ``<base>_blind``)."""

    base = ""

    def __init__(self, *, blind: bool):
        self.blind = blind
        self.name = f"{self.base}_blind" if blind else self.base


class UpdateOtherTenant(_FilteredOrBlind):
    """UPDATE tenant B's rows, filtered to them (PostgreSQL also applies the SELECT policies), or blind: constants
    only and no column read, so only the UPDATE policies apply."""

    base, command = "update_other_tenant", "update"

    def plan(self, rel: Relation, fx: WriteRows) -> Union[Attempt, str]:
        return self._plan(rel, fx, fx.null_update)

    def _plan(self, rel: Relation, fx: WriteRows, null: Optional[Unwritten]) -> Union[Attempt, str]:
        if not fx.b_write:
            return fx.no_b
        if fx.set_a is None:
            return fx.no_a
        attempt = _update(rel, fx.columns, fx.set_a, fx.b_write, to="A", of="B", blind=self.blind, null=null)
        if fx.in_place:
            attempt = replace(attempt, fallback=real_write(fx, lambda real: self._plan(rel, real, None)))
        return attempt

    def judge(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Verdict:
        what = (
            f"blind UPDATE of {rel.q} (reads no column)"
            if self.blind
            else f"UPDATE of tenant B's rows in {rel.q} (filtered to them)"
        )
        return judge_write(attempt, out, rel.as_a, what, filtered=not self.blind, verb="changed")


class MoveRowToOtherTenant(_FilteredOrBlind):
    """UPDATE one of A's rows so that it belongs to tenant B (filtered to it, or blind); the row is then looked
    up by its key and must belong to tenant B (a trigger may set the tenant back)."""

    base, command = "move_row_to_other_tenant", "update"

    def plan(self, rel: Relation, fx: WriteRows) -> Union[Attempt, str]:
        return self._plan(rel, fx, fx.null_update)

    def _plan(self, rel: Relation, fx: WriteRows, null: Optional[Unwritten]) -> Union[Attempt, str]:
        if not fx.a_write:
            return fx.no_a
        if fx.set_b is None:
            return fx.no_b
        measure = None
        if fx.a_key is not None:
            rows, where = (
                rel.rows,
                sql.SQL("({}) AND {}").format(fx.a_key, rel.rows.row_tenancy.pred(rel.table, rel.tenants.b)),
            )
            already = rows.count_where(rel.table, where)
            measure = lambda: rows.count_where(rel.table, where) - already  # noqa: E731
        attempt = _update(
            rel, fx.columns, fx.set_b, fx.a_write, to="B", of="A", blind=self.blind, measure=measure, null=null
        )
        if fx.in_place:
            attempt = replace(attempt, fallback=real_write(fx, lambda real: self._plan(rel, real, None)))
        return attempt

    def judge(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Verdict:
        what = (
            f"blind UPDATE of {rel.q} moving rows to tenant B"
            if self.blind
            else f"UPDATE of tenant A's row in {rel.q} moving it to tenant B"
        )
        if attempt.unwritten is not None and attempt.admitted(out):
            return leaked(
                f"{rel.as_a}, row level security admitted {what}: 1 row of tenant A would now belong to tenant B "
                f"(admitted, not written{attempt.unwritten.note})",
                attempt.shape,
                1,
            )
        if out.error is not None:
            return judge_write_error(out, rel.as_a, what, attempt.shape, filtered=False)
        n = out.measured or 0
        unchecked = "" if fx.a_key is not None else " (changed; without a key its new tenant was not checked)"
        if n > 0:
            return leaked(
                f"{rel.as_a}, {what} succeeded: {_rows(n)} of tenant A now "
                f"{'belongs' if n == 1 else 'belong'} to tenant B{unchecked}",
                attempt.shape,
                n,
            )
        if out.rowcount > 0 and fx.a_key is not None:
            return held(
                f"{rel.as_a}, {what} changed {_rows(out.rowcount)}, but none belongs to tenant B "
                f"afterwards (a trigger kept its tenant)",
                attempt.shape,
            )
        return held(f"{rel.as_a}, {what} moved nothing", attempt.shape)


class DeleteOtherTenant(_FilteredOrBlind):
    """DELETE tenant B's rows, filtered to them, or blind (``WHERE CURRENT OF`` a cursor on one of them)."""

    base, command = "delete_other_tenant", "delete"

    def plan(self, rel: Relation, fx: WriteRows) -> Union[Attempt, str]:
        if not fx.b_write:
            return fx.no_b
        if fx.in_place:
            return self._stopping(rel, fx.b_write)
        rows = fx.b_write
        before: Optional[Callable[[], object]] = None
        if self.blind:
            rows = rows[:1]
            stmt: Query = sql.SQL("DELETE FROM {} WHERE CURRENT OF {}").format(rel.ident, CURSOR)
            shape = f"DELETE FROM {rel.q} WHERE CURRENT OF <a cursor on 1 row of tenant B>"
            before = _cursor_on(rel, rows[0])
        else:
            stmt = sql.SQL("DELETE FROM {} AS t WHERE {}").format(rel.ident, where_rows(rel.table, rows))
            shape = f"DELETE FROM {rel.q} WHERE ctid = ANY(<{_rows(len(rows))} of tenant B>)"
        return Attempt(rel.tenants.a, stmt, shape, targeted=len(rows), measure=_measure(rel, rows), before=before)

    def _stopping(self, rel: Relation, rows: list[RowRef]) -> Attempt:
        """A DELETE of existing rows of tenant B that deletes none: filtered, its WHERE ends with an expression
        that raises (naming :data:`STOPPED`) and that PostgreSQL evaluates only on the rows that passed the
        policies' USING (it is not leakproof, so it runs after them); blind (reading no column), the row the
        cursor stands on is deleted and its RETURNING raises at once, before the statement's AFTER triggers
        and foreign-key actions run, and the savepoint is rolled back. Only on a table with no DELETE trigger,
        which could be part of the isolation."""
        stop = sql.SQL("pg_catalog.textcat({}, {}::text)::pg_catalog.int4").format(
            sql.Literal(STOPPED + ": "), sql.SQL("pg_catalog.random()") if self.blind else sql.SQL("t.ctid")
        )
        before: Optional[Callable[[], object]] = None
        if self.blind:
            rows = rows[:1]
            stmt: Query = sql.SQL("DELETE FROM {} WHERE CURRENT OF {} RETURNING {}").format(rel.ident, CURSOR, stop)
            shape = f"DELETE FROM {rel.q} WHERE CURRENT OF <a cursor on 1 row of tenant B> (stopped by its RETURNING)"
            before = _cursor_on(rel, rows[0])
        else:
            stmt = sql.SQL("DELETE FROM {} AS t WHERE {} AND {} IS NULL").format(
                rel.ident, where_rows(rel.table, rows), stop
            )
            shape = (
                f"DELETE FROM {rel.q} WHERE ctid = ANY(<{_rows(len(rows))} of tenant B>) "
                f"(stopped on the first one the policies let through)"
            )
        return Attempt(
            rel.tenants.a, stmt, shape, targeted=len(rows), measure=_measure(rel, rows), before=before, stopped=True
        )

    def retry(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Union[Attempt, Verdict, None]:
        """A DELETE stopped on an existing row that waited past the lock timeout (the application holds a lock
        on that row): the real DELETE of a fresh test row instead. A blind DELETE that reached rows referenced
        by other tables fails on their foreign keys: measure again with the foreign-key triggers off, which only
        a superuser may do, and only when no user trigger on this table could be part of the isolation."""
        if attempt.stopped:
            if out.kind != "timeout" or fx.real is None:
                return None  # (without test rows: the timeout stands, not probed)
            real = self.plan(rel, fx.real())
            return not_probed(real) if isinstance(real, str) else real
        session = rel.session
        if (
            not self.blind
            or out.sqlstate != "23503"
            or not session.superuser
            or rel.target.qualified in session.delete_triggers
        ):
            return None
        first = attempt.before

        def before() -> None:
            session.conn.execute("SET LOCAL session_replication_role = replica")
            if first is not None:
                first()

        return replace(
            attempt,
            before=before,
            note=" (measured with foreign-key checks off: other tables reference the row the DELETE reached)",
        )

    def judge(self, rel: Relation, fx: WriteRows, attempt: Attempt, out: Outcome) -> Verdict:
        what = (
            f"blind DELETE FROM {rel.q} (reads no column)"
            if self.blind
            else f"DELETE of tenant B's rows from {rel.q} (filtered to them)"
        )
        return judge_write(attempt, out, rel.as_a, what, filtered=not self.blind, verb="deleted")
