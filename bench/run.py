"""dbguard benchmarks, measured side by side in one run.

    python -m bench.run [--tables 1000] [--big 10] [--big-rows 1000000] [--small-rows 1000] [--repeat 3]
                        [--gx-tables N] [--record] [--keep]

On a generated database of ``--tables`` tenant tables (``--big`` of them with ``--big-rows`` rows, the others
with ``--small-rows``), it measures:

(a) introspection + every static rule  vs  ``pg_dump --schema-only`` of the same database;
(b) the data metrics of all tables      vs  a bare ``select count(*)`` of each table (one statement each);
(c) the same NULL checks in dbguard     vs  the equivalent Great Expectations suite run the usual way
    (one asset, batch definition, suite and validation definition per table, ``.run()`` each);
(d) peak RSS of a metrics run on the big tables at two sizes (``--big-rows`` and 1/100 of it).

The server is the embedded PostgreSQL in a temporary data directory (or ``$DBGUARD_BENCH_DSN``, a superuser
URL). ``--record`` writes the results to bench/results.md. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from dbguard_pipeline.pg.dsn import parse_dsn, with_database
from dbguard_pipeline.pg.embedded import embedded_dsn
from dbguard_pipeline.pg.session import connect

HERE = Path(__file__).resolve().parent
MARKER = "dbguard bench v1"
TENANTS = 50
POLICY = "tenant_id = (select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"


# --------------------------------------------------------------------------- generation
def _table_names(n_tables: int, n_big: int) -> tuple[list[str], list[str]]:
    big = [f"big_{i:02d}" for i in range(n_big)]
    small = [f"t_{i:04d}" for i in range(n_tables - n_big)]
    return big, small


def generate(server: str, dbname: str, n_tables: int, n_big: int, big_rows: int, small_rows: int, log=print) -> str:
    """Create the bench database unless one with the same shape exists (its comment records the shape)."""
    shape = f"{MARKER} tables={n_tables} big={n_big} big_rows={big_rows} small_rows={small_rows}"
    with connect(server, autocommit=True) as conn:
        row = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = %s", (dbname,)
        ).fetchone()
        if row and row[0] == shape:
            log(f"reusing database {dbname} ({shape})")
            return with_database(server, dbname)
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    dsn = with_database(server, dbname)
    big, small = _table_names(n_tables, n_big)
    t0 = time.perf_counter()
    with connect(dsn, autocommit=True) as conn:
        conn.execute("set synchronous_commit = off")
        conn.execute(
            sql.SQL("""
            create role authenticated nologin;
            create table tenants (id uuid primary key, name text not null);
            insert into tenants select md5(g::text)::uuid, 'tenant ' || g from generate_series(0, {n}) g;
        """).format(n=sql.Literal(TENANTS - 1))
            if not conn.execute("select 1 from pg_roles where rolname = 'authenticated'").fetchone()
            else sql.SQL("""
            create table tenants (id uuid primary key, name text not null);
            insert into tenants select md5(g::text)::uuid, 'tenant ' || g from generate_series(0, {n}) g;
        """).format(n=sql.Literal(TENANTS - 1))
        )
        # Small tables: tenant column (nullable, a few NULLs), foreign key to tenants, index, RLS, policy.
        # Every 10th table also references the previous one (a tenant-to-tenant foreign key: cross-tenant check).
        for start in range(0, len(small), 50):
            stmts = []
            for i in range(start, min(start + 50, len(small))):
                t = sql.Identifier(small[i])
                parent = small[i - 1] if i % 10 == 9 else None
                stmts.append(
                    sql.SQL("""
                    create table {t} (id bigint primary key, tenant_id uuid references tenants(id),
                                      parent_id bigint {ref}, name text not null, amount numeric(12, 2),
                                      created_at timestamptz not null default now());
                    insert into {t} (id, tenant_id, parent_id, name, amount)
                      select g, case when g % 997 = 0 then null else md5((g % {nt})::text)::uuid end,
                             {pid}, 'row ' || g, g % 1000
                      from generate_series(1, {rows}) g;
                    create index on {t} (tenant_id);
                    alter table {t} enable row level security;
                    create policy {p} on {t} for all to authenticated using ({pol}) with check ({pol});
                """).format(
                        t=t,
                        p=sql.Identifier(f"{small[i]}_tenant_isolation"),
                        rows=sql.Literal(small_rows),
                        nt=sql.Literal(TENANTS),
                        pol=sql.SQL(POLICY),
                        ref=sql.SQL("references {}(id)").format(sql.Identifier(parent)) if parent else sql.SQL(""),
                        pid=sql.SQL("g") if parent else sql.SQL("null"),
                    )
                )
            with conn.transaction():
                conn.execute(sql.SQL("").join(stmts))
        if small:
            log(f"  {len(small)} small tables x {small_rows} rows in {time.perf_counter() - t0:.1f}s")
        # Big tables: data first, then the foreign key (validated by one anti-join) and the index.
        for name in big:
            t1 = time.perf_counter()
            t = sql.Identifier(name)
            conn.execute(
                sql.SQL("""
                create table {t} (id bigint primary key, tenant_id uuid, name text not null, amount numeric(12, 2),
                                  created_at timestamptz not null default now());
                insert into {t} (id, tenant_id, name, amount)
                  select g, case when g % 99991 = 0 then null else md5((g % {nt})::text)::uuid end,
                         'row ' || g, g % 1000
                  from generate_series(1, {rows}) g;
                alter table {t} add foreign key (tenant_id) references tenants(id);
                create index on {t} (tenant_id);
                alter table {t} enable row level security;
                create policy {p} on {t} for all to authenticated using ({pol}) with check ({pol});
            """).format(
                    t=t,
                    p=sql.Identifier(f"{name}_tenant_isolation"),
                    rows=sql.Literal(big_rows),
                    nt=sql.Literal(TENANTS),
                    pol=sql.SQL(POLICY),
                )
            )
            log(f"  {name}: {big_rows:,} rows in {time.perf_counter() - t1:.1f}s")
        # Steady state, as a production table: hint bits set, visibility map and statistics up to date.
        conn.execute("vacuum (analyze, freeze)")
        conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(dbname), sql.Literal(shape)))
    log(f"generated {dbname} in {time.perf_counter() - t0:.1f}s")
    return dsn


# --------------------------------------------------------------------------- measurements
def _median(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def static_audit(dsn: str, config):
    from dbguard_pipeline.audit import static_findings
    from dbguard_pipeline.pg.catalog import introspect

    snap = introspect(dsn)
    return snap, static_findings(snap, config)


def pg_dump_schema(dsn: str) -> None:
    p = parse_dsn(dsn)
    import pgserver

    pg_dump = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"
    if not pg_dump.exists():
        pg_dump = Path(shutil.which("pg_dump") or "pg_dump")
    env = {
        **os.environ,
        "PGHOST": p.get("host", ""),
        "PGPORT": p.get("port", "5432"),
        "PGUSER": p.get("user", ""),
        "PGDATABASE": p.get("dbname", ""),
    }
    if p.get("password"):
        env["PGPASSWORD"] = p["password"]
    subprocess.run(
        [str(pg_dump), "--schema-only", "--no-owner", "-f", os.devnull], check=True, env=env, capture_output=True
    )


def count_each(dsn: str, tables: list[str]) -> int:
    total = 0
    with connect(dsn, autocommit=True) as conn:
        for t in tables:
            total += conn.execute(sql.SQL("select count(*) from public.{}").format(sql.Identifier(t))).fetchone()[0]
    return total


def metrics_run(dsn: str, snapshot, config):
    from dbguard_pipeline.pg.metrics import collect_metrics

    return collect_metrics(dsn, snapshot, config)


def gx_usual_way(dsn: str, tables: list[str]) -> int:
    """The Great Expectations way: per table an asset, a whole-table batch definition, a suite with the NULL
    check and a validation definition, run. Returns the number of failed validations."""
    import warnings

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from dbguard_pipeline.config import Config
    from dbguard_pipeline.pg.expectations import _engine_args

    url, connect_args = _engine_args(dsn, Config())
    failed = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        ds = context.data_sources.add_postgres("bench", connection_string=url, kwargs={"connect_args": connect_args})
        for t in tables:
            asset = ds.add_table_asset(t, table_name=t, schema_name="public")
            batch_definition = asset.add_batch_definition_whole_table("all")
            suite = context.suites.add(gx.ExpectationSuite(name=f"suite_{t}"))
            suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="tenant_id"))
            vd = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"validate_{t}", data=batch_definition, suite=suite)
            )
            if not vd.run().success:
                failed += 1
    return failed


# Peak RSS from /proc/self/status VmHWM: getrusage's ru_maxrss survives exec, so a child started from this
# (large) process would report the parent's high-water mark.
RSS_CHILD = r"""
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.config import Config
from dbguard_pipeline.pg.metrics import collect_metrics
dsn, tables = sys.argv[1], json.loads(sys.argv[2])
snap = introspect(dsn)
before = hwm()
m = collect_metrics(dsn, snap, Config(), tables=tables)
after = hwm()
print(json.dumps({"rows": sum(v.rows or 0 for v in m.values()), "before_kb": before, "peak_kb": after}))
"""


def peak_rss(dsn: str, tables: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, dsn, json.dumps(tables)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", type=int, default=1000)
    ap.add_argument("--big", type=int, default=10)
    ap.add_argument("--big-rows", type=int, default=1_000_000)
    ap.add_argument("--small-rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--gx-tables",
        type=int,
        default=None,
        help="run the GX comparison on this many tables (the big ones first; default: all)",
    )
    ap.add_argument("--record", action="store_true", help="write the results to bench/results.md")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument(
        "--pgdata",
        metavar="DIR",
        help="embedded server data directory to use and keep (a database of the same shape is reused)",
    )
    args = ap.parse_args(argv)

    tmp = None
    server = os.environ.get("DBGUARD_BENCH_DSN")
    if not server and args.pgdata:
        args.keep = True
        tmp = args.pgdata
        server = embedded_dsn("postgres", tmp)
    elif not server:
        tmp = tempfile.mkdtemp(prefix="dbguard-bench-")
        server = embedded_dsn("postgres", tmp)
    try:
        return _run(server, args)
    finally:
        if tmp:
            from dbguard_pipeline.pg import embedded as db

            srv = db._servers.pop(str(Path(tmp).resolve()), None) or db._servers.pop(tmp, None)
            if srv is not None:
                with contextlib.suppress(Exception):  # noqa: BLE001  (stopping the bench's own scratch server)
                    srv.cleanup()
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)


def _run(server: str, args) -> int:
    from dbguard_pipeline.config import Config

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    dsn = generate(server, "bench_main", args.tables, args.big, args.big_rows, args.small_rows, log)
    big, small = _table_names(args.tables, args.big)
    tables = big + small
    config = Config()
    r = args.repeat
    results: dict[str, object] = {}

    # (a) schema: warm up both, then alternate
    pg_dump_schema(dsn), static_audit(dsn, config)
    t_dump, _ = _median(lambda: pg_dump_schema(dsn), r)
    t_static, (snap, static) = _median(lambda: static_audit(dsn, config), r)
    from dbguard_pipeline.pg.catalog import introspect as _snap_only

    t_intro, _ = _median(lambda: _snap_only(dsn), r)
    results["a"] = {
        "pg_dump": t_dump,
        "dbguard": t_static,
        "introspect": t_intro,
        "tables": len(snap.tables),
        "findings": len(static),
    }
    log(
        f"(a) pg_dump --schema-only {t_dump:.3f}s; introspection + static rules {t_static:.3f}s "
        f"({len(static)} findings)"
    )

    # (b) data: warm the cache with one pass of each, then alternate the two r times
    count_each(dsn, tables), metrics_run(dsn, snap, config)
    counts, metrics = [], []
    for _ in range(r):
        t0 = time.perf_counter()
        rows = count_each(dsn, tables)
        counts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m = metrics_run(dsn, snap, config)
        metrics.append(time.perf_counter() - t0)
    t_count, t_metrics = statistics.median(counts), statistics.median(metrics)
    refs = sum(len(v.references) for v in m.values())
    not_measured = m.not_measured()
    assert not not_measured, not_measured
    assert sum(v.rows for v in m.values() if v.table != "tenants") == rows
    results["b"] = {"count": t_count, "metrics": t_metrics, "rows": rows, "references": refs}
    log(f"(b) count(*) of each table {t_count:.3f}s; data metrics {t_metrics:.3f}s ({rows:,} rows, {refs} references)")

    # (c) NULL checks: dbguard (snapshot + metrics) vs GX the usual way
    gx_tables = tables if args.gx_tables is None else tables[: args.gx_tables]
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (import time reported separately)

    t_gx_import = time.perf_counter() - t0
    from dbguard_pipeline.pg.catalog import introspect as _introspect
    from dbguard_pipeline.pg.metrics import collect_metrics

    def dbguard_nulls():
        s = _introspect(dsn)
        return collect_metrics(dsn, s, config, tables=[f"public.{t}" for t in gx_tables])

    t_dbg_c, mc = _median(dbguard_nulls, r)
    t0 = time.perf_counter()
    gx_failed = gx_usual_way(dsn, gx_tables)
    t_gx = time.perf_counter() - t0
    dbg_failed = sum(1 for v in mc.values() if v.tenant_nulls)
    results["c"] = {
        "gx": t_gx,
        "gx_import": t_gx_import,
        "dbguard": t_dbg_c,
        "tables": len(gx_tables),
        "gx_failed": gx_failed,
        "dbguard_failed": dbg_failed,
    }
    log(
        f"(c) GX {t_gx:.1f}s (+{t_gx_import:.1f}s import) vs dbguard {t_dbg_c:.3f}s on {len(gx_tables)} tables; "
        f"tables with NULL tenants: GX {gx_failed}, dbguard {dbg_failed}"
    )

    # (d) memory: the metrics of as many small tables as there are big ones, then of the big ones, in the same
    # database (same snapshot, same process setup): only the number of rows differs
    rss_big = peak_rss(dsn, [f"public.{t}" for t in big])
    rss_small = peak_rss(dsn, [f"public.{t}" for t in small[: len(big)]])
    results["d"] = {"big": rss_big, "small": rss_small}
    log(
        f"(d) peak RSS {rss_small['peak_kb'] / 1024:.1f} MiB at {rss_small['rows']:,} rows, "
        f"{rss_big['peak_kb'] / 1024:.1f} MiB at {rss_big['rows']:,} rows"
    )

    report = render_results(results, args, snap)
    print(report)
    if args.record:
        (HERE / "results.md").write_text(report, encoding="utf-8")
        log(f"wrote {HERE / 'results.md'}")
    return 0


def render_results(res: dict, args, snap) -> str:
    a, b, c, d = res["a"], res["b"], res["c"], res["d"]
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    lines = [
        "# dbguard benchmark results",
        "",
        f"Recorded {now} with `python -m bench.run --tables {args.tables} --big {args.big} --big-rows {args.big_rows} "
        f"--small-rows {args.small_rows} --repeat {args.repeat}"
        + (f" --gx-tables {args.gx_tables}" if args.gx_tables else "")
        + "`",
        f"on PostgreSQL {snap.server_version} (embedded pgserver), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other work (timings are medians of {args.repeat} runs unless noted).",
        "",
        f"Database: {a['tables']} tables ({args.tables} tenant tables + `tenants`), {b['rows']:,} rows; "
        f"{args.big} tables of {args.big_rows:,} rows, the others {args.small_rows:,} rows.",
        "",
        "| | dbguard | reference | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f"| (a) introspection + every static rule vs `pg_dump --schema-only` | {a['dbguard']:.3f} s | "
        f"{a['pg_dump']:.3f} s | {a['dbguard'] / a['pg_dump']:.2f}x | < 1x | "
        f"{'yes' if a['dbguard'] < a['pg_dump'] else 'no'} |",
        f"| (b) data metrics of all tables vs `select count(*)` of each | {b['metrics']:.3f} s | {b['count']:.3f} s | "
        f"{b['metrics'] / b['count']:.2f}x | <= 1.5x | {'yes' if b['metrics'] <= 1.5 * b['count'] else 'no'} |",
        f"| (c) NULL checks vs Great Expectations, one validation per table ({c['tables']} tables) | "
        f"{c['dbguard']:.3f} s | {c['gx']:.1f} s | {c['gx'] / c['dbguard']:.0f}x faster | >= 5x faster | "
        f"{'yes' if c['gx'] >= 5 * c['dbguard'] else 'no'} |",
        f"| (d) peak RSS of the metrics run, {d['small']['rows']:,} vs {d['big']['rows']:,} rows | "
        f"{d['big']['peak_kb'] / 1024:.1f} MiB | {d['small']['peak_kb'] / 1024:.1f} MiB | "
        f"{d['big']['peak_kb'] / d['small']['peak_kb']:.2f}x for {d['big']['rows'] / max(d['small']['rows'], 1):,.0f}x "
        f"the rows | flat | {'yes' if d['big']['peak_kb'] <= 1.05 * d['small']['peak_kb'] else 'no'} |",
        "",
        "Details:",
        "",
        f"- (a) introspection alone {a['introspect']:.3f} s ({a['introspect'] / a['pg_dump']:.2f}x pg_dump), so the "
        f"static rules take about {max(a['dbguard'] - a['introspect'], 0):.3f} s; {a['findings']} static findings; "
        f"the snapshot has {a['tables']} tables.",
        f"- (b) {b['rows']:,} rows counted; the metrics run also checked {b['references']} references "
        f"(tenant-to-tenant foreign keys for cross-tenant rows).",
        f"- (c) Great Expectations import {c['gx_import']:.1f} s (not included above), one run (not a median); tables "
        f"with NULL tenants found: GX {c['gx_failed']}, dbguard {c['dbguard_failed']}. dbguard's time includes "
        f"the introspection.",
        f"- (d) {len(snap.tables) - 1 - args.big} tables of {args.small_rows:,} rows: {args.big} of them for the small "
        f"run, the {args.big} big tables for the large one. RSS before the metrics (imports + snapshot): "
        f"{d['small']['before_kb'] / 1024:.1f} MiB and {d['big']['before_kb'] / 1024:.1f} MiB; growth during the "
        f"metrics run: {(d['small']['peak_kb'] - d['small']['before_kb']) / 1024:.1f} MiB and "
        f"{(d['big']['peak_kb'] - d['big']['before_kb']) / 1024:.1f} MiB.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
