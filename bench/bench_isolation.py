"""Isolation probe time: per table and for the whole demo database, and on a generated schema of N tenant
tables with M rows each (default 100 x 1000), to show that the cost grows with the number of tables and not
with their size (the probe targets rows by ctid and samples at most 1000 rows of a tenant).

    python -m bench.bench_isolation [--tables 100] [--rows 1000] [--repeat 3] [--lock-rows 300000]

``--lock-rows N`` (0 to skip) adds one table of N rows with ``USING (1 = 1)`` and no tenant filter, probes it
while a concurrent writer updates a single row of tenant B in a loop, and prints the writer's longest wait and
the table's pg_total_relation_size before and after (issue #13: the old blind writes rewrote every row).

Uses the embedded PostgreSQL in a temporary data directory (or $DBGUARD_BENCH_DSN, a superuser URL).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

from psycopg import sql

from dbguard_pipeline.config import Config
from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.session import connect
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


def lock_bench(server: str, rows: int) -> None:
    name = f"bench_iso_lock_{rows}"
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    dsn = with_database(server, name)
    with connect(dsn, autocommit=True) as conn:
        conn.execute("do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then "
                     "create role authenticated nologin; end if; end $$")
        conn.execute("create table tenants (id uuid primary key, name text not null);"
                     "insert into tenants select md5('t' || g)::uuid, 'tenant ' || g from generate_series(1, 3) g")
        conn.execute(sql.SQL(
            "create table big (id bigint generated always as identity primary key, tenant_id uuid not null "
            "references tenants(id), body text not null);"
            "insert into big (tenant_id, body) select md5('t' || (g % 3 + 1))::uuid, 'row ' || g "
            "from generate_series(1, {n}) g;"
            "create index on big (tenant_id); alter table big enable row level security;"
            "create policy p on big for all to authenticated using (1 = 1) with check (1 = 1);"
            "grant select, insert, update, delete on big to authenticated").format(n=sql.Literal(rows)))
        conn.execute("vacuum analyze big")
        size = "select pg_total_relation_size('big')"
        before = conn.execute(size).fetchone()[0]
        # a row of tenant B (the second tenant by key), which the probe attacks
        b = conn.execute("select id::text from tenants order by id offset 1 limit 1").fetchone()[0]
        target = conn.execute("select id from big where tenant_id = %s order by id limit 1", (b,)).fetchone()[0]
    waits: list[float] = []
    done = threading.Event()

    def writer() -> None:
        with connect(dsn, autocommit=True) as w:
            while not done.is_set():
                t0 = time.perf_counter()
                w.execute("update big set body = body where id = %s", (target,))
                waits.append(time.perf_counter() - t0)
                time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    report = probe(dsn, Config())
    took = time.perf_counter() - t0
    done.set()
    thread.join()
    with connect(dsn, autocommit=True) as conn:
        after = conn.execute(size).fetchone()[0]
    v = {cmd: report.outcome("public.big", cmd)[0] for cmd in ("select", "insert", "update", "delete")}
    print(f"lock: {rows} rows, USING (1 = 1): probe {took:.2f} s, verdicts {v}; a single-row writer of tenant B "
          f"ran {len(waits)} updates, longest {max(waits) * 1000:.1f} ms, median {statistics.median(waits) * 1000:.2f} ms; "
          f"pg_total_relation_size {before} -> {after} bytes")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=100)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--lock-rows", type=int, default=300_000)
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
    if args.lock_rows:
        lock_bench(server, args.lock_rows)


if __name__ == "__main__":
    main()
