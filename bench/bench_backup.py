"""Backup and restore: time and size on the demo database and on a table of 1,000,000 rows.

    python -m bench.bench_backup [--rows 1000000] [--repeat 3]

For each database: ``backup.take`` (row counts and checksums on an exported snapshot, then ``pg_dump -Fc``
of the same snapshot), next to a bare ``pg_dump -Fc`` of the same tables (the reference: what the checksums
cost on top); ``backup.restore`` in place without and with ``verify`` (one transaction: foreign keys dropped
and re-checked, TRUNCATE, COPY, checksums again); and ``restore --into-scratch`` (a copy of the database,
restored and verified, dropped). Medians of ``--repeat`` runs; the size is the dump file's.

Uses the embedded PostgreSQL in a temporary data directory (or $DBGUARD_BENCH_DSN, a superuser URL).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from psycopg import sql

from bench.run import _median
from dbguard_pipeline import backup
from dbguard_pipeline.backup.archive import table_pattern, tool_env
from dbguard_pipeline.backup.checksum import resolve
from dbguard_pipeline.demo import create_demo_database
from dbguard_pipeline.pg.clients import client_binary
from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.session import connect


def make_big(server: str, rows: int) -> str:
    name = f"bench_backup_{rows}"
    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    dsn = with_database(server, name)
    with connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table tenants (id uuid primary key, name text not null);"
            "insert into tenants select md5('t' || g)::uuid, 'tenant ' || g from generate_series(1, 50) g"
        )
        conn.execute(
            sql.SQL(
                "create table big (id bigint primary key, tenant_id uuid, name text not null, amount numeric(12, 2),"
                " created_at timestamptz not null);"
                "insert into big select g, md5('t' || (g % 50 + 1))::uuid, 'row ' || g, (g % 100000) / 100.0,"
                " timestamptz '2025-01-01' + g * interval '1 second' from generate_series(1, {rows}) g;"
                "alter table big add foreign key (tenant_id) references tenants (id);"
                "create index on big (tenant_id);"
            ).format(rows=sql.Literal(rows))
        )
        conn.execute("vacuum (analyze, freeze)")
    return dsn


def bare_pg_dump(dsn: str, tables: list[str] | None, out: Path) -> int:
    with connect(dsn) as conn:
        targets = resolve(conn, tables) if tables else None
    cmd = [client_binary("pg_dump"), "--format=custom", f"--file={out}"]
    cmd += [f"--table={table_pattern(t)}" for t in targets] if targets else ["--no-blobs"]
    subprocess.run(cmd, env=tool_env(dsn, "pg_dump"), check=True, capture_output=True)
    return out.stat().st_size


def measure(label: str, dsn: str, tables: list[str] | None, repeat: int, work: Path) -> list[str]:
    out = work / label
    took, b = _median(lambda: backup.take(dsn, tables, out_dir=out), repeat)
    assert isinstance(b, backup.Backup)
    m = b.manifest
    ref_s, ref_size = _median(lambda: bare_pg_dump(dsn, tables, work / f"{label}.ref.pgdump"), repeat)
    plain_s, _ = _median(lambda: backup.restore(b.path, dsn), repeat)
    verified_s, r = _median(lambda: backup.restore(b.path, dsn, verify=True), repeat)
    assert isinstance(r, backup.RestoreResult) and r.ok
    scratch_s, r = _median(lambda: backup.restore(b.path, dsn, scratch=True), repeat)
    assert isinstance(r, backup.RestoreResult) and r.ok
    return [
        f"| {label} | {len(m.tables)} | {m.rows:,} | {took:.2f} s | {ref_s:.2f} s | "
        f"{backup.human_bytes(m.dump_bytes)} ({backup.human_bytes(int(ref_size))}) | {plain_s:.2f} s | "
        f"{verified_s:.2f} s | {scratch_s:.2f} s ({r.mode}) |"
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    server = os.environ.get("DBGUARD_BENCH_DSN") or embedded_dsn("postgres", tempfile.mkdtemp(prefix="dbguard-bench-"))
    demo = create_demo_database(server, "bench_backup_demo", replace=True)
    big = make_big(server, args.rows)
    with tempfile.TemporaryDirectory(prefix="dbguard-bench-backup-") as tmp:
        work = Path(tmp)
        rows = [
            "| database | tables | rows | backup | bare pg_dump | dump size (bare) | restore | restore --verify "
            "| restore --into-scratch |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows += measure("demo (--all)", demo, None, args.repeat, work)
        rows += measure(f"{args.rows:,}-row table", big, ["public.big"], args.repeat, work)
    print(f"median of {args.repeat} runs each\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
