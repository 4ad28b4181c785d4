"""Measuring a table's statements as the app role and as the owner (the same code on the target and on the
scratch copy)."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg

from dbguard_pipeline.analyze.context import AppContext
from dbguard_pipeline.analyze.report import StatementResult
from dbguard_pipeline.analyze.session import Measure, as_app, as_owner, time_all
from dbguard_pipeline.analyze.statements import Statement, TenantSample
from dbguard_pipeline.model.schema import Table
from dbguard_pipeline.semantics import tenancy


@dataclass
class Work:
    """What it takes to measure a table again (on the scratch copy): the same statements, the same tenant."""

    table: Table
    path: list[tenancy.FkStep]
    sample: TenantSample
    statements: list[Statement]


def measure_statements(conn: psycopg.Connection, ctx: AppContext, work: Work, m: Measure) -> list[StatementResult]:
    app = time_all(lambda: as_app(conn, ctx, work.sample, m), [st.app for st in work.statements], m)
    owner = time_all(lambda: as_owner(conn, m), [st.owner for st in work.statements], m)
    return [StatementResult(st.name, st.title, st.app.as_string(conn), st.owner.as_string(conn), a, o)
            for st, a, o in zip(work.statements, app, owner, strict=True)]
