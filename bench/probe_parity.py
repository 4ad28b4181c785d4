"""The probe's verdicts and the sizes it leaves, on the demo, every repro database and (optionally) a copy of a
bench database: one JSON file per run, so that two checkouts can be compared (issue 12: a change to how the
probe proves a write must not change a verdict, and must leave every table the size it was).

    python -m bench.probe_parity --server postgresql://postgres:@/postgres?host=/tmp/sharedbench \
        --bench-db bench250 --out /tmp/after.json [--compare /tmp/before.json]

Each database is created fresh (the bench one as ``CREATE DATABASE ... TEMPLATE``), VACUUM ANALYZEd and
CHECKPOINTed, measured (``pg_total_relation_size`` of every table, ``pg_database_size``), probed with
``services.probe`` and measured again, then dropped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
REPROS = ROOT / "dbguard_tests" / "repros"


def _sizes(dsn: str) -> tuple[dict[str, int], int]:
    with psycopg.connect(dsn) as conn:
        tables = {
            f"{s}.{n}": size
            for s, n, size in conn.execute(
                "select n.nspname, c.relname, pg_total_relation_size(c.oid) from pg_class c join pg_namespace n"
                " on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm')"
                " and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'"
            ).fetchall()
        }
        db = conn.execute("select pg_database_size(current_database())").fetchone()[0]
    return tables, db


def _databases(args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
    """(name, how to fill it, config) for every database to probe."""
    from dbguard_pipeline.config import Config, load_config
    from dbguard_pipeline.demo import demo_sql

    out: list[tuple[str, Any, Any]] = [("demo", demo_sql(), Config())]
    for path in sorted(REPROS.rglob("*.sql")):
        common = path.parent / "common.sql"
        if path == common:
            continue
        text = path.read_text(encoding="utf-8")
        if common.exists():  # shared/repros/fixes*: common.sql, then the reproduction, with the directory's config
            text = common.read_text(encoding="utf-8") + "\n" + text
            jwt = path.parent / "dbguard_jwt.yaml"
            cfg = jwt if "jwt" in path.name and jwt.exists() else path.parent / "dbguard.yaml"
        else:
            cfg = path.with_suffix(".yaml")
        out.append((str(path.relative_to(REPROS)), text, load_config(cfg)))
    if args.bench_db:
        out.append((f"bench:{args.bench_db}", ("template", args.bench_db), Config()))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from dbguard_pipeline import services
    from dbguard_pipeline.pg.dsn import with_database
    from dbguard_tests.isolation_helpers import supabase_shim

    result: dict[str, Any] = {}
    for name, fill, config in _databases(args):
        if args.only and not any(o in name for o in args.only):
            continue
        db = f"parity_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.server, autocommit=True) as conn:
            roles = {r for (r,) in conn.execute("select rolname from pg_roles").fetchall()}
            if isinstance(fill, tuple):
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(db), sql.Identifier(fill[1]))
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        dsn = with_database(args.server, db)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                if not isinstance(fill, tuple):
                    if "auth." in fill:
                        conn.execute(supabase_shim())
                    conn.execute(fill)
                conn.execute("VACUUM ANALYZE")
                conn.execute("CHECKPOINT")
            before = _sizes(dsn)
            t0 = time.perf_counter()
            report = services.probe(dsn, config, test_rows=False if args.no_test_rows else None)
            took = time.perf_counter() - t0
            after = _sizes(dsn)
        finally:
            with psycopg.connect(args.server, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
                for (role,) in conn.execute("select rolname from pg_roles").fetchall():
                    if role not in roles:  # the reproductions create their roles: the next one creates them again
                        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        verdicts = {f"{r.schema}.{r.table} {r.probe}": ("held" if r.isolated else "leak") for r in report.results}
        verdicts.update({f"{n.schema}.{n.table} {n.probe}": "not probed" for n in report.not_probed})
        grown = {t: [before[0][t], after[0].get(t)] for t in before[0] if after[0].get(t) != before[0][t]}
        result[name] = {
            "verdicts": verdicts,
            "grown": grown,
            "database_before": before[1],
            "database_after": after[1],
            "seconds": round(took, 2),
            "test_rows": dict(getattr(report, "test_rows", {}) or {}),
        }
        counts = {v: list(verdicts.values()).count(v) for v in ("held", "leak", "not probed")}
        print(
            f"{name}: {counts}, {len(grown)} of {len(before[0])} tables grew, database {after[1] - before[1]:+,} bytes,"
            f" {took:.1f} s, test rows in {len(result[name]['test_rows'])} tables",
            file=sys.stderr,
        )
    return result


def compare(before: dict[str, Any], after: dict[str, Any]) -> int:
    changed = 0
    for name in sorted(set(before) & set(after)):
        b, a = before[name]["verdicts"], after[name]["verdicts"]
        for key in sorted(set(b) | set(a)):
            if b.get(key) != a.get(key):
                changed += 1
                print(f"{name}: {key}: {b.get(key)} -> {a.get(key)}")
    print(f"{changed} verdicts differ", file=sys.stderr)
    return changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="DSN of a server where databases may be created")
    p.add_argument("--bench-db", help="also probe a copy of this database (CREATE DATABASE ... TEMPLATE)")
    p.add_argument("--only", action="append", help="only the databases whose name contains this")
    p.add_argument("--no-test-rows", action="store_true", help="probe with test_rows=False (inserts nothing)")
    p.add_argument("--out", required=True)
    p.add_argument("--compare", help="a previous --out file: print every verdict that differs")
    args = p.parse_args()
    result = run(args)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    if args.compare:
        sys.exit(1 if compare(json.loads(Path(args.compare).read_text(encoding="utf-8")), result) else 0)


if __name__ == "__main__":
    main()
