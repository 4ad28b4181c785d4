"""dbguard analyze, measured: overhead before and after its proven fixes on the planted database, and the time and
peak memory of analyzing a 1,000-table database.

    python -m bench.bench_analyze [--skip-planted] [--skip-wide] [--tables 1000] [--rows 100 2000] [--pgdata DIR]

(a) planted: bench/planted.py at bench scale (a 1,000,000-row table without a tenant index, per-row auth.jwt()
    and current_setting(), a membership policy whose look-up has no index, ...). ``analyze`` names the causes and
    proves the fixes on a scratch copy; the proposed migrations are written to files and applied with
    ``dbguard migrate up`` (the ledger runner); ``analyze`` runs again. Per table: overhead and app-role time
    before and after. Target: the overhead of the planted tables drops at least 10x.
(b) wide: ``--tables`` tenant tables done right (wrapped context, tenant index) at each ``--rows`` per table,
    analyzed with the default settings in a child process: wall time (target < 60 s) and peak RSS, which must
    not grow with the rows.

The server is the embedded PostgreSQL in a temporary data directory (or ``$DBGUARD_BENCH_DSN``, a superuser URL).
Timings are reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psycopg import sql

from bench.planted import BENCH, CONFIG, create_planted_database
from dbguard_pipeline.config import Config
from dbguard_pipeline.pg.dsn import with_database
from dbguard_pipeline.pg.session import connect

PLANTED = ("public.orders", "public.invoices", "public.projects", "public.memberships", "public.events")
WIDE_POLICY = "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"


def _x(v) -> str:
    return "-" if v is None else f"{v:,.1f}x"


def _ms(v) -> str:
    return "-" if v is None else f"{v:,.2f}"


# --------------------------------------------------------------------------- (a) planted
def planted(server: str, log=print, text_out: str | None = None) -> list[dict]:
    from dbguard_pipeline.analyze import Options, analyze
    from dbguard_pipeline.fixes.script import rendered, write_files

    config = Config.model_validate(CONFIG)
    t0 = time.perf_counter()
    dsn = create_planted_database(server, "dbguard_bench_planted", BENCH)
    log(f"planted database generated in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    before = analyze(dsn, config, options=Options(runs=5), progress=lambda line: log("  " + line))
    log(f"analyze (with the proof on a scratch copy): {time.perf_counter() - t0:.1f} s")
    if text_out:
        from dbguard_pipeline.analyze.render import to_text

        Path(text_out).write_text(to_text(before), encoding="utf-8")
    proposed = list({id(s): s for t in before.tables for s in t.proposed}.values())
    folder = Path(tempfile.mkdtemp(prefix="dbguard-bench-migrations-"))
    texts: dict[str, str] = {}
    for i, s in enumerate(proposed):  # one timestamp each: the runner applies them in the order they were proven
        texts.update(rendered([s.migration], f"2026010100{i:04d}"))
    write_files(folder, texts)
    run = subprocess.run([sys.executable, "-m", "dbguard_pipeline.cli", "migrate", "up", "--dir", str(folder),
                          "--dsn", dsn], capture_output=True, text=True)
    log(f"dbguard migrate up ({len(proposed)} migrations): exit {run.returncode}")
    if run.returncode != 0:
        log(run.stdout + run.stderr)
    after = analyze(dsn, config, options=Options(runs=5, prove=False))
    rows = []
    for t in before.measured:
        a = next(x for x in after.tables if x.table == t.table)
        rows.append({"table": t.table, "planted": t.table in PLANTED, "causes": sorted({c.kind for c in t.causes}),
                     "fixes": [s.title.split(":")[0] for s in t.proposed],
                     "overhead_before": t.overhead, "overhead_after": a.overhead,
                     "app_ms_before": t.total("app"), "app_ms_after": a.total("app"),
                     "owner_ms_before": t.total("owner"), "owner_ms_after": a.total("owner")})
    return rows


def planted_table(rows: list[dict]) -> str:
    out = ["| table | causes named | proven fixes applied | overhead before | overhead after | drop | "
           "app ms before | app ms after | owner ms before | owner ms after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drop = (r["overhead_before"] / r["overhead_after"]) if r["overhead_after"] else None
        out.append(f"| {r['table']}{' (planted)' if r['planted'] else ''} | {', '.join(r['causes']) or '-'} | "
                   f"{'; '.join(r['fixes']) or '-'} | {_x(r['overhead_before'])} | {_x(r['overhead_after'])} | "
                   f"{_x(drop)} | {_ms(r['app_ms_before'])} | {_ms(r['app_ms_after'])} | "
                   f"{_ms(r['owner_ms_before'])} | {_ms(r['owner_ms_after'])} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- (b) wide
def make_wide(server: str, dbname: str, tables: int, rows: int, log=print) -> str:
    shape = f"dbguard analyze bench wide tables={tables} rows={rows}"
    with connect(server, autocommit=True) as conn:
        row = conn.execute("select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
                           (dbname,)).fetchone()
        if row and row[0] == shape:
            log(f"reusing {dbname}")
            return with_database(server, dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = with_database(server, dbname)
    t0 = time.perf_counter()
    with connect(dsn, autocommit=True) as conn:
        conn.execute("do $$ begin if not exists (select 1 from pg_roles where rolname = 'authenticated') then "
                     "create role authenticated nologin; end if; end $$")
        conn.execute("create table tenants (id uuid primary key, name text not null);"
                     "insert into tenants select md5('t' || g)::uuid, 'tenant ' || g from generate_series(1, 10) g")
        for start in range(0, tables, 50):
            with conn.transaction():
                for i in range(start, min(tables, start + 50)):
                    t = sql.Identifier(f"t{i:04d}")
                    conn.execute(sql.SQL(
                        "create table {t} (id bigint primary key, tenant_id uuid not null references tenants(id), "
                        "name text not null); create index on {t} (tenant_id);"
                        "alter table {t} enable row level security;"
                        "create policy p on {t} for all to authenticated using (" + WIDE_POLICY + ") with check ("
                        + WIDE_POLICY + "); grant select on {t} to authenticated;"
                        "insert into {t} select g, md5('t' || (g % 10 + 1))::uuid, 'row ' || g "
                        "from generate_series(1, {rows}) g").format(t=t, rows=sql.Literal(rows)))
        conn.execute("vacuum analyze")
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(dbname), sql.Literal(shape)))
    log(f"{dbname}: {tables} tables x {rows} rows generated in {time.perf_counter() - t0:.0f} s")
    return dsn


def child(dsn: str) -> None:
    """Analyze with the default settings and print seconds and peak RSS (this process's, in KiB)."""
    from dbguard_pipeline.analyze import analyze

    t0 = time.perf_counter()
    report = analyze(dsn, Config())
    s = report.summary()
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "maxrss_kib": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss, "measured": s["measured"], "max_overhead": s["max_overhead"],
        "suggestions": s["suggestions"], "causes": s["causes"]}))


def wide(server: str, tables: int, rows_list: list[int], log=print) -> list[dict]:
    out = []
    for rows in rows_list:
        dsn = make_wide(server, f"dbguard_bench_wide_{tables}_{rows}", tables, rows, log)
        run = subprocess.run([sys.executable, "-m", "bench.bench_analyze", "--child", dsn], capture_output=True,
                             text=True)
        if run.returncode != 0:
            raise SystemExit(run.stderr)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        result.update(tables=tables, rows=rows)
        log(f"  {tables} tables x {rows} rows: {result}")
        out.append(result)
    return out


def wide_table(results: list[dict]) -> str:
    out = ["| tables | rows per table | tables measured | analyze wall time (s) | peak RSS (MiB) | max overhead |",
           "|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r['tables']} | {r['rows']:,} | {r['measured']} | {r['seconds']:.1f} | "
                   f"{r['maxrss_kib'] / 1024:.0f} | {_x(r['max_overhead'])} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-planted", action="store_true")
    ap.add_argument("--skip-wide", action="store_true")
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--rows", type=int, nargs="+", default=[100, 2000])
    ap.add_argument("--text-out", metavar="FILE", help="write the text report of the planted database here")
    ap.add_argument("--pgdata", help="the embedded server's data directory (kept; default: a temporary one)")
    ap.add_argument("--child", metavar="DSN", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    server = os.environ.get("DBGUARD_BENCH_DSN")
    if not server:
        from dbguard_pipeline.pg.embedded import embedded_dsn

        server = embedded_dsn("postgres", args.pgdata or tempfile.mkdtemp(prefix="dbguard-bench-analyze-"))
    print(f"server: {connect(server).execute('select version()').fetchone()[0]}", flush=True)
    if not args.skip_planted:
        rows = planted(server, log=lambda line: print(line, flush=True), text_out=args.text_out)
        print("\n## Planted database: overhead before and after the proven fixes\n")
        print(planted_table(rows))
    if not args.skip_wide:
        results = wide(server, args.tables, args.rows, log=lambda line: print(line, flush=True))
        print(f"\n## {args.tables} tenant tables, default settings\n")
        print(wide_table(results))


if __name__ == "__main__":
    main()
