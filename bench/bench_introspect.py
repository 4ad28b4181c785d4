"""Snapshot time on the demo database and on a generated schema of N tables (default 500).

    python -m bench.bench_introspect [--tables 500] [--repeat 5]

Uses the embedded PostgreSQL in a temporary data directory (or $DBGUARD_BENCH_DSN, a superuser URL).
Each generated table has a primary key, a tenant column with an index, a foreign key, RLS and a policy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from psycopg import sql

from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.pg import catalog
from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.session import connect


def make_schema(dsn: str, n: int) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute("create table if not exists tenants (id uuid primary key)")
        for i in range(n):
            conn.execute(
                sql.SQL(
                    "create table {t} (id bigint generated always as identity primary key, tenant_id uuid not null "
                    "references tenants(id), name text not null, created_at timestamptz default now());"
                    "create index on {t} (tenant_id); alter table {t} enable row level security;"
                    "create policy {p} on {t} using (tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid))"
                ).format(t=sql.Identifier(f"t{i:04d}"), p=sql.Identifier(f"p{i:04d}"))
            )


def timed(dsn: str, repeat: int) -> tuple[float, int]:
    times, tables = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        snap = catalog.introspect(dsn)
        times.append(time.perf_counter() - t0)
        tables = len(snap.tables)
    return statistics.median(times), tables


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    server = os.environ.get("DBGUARD_BENCH_DSN") or embedded_dsn("postgres", tempfile.mkdtemp(prefix="dbguard-bench-"))
    demo = create_demo_database(server, "bench_demo", replace=True)
    big_name = f"bench_{args.tables}_tables"
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(big_name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(big_name)))
    big = with_database(server, big_name)
    make_schema(big, args.tables)
    for label, dsn in (("demo", demo), (f"{args.tables} tables", big)):
        median, n = timed(dsn, args.repeat)
        print(
            f"snapshot of {label}: {n} tables in {median * 1000:.0f} ms (median of {args.repeat}), "
            f"{len(catalog.QUERIES)} catalog queries"
        )


if __name__ == "__main__":
    main()
