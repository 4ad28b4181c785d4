"""How the text report reads at scale: 300 tenant tables with a realistic mix of problems, then
`dbguard validate` (grouped text, as a user sees it) and the line counts of each text layout; with
``--isolation``, `dbguard test-isolation` too (one probe run, its text rendered in each layout).

    python -m bench.text_300 [--tables 300] [--head 30] [--isolation]

Uses the embedded PostgreSQL in a temporary data directory (or $DBGUARD_BENCH_DSN, a superuser URL)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

SHIM = Path(__file__).resolve().parents[1] / "dbguard_pipeline" / "demo" / "supabase_shim.sql"
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"


def schema_sql(n: int) -> str:
    out = [
        SHIM.read_text(),
        "create table public.tenants (id uuid primary key, name text not null);",
        "insert into public.tenants select md5('t' || i)::uuid, 't' || i from generate_series(1, 5) i;",
        "alter table public.tenants enable row level security;",
        f"create policy tenants_self on public.tenants to authenticated using (id = {CTX});",
    ]
    for i in range(n):
        t = f"public.items_{i:03d}"
        out.append(
            f"create table {t} (id bigint primary key, tenant_id uuid not null references public.tenants(id), "
            f"name text); create index on {t} (tenant_id);"
            f"insert into {t} select g, md5('t' || (g % 5 + 1))::uuid, 'n' from generate_series(1, 20) g;"
            f"grant select, insert, update, delete on {t} to authenticated;"
        )
        kind = i % 10
        if kind == 0:  # RLS never enabled
            continue
        out.append(f"alter table {t} enable row level security;")
        if kind in (1, 2, 3):  # the Supabase dashboard's "Enable read access for all users"
            out.append(f'create policy "Enable read access for all users" on {t} for select using (true);')
        elif kind == 4:  # cast without nullif, per-row evaluation
            out.append(
                f"create policy p on {t} to authenticated using "
                f"(tenant_id = current_setting('app.current_tenant_id', true)::uuid);"
            )
        else:
            out.append(
                f"create policy p on {t} to authenticated using (tenant_id = {CTX}) with check (tenant_id = {CTX});"
            )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=300)
    ap.add_argument("--head", type=int, default=30)
    ap.add_argument("--isolation", action="store_true", help="also probe isolation and count its text layouts")
    args = ap.parse_args()
    dsn = os.environ.get("DBGUARD_BENCH_DSN")
    keep = None
    if not dsn:
        import pgserver

        keep = tempfile.mkdtemp(prefix="dbguard-text300-")
        server = pgserver.get_server(keep, cleanup_mode="delete")
        dsn = server.get_uri("postgres")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop database if exists text300")
        conn.execute("create database text300")
    db = psycopg.conninfo.make_conninfo(dsn, dbname="text300")
    t0 = time.perf_counter()
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(schema_sql(args.tables))
    print(f"# generated {args.tables} tenant tables in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    cli = [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--dsn", db]
    counts = {}
    for name, extra in (
        ("grouped by rule", []),
        ("grouped by table", ["--group-by", "table"]),
        ("--verbose", ["--verbose"]),
    ):
        t0 = time.perf_counter()
        proc = subprocess.run([*cli, *extra], capture_output=True, text=True)
        counts[name] = (len(proc.stdout.splitlines()), time.perf_counter() - t0)
        if name == "grouped by rule":
            head = proc.stdout.splitlines()[: args.head]
    from dbguard_pipeline.audit import run_audit
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.report import render

    sectioned = render(run_audit(db, Config()), "text", color=False)  # the layout validate had before
    counts["sectioned (before; dbguard demo's layout)"] = (len(sectioned.splitlines()), 0.0)
    print("\n".join(head))
    print()
    for name, (lines, secs) in counts.items():
        print(f"# validate, {name}: {lines} lines, {secs:.1f}s")
    if args.isolation:
        from dbguard_pipeline import services

        t0 = time.perf_counter()
        report = services.probe(db, Config())
        took = time.perf_counter() - t0
        layouts = {
            "grouped by table": report.to_text(),
            "grouped by command": report.to_text(group_by="command"),
            "--verbose": report.to_text(verbose=True),
        }
        print()
        print("\n".join(layouts["grouped by table"].splitlines()[: args.head]))
        print()
        print(f"# test-isolation probe: {len(report.tables)} relations, {len(report.results)} probes, {took:.1f}s")
        for name, text in layouts.items():
            print(f"# test-isolation, {name}: {len(text.splitlines())} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
