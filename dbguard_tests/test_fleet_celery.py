"""The fleet job on Dagster's Celery executor: a real redis broker, two real Celery worker processes, the
Postgres-backed instance (dagster-postgres on the test server), real databases.

redis-server must be installed (``.ci/run`` installs Debian's); without it these tests fail, they never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
from dagster_celery import celery_executor  # noqa: F401  the [celery] extra: missing is an error, not a skip
from psycopg import sql

from dbguard_pipeline.defs.sensors import dbguard_alert_sensor
from dbguard_pipeline.pg.dsn import parse_dsn
from dbguard_pipeline.pg.session import connect
from dbguard_tests.conftest import run_sql
from dbguard_tests.dagster_support import CLEAN_TENANT_SQL, event_log_text, local_receiver, sensor_tick, write_config

ROOT = Path(__file__).resolve().parents[1]
CELERY_JOB = "fleet_audit_celery_job"
VISIBILITY_TIMEOUT = 20  # seconds before redis gives a dead worker's unacknowledged task to another worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(folder: Path):
    """redis-server on a free port of 127.0.0.1, data in ``folder``; yields its URL. Missing: the test fails."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server; .ci/run installs it)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.1)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_url(tmp_path):
    with redis_server(tmp_path / "redis") as url:
        yield url


def test_without_redis_server_the_celery_tests_fail_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    missing = pytest.raises(pytest.fail.Exception, match=r"redis-server is not installed \(apt-get install")
    with missing, redis_server(tmp_path / "redis"):
        pass


def instance_url(server_dsn: str, dbname: str) -> str:
    """A SQLAlchemy URL for dagster-postgres (psycopg2: SQLAlchemy 2.1 maps postgresql:// to psycopg 3, whose
    server-side parameters break dagster-postgres's NOTIFY)."""
    p = parse_dsn(server_dsn)
    auth = quote(p.get("user", "postgres"), safe="") + (
        f":{quote(p['password'], safe='')}" if p.get("password") else ""
    )
    host, port = p.get("host", "localhost"), p.get("port", "5432")
    if host.startswith("/"):
        return f"postgresql+psycopg2://{auth}@/{dbname}?host={quote(host, safe='')}&port={port}"
    return f"postgresql+psycopg2://{auth}@{host}:{port}/{dbname}"


@pytest.fixture
def pg_instance(server_dsn, tmp_path):
    """A Dagster instance whose runs, events and schedules live in PostgreSQL (a database of its own)."""
    name = f"dagster_{uuid.uuid4().hex[:10]}"
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{instance_url(server_dsn, name)}"\ntelemetry:\n  enabled: false\n',
        encoding="utf-8",
    )
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()
    with connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def celery_settings(broker: str) -> dict:
    return {
        "broker_url": broker,
        "result_backend": broker,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
    }


class Workers:
    """Celery worker processes (`celery -A dagster_celery.app worker`), one task at a time each."""

    def __init__(self, broker: str, folder: Path, env: dict):
        self.broker = broker
        self.folder = folder
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        folder.mkdir(parents=True, exist_ok=True)
        # dagster_celery.app reads the module dagster_celery_config from the path (what `dagster-celery worker
        # start -y` writes); the same settings as the run config's config_source
        (folder / "dagster_celery_config.py").write_text(
            "\n".join(f"{k} = {v!r}" for k, v in celery_settings(broker).items()) + "\n", encoding="utf-8"
        )

    def start(self, name: str) -> None:
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(self.folder)])
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the worker's life)
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dagster_celery.app",
                "worker",
                "-c",
                "1",
                "-n",
                f"{name}@fleet",
                "-Q",
                "dagster",
                "--prefetch-multiplier=1",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            env=env,
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed with its pool child, like a lost node
        )
        deadline = time.monotonic() + 120
        while b" ready." not in (self.folder / f"{name}.log").read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker {name} did not start:\n" + self.log(name)[-3000:])
            time.sleep(0.2)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(encoding="utf-8", errors="replace")

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def celery_workers(broker: str, folder: Path, env: dict, names=("w1", "w2")):
    workers = Workers(broker, folder, env)
    try:
        for name in names:
            workers.start(name)
        yield workers
    finally:
        workers.stop_all()


def run_config(broker: str) -> dict:
    settings = celery_settings(broker)
    return {
        "execution": {
            "config": {
                "broker": broker,
                "backend": broker,
                "config_source": {k: v for k, v in settings.items() if k not in ("broker_url", "result_backend")},
            }
        }
    }


def celery_job():
    return dg.build_reconstructable_job(
        "dbguard_pipeline.defs.definitions", "resolve_job", reconstructable_args=(CELERY_JOB,)
    )


def fleet_env(monkeypatch, tmp_path, databases: dict[str, str], **config) -> dict:
    entries = [{"name": n, "dsn_env": f"FLEET_{i}"} for i, n in enumerate(databases)]
    cfg = write_config(tmp_path / "dbguard.yaml", databases=entries, **config)
    monkeypatch.setenv("DBGUARD_CONFIG", cfg)
    for i, dsn in enumerate(databases.values()):
        monkeypatch.setenv(f"FLEET_{i}", dsn)
    monkeypatch.setenv("DBGUARD_RETRY_DELAY_SECONDS", "0")
    return dict(os.environ)


def black_hole() -> socket.socket:
    """A TCP port that accepts and never answers: a hung server (the client's connect timeout)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def executions(instance, run_id: str) -> dict[str, list[str]]:
    """step key -> the Celery workers that started it, in order."""
    out: dict[str, list[str]] = {}
    for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if e.dagster_event and "Executing steps" in (e.message or ""):
            md = e.dagster_event.engine_event_data.metadata
            out.setdefault(e.dagster_event.step_key, []).append(str(md["Celery worker"].value).split("@")[0])
    return out


def materialized(instance, asset: str, run_id: str) -> set[str]:
    records = instance.fetch_materializations(dg.AssetKey(["fleet", asset]), limit=500).records
    return {r.asset_materialization.partition for r in records if r.run_id == run_id}


def failures(instance, run_id: str) -> dict[str, str]:
    out = {}
    for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = e.dagster_event.step_failure_data
        out[e.dagster_event.step_key] = (
            data.user_failure_data.description if data.user_failure_data else data.error.cls_name
        )
    return out


@pytest.mark.integration
def test_celery_fleet_audits_every_database_and_isolates_the_unreachable_and_the_hung_one(
    databases, demo_template, redis_url, pg_instance, tmp_path, monkeypatch
):
    fleet = {}
    for name in ("alpha", "beta", "gamma"):
        fleet[name] = databases.create()
        run_sql(fleet[name], CLEAN_TENANT_SQL)
    fleet["leaky"] = databases.create(template=demo_template)
    hole = black_hole()
    fleet["hung"] = f"postgresql://fleet@127.0.0.1:{hole.getsockname()[1]}/hung?connect_timeout=2"
    fleet["gone"] = "postgresql://fleet:gone-pw-7q@127.0.0.1:1/gone"
    with local_receiver() as rx:
        env = fleet_env(monkeypatch, tmp_path, fleet, alerts={"webhook_url": f"{rx.url}/hook"})
        cursor = sensor_tick(dbguard_alert_sensor, pg_instance)
        with celery_workers(redis_url, tmp_path / "workers", env):
            started = time.monotonic()
            with dg.execute_job(
                celery_job(), instance=pg_instance, run_config=run_config(redis_url), raise_on_error=False
            ) as result:
                run_id = result.run_id
                assert not result.success  # leaky, hung and gone
            took = time.monotonic() - started
        hole.close()

        reachable = {"alpha", "beta", "gamma", "leaky"}
        for asset in ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity", "isolation_report"):
            assert materialized(pg_instance, asset, run_id) == reachable, asset
        ran = executions(pg_instance, run_id)
        assert {w for ws in ran.values() for w in ws} == {"w1", "w2"}  # both workers took steps
        failed = failures(pg_instance, run_id)
        assert set(failed) == {"audit_database[leaky]", "audit_database[hung]", "audit_database[gone]"}
        assert failed["audit_database[gone]"].startswith("schema snapshot failed: gone: cannot connect to")
        assert failed["audit_database[hung]"].startswith("schema snapshot failed: hung: ")
        assert "timeout" in failed["audit_database[hung]"].lower()
        assert failed["audit_database[leaky]"] == "DagsterAssetCheckFailedError"  # leaks, critical findings
        assert all("\n" not in m for m in failed.values())
        # the transient ones were retried (1 + 3 tries), each try a task of its own
        assert len(ran["audit_database[gone]"]) == 4 and len(ran["audit_database[hung]"]) == 4
        assert took < 240

        # one alert for the run, naming each failed database once; nothing for the clean ones, no password
        sensor_tick(dbguard_alert_sensor, pg_instance, cursor)
        sent = [r.json() for r in rx.hook()]
        assert len(sent) == 1 and sent[0]["title"].startswith("dbguard: 3 databases of the fleet failed the audit")
        alerts = sent[0]["databases"]
        assert sorted(a["partition"] for a in alerts) == ["gone", "hung", "leaky"]
        leaky = next(a for a in alerts if a["partition"] == "leaky")
        assert ("fleet/isolation_report", "no_cross_tenant_leaks") in {
            (c["asset"], c["check"]) for c in leaky["failed_checks"]
        }
        assert "gone-pw-7q" not in event_log_text(pg_instance, run_id) + "".join(r.body.decode() for r in rx.requests)
        # a second tick does not alert the run again
        sensor_tick(dbguard_alert_sensor, pg_instance, cursor)
        assert len(rx.hook()) == 1


@pytest.mark.integration
def test_a_worker_killed_mid_step_loses_no_database(
    databases, server_dsn, redis_url, pg_instance, tmp_path, monkeypatch
):
    fleet = {}
    for name in ("one", "two", "three", "slow"):
        fleet[name] = databases.create()
        run_sql(fleet[name], CLEAN_TENANT_SQL)
    env = fleet_env(monkeypatch, tmp_path, fleet, lock_timeout_ms=6000)
    # a lock held on slow's table for the whole run: its step waits lock_timeout (6 s) on it, the window in which
    # the worker running it is killed; then it fails, alone
    with connect(fleet["slow"]) as locker:
        locker.execute("LOCK TABLE public.invoices IN ACCESS EXCLUSIVE MODE")
        with celery_workers(redis_url, tmp_path / "workers", env) as workers:
            box: dict = {}

            def run():
                with dg.execute_job(
                    celery_job(), instance=pg_instance, run_config=run_config(redis_url), raise_on_error=False
                ) as result:
                    box["success"], box["run_id"] = result.success, result.run_id

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            killed = None
            deadline = time.monotonic() + 180
            while killed is None and time.monotonic() < deadline and thread.is_alive():
                runs = pg_instance.get_run_records(limit=1)
                if runs:
                    ran = executions(pg_instance, runs[0].dagster_run.run_id)
                    if "audit_database[slow]" in ran:
                        time.sleep(1.0)  # inside the step (it waits 6 s on the lock)
                        killed = ran["audit_database[slow]"][0]
                        workers.kill(killed)
                time.sleep(0.1)
            assert killed, "the slow step never started"
            thread.join(timeout=300)
            assert not thread.is_alive(), "the run did not finish after the worker was killed"

    run_id = box["run_id"]
    ran = executions(pg_instance, run_id)
    survivor = {"w1": "w2", "w2": "w1"}[killed]
    assert ran["audit_database[slow]"] == [killed, survivor]  # given to the other worker, run again there
    # the lock held on slow's table fails slow alone, after lock_timeout, in one line; the others are audited
    assert not box["success"]
    failed = failures(pg_instance, run_id)
    assert list(failed) == ["audit_database[slow]"]
    assert failed["audit_database[slow]"] == (
        "schema snapshot failed: slow: gave up waiting for a lock after the lock timeout (6000 ms): canceling "
        "statement due to lock timeout"
    )
    for asset in ("schema_snapshot", "rls_audit", "tenant_coverage", "data_integrity", "isolation_report"):
        assert materialized(pg_instance, asset, run_id) == {"one", "two", "three"}, asset
