"""dbguard's bench against an existing database (e.g. ../shared/bench's), every figure from one run.

    python -m bench.bench_db --bench-db DSN [--repeat 3] [--gx-tables 20] [--skip-gx]

(1) start-up + catalog + static rules: ``dbguard validate --no-data`` as a process vs ``pg_dump --schema-only``,
    CPU time (user+sys of the child, load-independent) and wall time, beside the bare interpreter;
(2) data metrics (``collect_metrics``, in process) vs the ideal hand-written SQL doing the same checks: one
    ``count(*), count(tenant)`` scan per audited table and one LEFT JOIN per checked reference answering orphans
    and cross-tenant rows together, each its own statement, on one connection, no dbguard code in the loop;
(3) not-null expectations (``ExpectColumnValuesToNotBeNull`` on every column of ``--gx-tables`` tables, the
    documented dbguard.yaml path) evaluated by dbguard's SQL engine vs Great Expectations, same results checked.

Wall times are medians of ``--repeat``; the load average is printed beside them. Compare only figures of one run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from psycopg import sql

from dbguard_pipeline.config import Config, Expectation
from dbguard_pipeline.pg.catalog import introspect
from dbguard_pipeline.pg.metrics import _from, _plans, collect_metrics
from dbguard_pipeline.pg.session import connect


def _child(cmd: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall, cpu) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _median(xs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(x[0] for x in xs), statistics.median(x[1] for x in xs)


def _pg_dump(dsn: str) -> str:
    """A pg_dump of the server's major version (pg_dump refuses newer servers): pgserver's, else the system's."""
    with connect(dsn) as conn:
        major = conn.info.server_version // 10000
    cands = [f"/usr/lib/postgresql/{major}/bin/pg_dump"]
    try:
        import pgserver

        cands.append(os.path.join(os.path.dirname(pgserver.__file__), "pginstall", "bin", "pg_dump"))
    except ImportError:
        pass
    for cand in cands:
        if os.path.exists(cand):
            out = subprocess.run([cand, "--version"], capture_output=True, text=True).stdout
            if f" {major}." in out:
                return cand
    raise SystemExit(f"no pg_dump of major version {major} found")


def startup(dsn: str, repeat: int, out: str) -> None:
    py = sys.executable
    cli = [py, "-m", "dbguard_pipeline.cli", "validate", "--dsn", dsn, "--no-data", "--format", "json", "--out", out]
    dump = [_pg_dump(dsn), "--schema-only", "-f", out + ".sql", dsn]
    bare = [py, "-c", "pass"]
    runs: dict[str, list] = {"dbguard": [], "pg_dump": [], "python": []}
    for _ in range(repeat):
        runs["python"].append(_child(bare))
        runs["dbguard"].append(_child(cli, (0, 1)))  # dbguard exits 1 when it found something
        runs["pg_dump"].append(_child(dump))
    (dw, dc), (pw, pc), (iw, ic) = _median(runs["dbguard"]), _median(runs["pg_dump"]), _median(runs["python"])
    print(
        f"(1) validate --no-data: wall {dw:.3f} s, cpu {dc:.3f} s | pg_dump --schema-only: wall {pw:.3f} s, "
        f"cpu {pc:.3f} s | python -c pass: wall {iw:.3f} s, cpu {ic:.3f} s"
    )
    print(f"    ratio wall {dw / pw:.2f}x; dbguard cpu above the interpreter {dc - ic:.3f} s")


def ideal_metrics(dsn: str, snapshot, config: Config) -> tuple[int, int]:
    """The hand-written baseline: one scan per table, one join per checked reference. Returns (scans, joins)."""
    plans = _plans(snapshot, config, None)
    scans = joins = 0
    with connect(dsn, autocommit=True) as conn:
        conn.execute("set row_security = off")
        for p in plans:
            child = _from(p.table.schema, p.table.name, "c", p.table.kind == "table", p.sample)
            cols = [sql.SQL("count(*)")] + [sql.SQL("count({})").format(sql.Identifier(c)) for c in p.columns]
            rows = conn.execute(sql.SQL("select {} from {}").format(sql.SQL(", ").join(cols), child)).fetchone()
            scans += 1
            if not rows[0]:
                continue
            for ref in p.references:
                parent = _from(ref.ref_schema, ref.ref_table, "p", ref.ref_only, None)
                on = sql.SQL(" and ").join(
                    sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                    for cc, pc in zip(ref.columns, ref.ref_columns, strict=True)
                )
                nn = sql.SQL(" and ").join(sql.SQL("c.{} is not null").format(sql.Identifier(cc)) for cc in ref.columns)
                tenant = (
                    sql.SQL("count(*) filter (where p.{} <> c.{})").format(
                        sql.Identifier(ref.ref_tenant_column), sql.Identifier(ref.tenant_column)
                    )
                    if ref.check_tenant
                    else sql.SQL("null")
                )
                conn.execute(
                    sql.SQL(
                        "select count(*) filter (where p.{k} is null), {x} from {c} left join {p} on {on} where {nn}"
                    ).format(k=sql.Identifier(ref.ref_columns[0]), x=tenant, c=child, p=parent, on=on, nn=nn)
                ).fetchone()
                joins += 1
    return scans, joins


def metrics(dsn: str, repeat: int) -> None:
    config = Config()
    snapshot = introspect(dsn)
    ours, ideal = [], []
    counts = (0, 0)
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        collect_metrics(dsn, snapshot, config)
        ours.append((time.perf_counter() - t, time.process_time() - c))
        t, c = time.perf_counter(), time.process_time()
        counts = ideal_metrics(dsn, snapshot, config)
        ideal.append((time.perf_counter() - t, time.process_time() - c))
    (ow, oc), (iw, ic) = _median(ours), _median(ideal)
    print(
        f"(2) data metrics: dbguard wall {ow:.3f} s (client cpu {oc:.3f} s) | ideal SQL ({counts[0]} scans + "
        f"{counts[1]} joins) wall {iw:.3f} s (client cpu {ic:.3f} s) | ratio {ow / iw:.2f}x"
    )


def expectations(dsn: str, n_tables: int, skip_gx: bool) -> None:
    from dbguard_pipeline.pg.expectations import run_expectations
    from dbguard_pipeline.semantics.tenancy import audited_tables

    snapshot = introspect(dsn)
    tables = sorted(audited_tables(snapshot, Config()), key=lambda t: -max(t.row_estimate, 0))[:n_tables]
    suite = tuple(
        Expectation(table=t.qualified, type="ExpectColumnValuesToNotBeNull", kwargs={"column": c.name})
        for t in tables
        for c in t.columns
    )
    config = Config(expectations=suite)
    t, c = time.perf_counter(), time.process_time()
    ours = run_expectations(dsn, config, snapshot)
    ow, oc = time.perf_counter() - t, time.process_time() - c
    line = (
        f"(3) not-null expectations, {len(suite)} on {len(tables)} tables (largest first): dbguard "
        f"wall {ow:.3f} s (cpu {oc:.3f} s)"
    )
    if not skip_gx:
        t, c = time.perf_counter(), time.process_time()
        gx = run_expectations(dsn, config, snapshot, engine="gx")
        gw, gc = time.perf_counter() - t, time.process_time() - c
        same = all((a.success, a.observed) == (b.success, b.observed) for a, b in zip(gx, ours, strict=True))
        line += f" | Great Expectations wall {gw:.3f} s (cpu {gc:.3f} s) | {gw / ow:.0f}x faster, same results: {same}"
    print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench-db", required=True, metavar="DSN")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gx-tables", type=int, default=20)
    ap.add_argument("--skip-gx", action="store_true")
    ap.add_argument("--out", default="/tmp/dbguard_bench_db.json")
    ns = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    startup(ns.bench_db, ns.repeat, ns.out)
    metrics(ns.bench_db, ns.repeat)
    expectations(ns.bench_db, ns.gx_tables, ns.skip_gx)
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
