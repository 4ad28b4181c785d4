"""Helpers for the Dagster tests: run the audit job against a real database, read what it recorded, and a
local HTTP server that plays webhook receiver and Slack API."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import dagster as dg
import yaml

from bench.clean import clean_tenant_sql
from dbguard_pipeline.defs.definitions import build_definitions
from dbguard_pipeline.defs.resources import FleetResource, PostgresResource


def write_config(path: Path, **sections) -> str:
    path.write_text(yaml.safe_dump(sections, sort_keys=False), encoding="utf-8")
    return str(path)


def nightly_job(dsn: str, config_path: Optional[str] = None):
    defs = build_definitions(
        database=PostgresResource(dsn=dsn, config_path=config_path),
        fleet=FleetResource(config_path=config_path),
        config_path=config_path,
    )
    return defs.resolve_job_def("nightly_audit_job")


def run_nightly(instance: dg.DagsterInstance, dsn: str, config_path: Optional[str] = None):
    return nightly_job(dsn, config_path).execute_in_process(instance=instance, raise_on_error=False)


def materializations(result) -> dict[str, dict]:
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_MATERIALIZATION":
            m = e.step_materialization_data.materialization
            out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def checks(result) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION":
            d = e.asset_check_evaluation_data
            out[(d.asset_key.to_user_string(), d.check_name)] = d
    return out


def step_failures(result) -> dict[str, str]:
    out = {}
    for e in result.all_events:
        if e.is_step_failure:
            data = e.step_failure_data
            msg = data.user_failure_data.description if data.user_failure_data else data.error.message
            out[e.step_key] = msg
    return out


def event_log_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Everything the instance stored about a run (messages, metadata, errors), serialized."""
    from dagster._serdes import serialize_value

    return "\n".join(serialize_value(entry) for entry in instance.all_logs(run_id))


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


@dataclass
class LocalReceiver:
    url: str
    requests: list = field(default_factory=list)

    def hook(self) -> list[Received]:
        return [r for r in self.requests if r.path == "/hook"]

    def slack(self) -> list[Received]:
        return [r for r in self.requests if r.path.endswith("/chat.postMessage")]


@contextlib.contextmanager
def local_receiver() -> Iterator[LocalReceiver]:
    """An HTTP server on 127.0.0.1: POST /hook (webhook) and POST /api/chat.postMessage (Slack Web API)."""
    got: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            got.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
            body = json.dumps({"ok": True, "channel": "C1", "ts": "1.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalReceiver(url=f"http://127.0.0.1:{server.server_address[1]}", requests=got)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# A small multi-tenant database with nothing to report: RLS on, the tenant pinned for reads and writes.
CLEAN_TENANT_SQL = clean_tenant_sql()


def sensor_tick(sensor, instance, cursor=None):
    """One evaluation of a sensor as the daemon does it; returns the new cursor."""
    with dg.build_sensor_context(instance=instance, cursor=cursor) as ctx:
        return sensor.evaluate_tick(ctx).cursor
