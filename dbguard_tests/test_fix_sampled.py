"""The scratch-copy round trip of a big backfill (issue 11): above ``round_trip_row_limit`` rows, the copy keeps
the first rows of the table by key (every parent row is there: a template copy), so that generating the
migration does not take as long as running it; the migration header and the verdicts say so. The migration
itself is the same, and still fills every row of the real table."""

from __future__ import annotations

import psycopg
import pytest

from dbguard_pipeline import services

from .conftest import run_sql
from .test_fix_backfill import CHILD
from .test_fix_loop import BREWERY, repro_file

GRANDCHILD = """
create table public.log_notes (id bigint primary key, log_id bigint not null references public.fermenter_logs (id));
insert into public.log_notes select g, g * 10 from generate_series(1, 1500) g;
"""


def _generate(dsn: str, tmp_path, limit: int, table: str = "public.fermenter_logs"):
    config = BREWERY.model_copy(update={"round_trip_row_limit": limit})
    return services.generate_fixes(
        dsn,
        config,
        action="add-tenant-isolation",
        table=table,
        out_dir=str(tmp_path / f"m{limit}"),
        round_trip="yes",
        timestamp="20260101000000",
    )


@pytest.mark.integration
@pytest.mark.parametrize("referenced", [False, True], ids=["truncated", "deleted_past_key"])
def test_big_backfill_round_trip_runs_on_a_sample_and_says_so(databases, tmp_path, referenced):
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text() + CHILD + (GRANDCHILD if referenced else ""))
    fixes = _generate(dsn, tmp_path, 1000)
    assert fixes.rejected == [] and len(fixes.written) == 2
    header = fixes.written[0].read_text().split("SET lock_timeout", 1)[0]
    assert "-- Note: round trip copy: public.fermenter_logs sampled: about 20,000 rows" in header
    assert "kept its first 1,000 by id" in header and "--   copy: public.fermenter_logs sampled" in header
    trip = fixes.round_trip.trips[0] if fixes.round_trip else None
    assert trip is not None and trip.ok and trip.verdicts is not None and trip.verdicts.copy_note
    # the real table is untouched by the round trip, and the migration fills all of it
    services.migrator(dsn, tmp_path / "m1000").up()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*), count(tenant_id) from public.fermenter_logs").fetchone() == (20000, 20000)
        if referenced:
            assert conn.execute("select count(*) from public.log_notes").fetchone()[0] == 1500


@pytest.mark.integration
def test_below_the_limit_or_zero_the_copy_is_whole(databases, tmp_path):
    dsn = databases.create()
    run_sql(dsn, repro_file("brewery", "common").read_text() + CHILD)
    for limit in (0, 50_000):
        fixes = _generate(dsn, tmp_path, limit)
        assert fixes.rejected == []
        text = fixes.written[0].read_text()
        assert "round trip copy" not in text and "--   copy:" not in text
