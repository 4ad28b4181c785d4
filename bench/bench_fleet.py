"""The fleet at scale: N databases on one embedded server, audited and probed by the fleet job in one run.

    python -m bench.bench_fleet --n 50 100 200 --max-concurrent 2 [--start-method forkserver|spawn]
    python -m bench.bench_fleet --n 50 --max-concurrent 1 2 4      # growth with max_concurrent

The fleet (``CREATE DATABASE ... TEMPLATE``, ~0.06 s each): two of three databases are copies of the demo
(planted leaks and critical findings), one in three a small clean multi-tenant database, plus one unreachable
DSN (a closed port: refused, retried as transient), one hung server (a TCP port that accepts and never answers:
connect timeout, retried) and one demo copy with an ACCESS EXCLUSIVE lock held on a table for the whole run.
The Dagster instance is Postgres-backed (dagster-postgres, database ``dagster_fleet`` on the same server), as a
deployment's is. Printed per run: wall time, time per database, steps and their outcomes, the median time from a
step's launch to its STEP_START (process start-up) and of the step's own work, the peak of the summed RSS of
the run's Python processes (sampled every 0.2 s; forked processes share pages, so the sum over-counts) and the
load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.clean import clean_tenant_sql

CLEAN_SQL = clean_tenant_sql(50)


# --------------------------------------------------------------------------- memory and CPU of the run's processes
TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str, int, float]]:
    """pid -> (ppid, comm, rss bytes, cpu seconds so far) from /proc."""
    out = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                stat = fh.read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            out[int(entry)] = (int(fields[1]), comm, int(fields[21]) * page, cpu)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _descendants(table, root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, row in table.items():
        children.setdefault(row[0], []).append(pid)
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            out.append(pid)
        stack.extend(children.get(pid, []))
    return out


class Sampler(threading.Thread):
    """Every 0.2 s: the summed RSS of the run's Python processes (this one and its descendants; peak kept) and
    the CPU seconds of each of them and of the PostgreSQL server's processes (latest value per pid, summed at the
    end; a process that lives less than one interval is missed)."""

    def __init__(self, server_pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval = interval
        self.server_pid = server_pid
        self.peak = self.peak_procs = 0
        self.cpu: dict[int, float] = {}
        self.server_cpu: dict[int, float] = {}
        self._base = self._snapshot()
        self._stop_event = threading.Event()

    def _snapshot(self) -> tuple[dict[int, float], dict[int, float]]:
        table = _proc_table()
        mine = {p: table[p][3] for p in _descendants(table, os.getpid()) if table[p][1].startswith("python")}
        server = {p: table[p][3] for p in _descendants(table, self.server_pid)} if self.server_pid else {}
        rss = sum(table[p][2] for p in mine)
        self.peak = max(getattr(self, "peak", 0), rss)
        self.peak_procs = max(getattr(self, "peak_procs", 0), len(mine))
        return mine, server

    def run(self):
        while not self._stop_event.is_set():
            mine, server = self._snapshot()
            self.cpu.update(mine)
            self.server_cpu.update(server)
            self._stop_event.wait(self.interval)

    def stop(self) -> tuple[float, float]:
        """Stops; returns (CPU seconds of the run's Python processes, of the server) during the run."""
        self._stop_event.set()
        self.join()
        base_mine, base_server = self._base
        python = sum(v - base_mine.get(p, 0.0) for p, v in self.cpu.items())
        server = sum(v - base_server.get(p, 0.0) for p, v in self.server_cpu.items())
        return python, server


def server_pid(server: str) -> int:
    from dbguard_pipeline.pg.session import connect

    with connect(server) as conn:
        folder = conn.execute("show data_directory").fetchone()[0]
    with open(os.path.join(folder, "postmaster.pid"), encoding="utf-8") as fh:
        return int(fh.readline())


# --------------------------------------------------------------------------- a server that never answers
def black_hole() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never answers (a hung server): the client's connect timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []

    def accept():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock, sock.getsockname()[1]


# --------------------------------------------------------------------------- the fleet
def build_fleet(server: str, n: int, hung_port: int) -> tuple[list[dict], dict]:
    from psycopg import sql

    from dbguard_pipeline.demo import create_demo_database
    from dbguard_pipeline.pg.dsn import with_database
    from dbguard_pipeline.pg.session import connect

    create_demo_database(server, "fleet_tpl_demo", replace=True)
    with connect(server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS fleet_tpl_clean WITH (FORCE)")
        conn.execute("CREATE DATABASE fleet_tpl_clean")
    with connect(with_database(server, "fleet_tpl_clean"), autocommit=True) as conn:
        conn.execute(CLEAN_SQL)
    kinds = {"demo": 0, "clean": 0}
    targets = []
    start = time.perf_counter()
    with connect(server, autocommit=True) as conn:
        for i in range(n - 3):
            kind = "clean" if i % 3 == 2 else "demo"
            kinds[kind] += 1
            name = f"fleet_{i:03d}_{kind}"
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(f"fleet_tpl_{kind}")
                )
            )
            targets.append({"name": name, "dsn": with_database(server, name)})
        conn.execute("DROP DATABASE IF EXISTS fleet_locked WITH (FORCE)")
        conn.execute("CREATE DATABASE fleet_locked TEMPLATE fleet_tpl_demo")
    created = time.perf_counter() - start
    targets.append({"name": "fleet_locked", "dsn": with_database(server, "fleet_locked")})
    targets.append({"name": "fleet_unreachable", "dsn": "postgresql://fleet@127.0.0.1:1/gone"})
    targets.append({"name": "fleet_hung", "dsn": f"postgresql://fleet@127.0.0.1:{hung_port}/hung"})
    return targets, {"created_seconds": round(created, 2), **kinds}


def postgres_instance(server: str, home: Path):
    import dagster as dg
    from psycopg import sql

    from dbguard_pipeline.pg.dsn import parse_dsn
    from dbguard_pipeline.pg.session import connect

    with connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS dagster_fleet WITH (FORCE)"))
        conn.execute(sql.SQL("CREATE DATABASE dagster_fleet"))
    p = parse_dsn(server)
    # psycopg2 explicitly: SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose server-side parameters break
    # dagster-postgres's NOTIFY
    url = f"postgresql+psycopg2://{p.get('user', 'postgres')}@/dagster_fleet?host={p['host']}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        json.dumps({"storage": {"postgres": {"postgres_url": url}}, "telemetry": {"enabled": False}}),
        encoding="utf-8",
    )
    return dg.DagsterInstance.from_config(str(home))


# --------------------------------------------------------------------------- Celery: a redis broker, workers
def start_celery(tmp: Path, workers: int, concurrency: int) -> tuple[str, list]:
    """redis-server on a free port and ``workers`` Celery workers (``concurrency`` tasks each); the broker URL
    and the processes (the caller stops them)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("bench_fleet: redis-server is not installed (apt-get install -y redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp / "redis").mkdir(exist_ok=True)
    procs = [
        subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp / "redis"), "--save", ""],
            stdout=subprocess.DEVNULL,
        )
    ]
    broker = f"redis://127.0.0.1:{port}/0"
    conf = tmp / "celery"
    conf.mkdir(exist_ok=True)
    (conf / "dagster_celery_config.py").write_text(
        f"broker_url = {broker!r}\nresult_backend = {broker!r}\ntask_acks_late = True\n"
        "task_reject_on_worker_lost = True\nworker_prefetch_multiplier = 1\n"
        "broker_transport_options = {'visibility_timeout': 600}\n",
        encoding="utf-8",
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(conf)]))
    for i in range(workers):
        log = open(conf / f"w{i}.log", "wb")  # noqa: SIM115 (the worker's for its life)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "dagster_celery.app", "worker", "-c", str(concurrency),
                 "-n", f"w{i}@bench", "-Q", "dagster", "--prefetch-multiplier=1", "-l", "INFO", "--without-gossip",
                 "--without-mingle"],
                env=env, cwd=conf, stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    for i in range(workers):
        deadline = time.monotonic() + 120
        while b" ready." not in (conf / f"w{i}.log").read_bytes():  # (printed at log level INFO)
            if time.monotonic() > deadline:
                for proc in procs:
                    proc.kill()
                raise SystemExit(f"bench_fleet: celery worker w{i} did not start")
            time.sleep(0.2)
    return broker, procs


def celery_run_config(broker: str) -> dict:
    source = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": 600},
    }
    return {"execution": {"config": {"broker": broker, "backend": broker, "config_source": source}}}


# --------------------------------------------------------------------------- one run
def step_times(instance, run_id: str) -> dict:
    import dagster as dg

    launched, started, ended, outcome = {}, {}, {}, {}
    logs = instance.all_logs(run_id)
    first = logs[0].timestamp if logs else 0.0
    for e in logs:
        ev = e.dagster_event
        if ev is None or not ev.step_key or not ev.step_key.startswith("audit_database["):
            continue
        t = e.timestamp
        if ev.event_type == dg.DagsterEventType.STEP_WORKER_STARTING:
            launched.setdefault(ev.step_key, t)
        elif ev.event_type == dg.DagsterEventType.STEP_START:
            started.setdefault(ev.step_key, t)
        elif ev.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            ended[ev.step_key] = t
            outcome[ev.step_key] = "ok" if ev.event_type == dg.DagsterEventType.STEP_SUCCESS else "failed"
    if os.environ.get("BENCH_FLEET_TIMELINE"):  # the events of one step, seconds from its launch
        key = next(iter(sorted(k for k in launched if "clean" in k)), None)
        if key:
            for e in instance.all_logs(run_id):
                if e.dagster_event and e.dagster_event.step_key == key:
                    print(f"{e.timestamp - launched[key]:7.3f} {e.dagster_event.event_type_value}", flush=True)
    startup = [started[k] - launched[k] for k in started if k in launched]
    work_of = {k: ended[k] - started[k] for k in ended if k in started}
    work = list(work_of.values())
    # when the last database that answers was done: the hung and unreachable ones retry for minutes after
    done = [t for k, t in ended.items() if not k.endswith(("_hung]", "_unreachable]"))]
    return {
        "last_reachable_done_s": round(max(done) - first, 1) if done else None,
        "steps": len(outcome),
        "failed": sorted(k[len("audit_database[") : -1] for k, v in outcome.items() if v == "failed"),
        "startup_median_s": round(statistics.median(startup), 3) if startup else None,
        "work_median_s": round(statistics.median(work), 3) if work else None,
        "work_max_s": round(max(work), 3) if work else None,
        "slowest": sorted(((round(w, 1), k) for k, w in work_of.items()), reverse=True)[:3],
    }


def run_fleet(instance, max_concurrent: int, start_method: str, postmaster: int, broker: str = "") -> dict:
    """One fleet run: the multiprocess job, or with ``broker`` the Celery job (the workers already running)."""
    import dagster as dg

    job = dg.build_reconstructable_job(
        "dbguard_pipeline.defs.definitions",
        "resolve_job",
        reconstructable_args=("fleet_audit_celery_job" if broker else "fleet_audit_job",),
    )
    from dbguard_pipeline.defs.jobs import PRELOAD

    preload = {"forkserver": PRELOAD, "forkserver-defs": ["dbguard_pipeline.defs.definitions"]}
    method: dict = (
        {"spawn": {}} if start_method == "spawn" else {"forkserver": {"preload_modules": preload[start_method]}}
    )
    run_config = {"execution": {"config": {"max_concurrent": max_concurrent, "start_method": method}}}
    if broker:
        run_config = celery_run_config(broker)
    load_before = os.getloadavg()
    sampler = Sampler(postmaster)
    sampler.start()
    start = time.perf_counter()
    with dg.execute_job(job, instance=instance, run_config=run_config, raise_on_error=False) as result:
        wall = time.perf_counter() - start
        run_id = result.run_id
    python_cpu, server_cpu = sampler.stop()
    return {
        "wall_s": round(wall, 1),
        "python_cpu_s": round(python_cpu, 1),
        "server_cpu_s": round(server_cpu, 1),
        "peak_rss_mib": round(sampler.peak / 2**20),
        "peak_python_processes": sampler.peak_procs,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "run_id": run_id,
        **step_times(instance, run_id),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--max-concurrent", type=int, nargs="+", default=[2])
    parser.add_argument("--start-method", choices=("forkserver", "forkserver-defs", "spawn"), default="forkserver")
    parser.add_argument("--out", help="append one JSON line per run to this file")
    parser.add_argument(
        "--celery-workers",
        type=int,
        default=0,
        help="run the Celery job instead, on this many workers (redis-server started here); --max-concurrent "
        "is then each worker's concurrency",
    )
    args = parser.parse_args(argv)

    import yaml

    from dbguard_pipeline.pg.embedded import embedded_dsn

    tmp = Path(tempfile.mkdtemp(prefix="dbguard-bench-fleet-"))
    server = embedded_dsn("postgres", tmp / "pgdata")
    hole, hung_port = black_hole()
    instance = postgres_instance(server, tmp / "dagster_home")
    postmaster = server_pid(server)
    os.environ.setdefault("DAGSTER_HOME", str(tmp / "dagster_home"))
    for n in args.n:
        targets, made = build_fleet(server, n, hung_port)
        # one path for every N: the forkserver (started by the first run) keeps the environment it was started
        # with, so the steps of a later run read the file that DBGUARD_CONFIG named then
        cfg = tmp / "dbguard.yaml"
        cfg.write_text(yaml.safe_dump({"databases": targets}, sort_keys=False), encoding="utf-8")
        os.environ["DBGUARD_CONFIG"] = str(cfg)
        for mc in args.max_concurrent:
            # the lock is held by another session for the whole run: the audit's reads of that table wait for
            # lock_timeout (2 s) and report it as not measured / not probed; the other databases never wait
            import psycopg

            from dbguard_pipeline.pg.dsn import with_database

            broker, procs = start_celery(tmp, args.celery_workers, mc) if args.celery_workers else ("", [])
            try:
                with psycopg.connect(with_database(server, "fleet_locked")) as locker:
                    locker.execute("LOCK TABLE public.garages IN ACCESS EXCLUSIVE MODE")
                    row = run_fleet(instance, mc, args.start_method, postmaster, broker)
            finally:
                for proc in reversed(procs):
                    proc.terminate()
                    proc.wait(timeout=60)
            executor = f"celery x{args.celery_workers}" if broker else f"multiprocess {args.start_method}"
            row.update(n=n, max_concurrent=mc, executor=executor, fleet=made)
            row["per_database_s"] = round(row["wall_s"] / n, 3)
            row["cpu_per_database_s"] = round((row["python_cpu_s"] + row["server_cpu_s"]) / n, 3)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    hole.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
