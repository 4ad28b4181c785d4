"""Isolation probe time: per table and for the whole demo database, and on a generated schema of N tenant
tables with M rows each (default 100 x 1000), to show that the cost grows with the number of tables and not
with their size (the probe targets rows by ctid and samples at most 1000 rows of a tenant).

    python -m bench.bench_isolation [--tables 100] [--rows 1000] [--repeat 3]

Uses the embedded PostgreSQL in a temporary data directory (or $DBGUARD_BENCH_DSN, a superuser URL).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.pg.session import connect
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.probe import probe

POLICY = "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"


def make_schema(dsn: str, n: int, rows: int) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute("do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then "
                     "create role authenticated nologin; end if; end $$")
        conn.execute("create table tenants (id uuid primary key, name text not null);"
                     "insert into tenants select md5('t' || g)::uuid, 'tenant ' || g from generate_series(1, 10) g")
        for i in range(n):
            t = sql.Identifier(f"t{i:04d}")
            conn.execute(sql.SQL(
                "create table {t} (id bigint generated always as identity primary key, tenant_id uuid not null "
                "references tenants(id), name text not null, created_at timestamptz not null default now());"
                "create index on {t} (tenant_id); alter table {t} enable row level security;"
                "create policy p on {t} for all to authenticated using (" + POLICY + ") with check (" + POLICY + ");"
                "grant select, insert, update, delete on {t} to authenticated;"
                "insert into {t} (tenant_id, name) select md5('t' || (g % 10 + 1))::uuid, 'row ' || g "
                "from generate_series(1, {rows}) g"
            ).format(t=t, rows=sql.Literal(rows)))
        conn.execute("analyze")


def timed(dsn: str, repeat: int):
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = probe(dsn, Config())
        runs.append((time.perf_counter() - t0, report))
    median = statistics.median(t for t, _ in runs)
    return median, runs[-1][1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=100)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    server = os.environ.get("DBGUARD_BENCH_DSN") or embedded_dsn("postgres", tempfile.mkdtemp(prefix="dbguard-bench-"))
    demo = create_demo_database(server, "bench_iso_demo", replace=True)
    big_name = f"bench_iso_{args.tables}x{args.rows}"
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(big_name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(big_name)))
    big = with_database(server, big_name)
    make_schema(big, args.tables, args.rows)
    median, report = timed(demo, args.repeat)
    s = report.summary()
    print(f"demo: {s['tables']} relations, {s['probes']} probes, {s['leaks']} leaks, {s['not_probed']} not probed "
          f"in {median * 1000:.0f} ms (median of {args.repeat}, including connect and snapshot)")
    for q, secs in sorted(report.table_seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {q:<36} {secs * 1000:6.1f} ms")
    median, report = timed(big, args.repeat)
    s = report.summary()
    per = sorted(report.table_seconds.values())
    print(f"{args.tables} tables x {args.rows} rows: {s['probes']} probes, {s['leaks']} leaks, {s['not_probed']} not "
          f"probed in {median:.2f} s (median of {args.repeat}); per table median {statistics.median(per) * 1000:.1f} ms, "
          f"max {per[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
