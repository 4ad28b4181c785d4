"""Suggestions proven before they are proposed: each fix is applied to a scratch copy of the target
(``fixes.sandbox.scratch_database``: schema and rows, the planner's statistics too), the same statements are
measured again as the app role for the same tenant, and the fix is kept only when

- it applies cleanly (the rendered migration file, through the runner's ``apply_sql``),
- the app role still sees exactly the same rows (the fix keeps the policies' meaning), and
- the app role's statements got at least ``min_speedup`` times faster.

Fixes are tried in order and accumulate; one that fails a test is rolled back at once, and one that was not
faster (another cause masked it) is tried once more after the others. At the end every kept fix is rolled back, newest first, and the schema compared with the one taken
before it was applied (``fixes.sandbox.differences``): its rollback is proven exact. The proposed migrations
are linted (squawk and the PostgreSQL parser). The scratch copy is always dropped; the target is never written.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from dbguard_pipeline.analyze.context import AppContext
from dbguard_pipeline.analyze.measure import Work, measure_statements
from dbguard_pipeline.analyze.plans import same_rows
from dbguard_pipeline.analyze.report import StatementResult, Suggestion, TableResult, ratio
from dbguard_pipeline.analyze.session import Measure
from dbguard_pipeline.config import Config
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.fixes.ledger import apply_sql
from dbguard_pipeline.fixes.lint import lint_texts
from dbguard_pipeline.fixes.sandbox import differences
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.scratch import scratch_database
from dbguard_pipeline.pg.session import connect


def _same_visible(before: Sequence[StatementResult], after: Sequence[StatementResult]) -> bool:
    """The app role saw the same: per statement, the rows returned and the rows aggregated (to within the
    rounding of parallel workers' rows)."""
    for b, a in zip(before, after, strict=True):
        pb, pa = b.app.plan, a.app.plan
        if pb is None or pa is None:
            if pb is not pa:
                return False
            continue
        slack = max(pb.aggregated_slack(), pa.aggregated_slack())
        if pb.top_rows() != pa.top_rows() or not same_rows(pb.aggregated_rows(), pa.aggregated_rows(), slack):
            return False
    return True


def _total(results: Sequence[StatementResult], who: str) -> float:
    return sum(float(getattr(s, who).ms or 0.0) for s in results)


class _Copy:
    """The scratch copy and what the measured tables look like on it now."""

    def __init__(self, dsn: str, snapshot: Snapshot, config: Config, works: dict[str, Work], m: Measure):
        self.dsn, self.config, self.works, self.m = dsn, config, works, m
        self.conn = connect(dsn, autocommit=True, application_name="dbguard analyze (scratch copy)")
        self.ctx = AppContext(self.conn, snapshot, config)
        self.cache: dict[str, list[StatementResult]] = {}

    def measure(self, table: str) -> list[StatementResult]:
        if table not in self.cache:
            self.cache[table] = measure_statements(self.conn, self.ctx, self.works[table], self.m)
        return self.cache[table]

    def apply(self, text: str, source: str) -> None:
        apply_sql(self.dsn, text, source=source)
        self.cache.clear()

    def snapshot(self) -> Snapshot:
        return introspect(self.conn, None, statement_timeout_ms=self.config.statement_timeout_ms,
                          lock_timeout_ms=self.config.lock_timeout_ms)


def _try(copy: _Copy, s: Suggestion, min_speedup: float) -> bool:
    """Apply ``s`` on the copy and judge it; True when it stays applied (proposed)."""
    tables = [t for t in s.tables if t in copy.works]
    before = {t: copy.measure(t) for t in tables}
    try:
        copy.apply(s.migration.render_forward(), f"{s.action} {s.relation}")
    except DbguardError as exc:
        s.status, s.reason = "rejected", f"failed on the scratch copy: {exc}"
        return False
    after = {t: copy.measure(t) for t in tables}
    s.ms_before = sum(_total(before[t], "app") for t in tables)
    s.ms_after = sum(_total(after[t], "app") for t in tables)
    s.overhead_after = ratio(s.ms_after, sum(_total(after[t], "owner") for t in tables))
    s.rows_unchanged = all(_same_visible(before[t], after[t]) for t in tables)
    errors = [f"{t} {r.name}: {r.app.error}" for t in tables for r in after[t] if r.app.error]
    speedup = s.speedup or 0.0
    if errors:
        s.status, s.reason = "rejected", f"the app role's statements fail after it: {errors[0]}"
    elif not s.rows_unchanged:
        s.status, s.reason = "rejected", "it changes the rows the app role sees"
    elif speedup < min_speedup:
        s.status, s.reason = "rejected", f"measured {speedup:.2f}x, below the {min_speedup}x it takes to propose it"
    else:
        s.status, s.reason = "proposed", None
        return True
    return False


def _lint(proposed: Sequence[Suggestion]) -> None:
    texts, owner = {}, {}
    for i, s in enumerate(proposed):
        fwd, back = s.migration.file_names("20000101000000")
        for name, text in ((f"{i:03d}_{fwd}", s.migration.render_forward()),
                           (f"{i:03d}_{back}", s.migration.render_rollback())):
            texts[name], owner[name] = text, s
            s.lint = []
    try:
        result = lint_texts(texts)
    except DbguardError as exc:
        for s in proposed:
            s.lint = [f"not linted: {exc}"]
        return
    for v in result.violations:
        owner[v.file].lint.append(str(v))  # type: ignore[union-attr]
    for err in result.parse_errors:
        owner[err.split(":", 1)[0]].lint.append(err)  # type: ignore[union-attr]


def prove(dsn: str, snapshot: Snapshot, config: Config, works: Sequence[tuple[TableResult, Work]],
          suggestions: Sequence[Suggestion], m: Measure, min_speedup: float,
          progress: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Prove ``suggestions`` on a scratch copy of ``dsn`` (see the module doc); returns how it went."""
    started = time.perf_counter()
    by_table = {w.table.qualified: w for _, w in works}
    with scratch_database(dsn) as (scratch, method):
        if method != "template":
            for s in suggestions:
                s.status = "unproven"
                s.reason = (f"the scratch copy holds no rows ({method} copy: the target is larger than the copy "
                            f"limit or others are connected to it), so the fix could not be measured")
            return {"method": method, "suggestions": len(suggestions), "proposed": 0}
        copy = _Copy(scratch, snapshot, config, by_table, m)
        try:
            kept: list[tuple[Suggestion, Snapshot]] = []
            pending = list(suggestions)
            for _attempt in (1, 2):  # a fix masked by another cause (not faster yet) gets a second try after it
                masked = []
                for s in pending:
                    before = copy.snapshot()
                    if _try(copy, s, min_speedup):
                        kept.append((s, before))
                    else:
                        _undo(copy, s, before)
                        if s.status == "rejected" and s.reason and s.reason.startswith("measured"):
                            masked.append(s)
                    if progress:
                        progress(f"proof: {s.title}: {s.status}" + (f" ({s.speedup}x)" if s.speedup else ""))
                pending = masked if len(masked) < len(pending) else []
            for s, before in reversed(kept):
                _undo(copy, s, before)
        finally:
            copy.conn.close()
    _lint([s for s in suggestions if s.proposed])
    return {"method": method, "suggestions": len(suggestions), "proposed": sum(s.proposed for s in suggestions),
            "seconds": round(time.perf_counter() - started, 3)}


def _undo(copy: _Copy, s: Suggestion, before: Snapshot) -> None:
    """Apply the rollback and check the schema is back to ``before`` exactly."""
    try:
        copy.apply(s.migration.render_rollback(), f"rollback of {s.action} {s.relation}")
    except DbguardError as exc:
        s.rollback_verified = False
        s.reason = (s.reason + "; " if s.reason else "") + f"its rollback failed: {exc}"
        if s.proposed:
            s.status = "rejected"
        return
    diff = differences(before, copy.snapshot())
    s.rollback_verified = not diff
    if diff and s.proposed:
        s.status, s.reason = "rejected", f"its rollback does not restore the schema exactly: {'; '.join(diff[:2])}"
