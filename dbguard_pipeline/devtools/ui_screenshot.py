"""Browser check of the Dagster UI: audit the demo database, serve the code location with dagster-webserver,
open the asset lineage page in headless Chromium and save a screenshot (``make ui-screenshot``).

    python -m dbguard_pipeline.devtools.ui_screenshot [--out docs/img/lineage.png] [--path /asset-groups/dbguard_audit]
    python -m dbguard_pipeline.devtools.ui_screenshot --component billing \
        --page /assets/rls_audit=docs/img/findings.png \
        --page /locations/dbguard/asset-groups/dbguard_billing/lineage=docs/img/component.png

``--component NAME`` adds the demo database a second time, as a ``DbguardDatabase`` component (a defs.yaml in a
throwaway ``DBGUARD_DEFS_DIR``), and audits it too; each ``--page PATH=PNG`` saves one page.

``--fix-flow PNG`` (``make ui-screenshot-fix``): on a copy of the demo database, generate the fix migrations,
approve them (approval files, as a reviewer would commit them), run ``apply_approved_migrations`` in the
throwaway instance and save its run page (backup, apply, verify per migration, the outcomes table).

Needs Debian's ``chromium`` (``apt-get install -y chromium``; Playwright's own browser download does not work
on these machines). Everything runs on 127.0.0.1 with a throwaway DAGSTER_HOME; the webserver is stopped
at the end. Exit code 0 when the screenshot was written, 2 with a one-line message otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = "/locations/dbguard/asset-groups/dbguard_audit/lineage"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ScreenshotError(Exception):
    pass


def find_chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ScreenshotError("chromium not found: install it with `apt-get install -y chromium`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout_s: float, log: Optional[Path] = None) -> None:
    def tail() -> str:
        return f":\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.is_file() else ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScreenshotError(f"dagster-webserver exited with code {proc.returncode}{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise ScreenshotError(f"dagster-webserver did not answer within {timeout_s:.0f} s{tail()}")


@contextlib.contextmanager
def serve_ui(env: dict, log: Path, timeout_s: float = 180) -> Iterator[int]:
    """dagster-webserver for workspace.yaml on a free local port (yielded once it answers); on exit its whole
    process group is stopped, SIGTERM then SIGKILL."""
    port = free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(
            [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(f"http://127.0.0.1:{port}/server_info", proc, timeout_s, log)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


COMPONENT_DSN_ENV = "DBGUARD_SCREENSHOT_COMPONENT_URL"


def write_component(defs_dir: Path, name: str) -> None:
    """A defs.yaml declaring the demo database as a component database called ``name``."""
    (defs_dir / name).mkdir(parents=True, exist_ok=True)
    (defs_dir / name / "defs.yaml").write_text(
        "type: dbguard_pipeline.defs.component.DbguardDatabase\n"
        f"attributes:\n  name: {name}\n  dsn_env: {COMPONENT_DSN_ENV}\n"
        "  tenant:\n    column: tenant_id\n    tenants_table: public.tenants\n",
        encoding="utf-8",
    )


def audit_demo(home: Path, dsn: str, defs_dir: Optional[Path] = None, component: Optional[str] = None) -> None:
    """One nightly audit run in the throwaway instance (and one of the component database), so the UI shows
    materializations and checks."""
    import dagster as dg

    from dbguard_pipeline.defs.definitions import build_definitions
    from dbguard_pipeline.defs.resources import PostgresResource

    defs = build_definitions(database=PostgresResource(dsn=dsn), databases_dir=defs_dir)
    jobs = ["nightly_audit_job"] + ([f"{component}_audit_job"] if component else [])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name in jobs:
            defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False)


FIX_FLOW_DATABASE = "dbguard_fix_flow"


def fix_flow(home: Path, dsn: str) -> str:
    """The approve -> apply -> verify flow on a copy of the demo database; returns the run's UI path."""
    import dagster as dg
    from psycopg import sql

    from dbguard_pipeline import services
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.defs.definitions import build_definitions
    from dbguard_pipeline.defs.resources import PostgresResource
    from dbguard_pipeline.pg.dsn import database_name, with_database
    from dbguard_pipeline.pg.session import connect

    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(FIX_FLOW_DATABASE)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(FIX_FLOW_DATABASE), sql.Identifier(database_name(dsn))
            )
        )
    copy = with_database(dsn, FIX_FLOW_DATABASE)
    folder = home / "migrations"
    fixes = services.generate_fixes(copy, Config(), out_dir=str(folder), round_trip="yes")
    names = [p.name[:-4] for p in fixes.written if not p.name.endswith("_rollback.sql")]
    services.approve_migrations(folder, names, "reviewer")
    defs = build_definitions(database=PostgresResource(dsn=copy))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = defs.resolve_job_def("apply_approved_migrations").execute_in_process(
            instance=instance,
            run_config={"ops": {"apply_approved": {"config": {"migrations_dir": str(folder)}}}},
            raise_on_error=False,
        )
    if not result.success:
        raise ScreenshotError("apply_approved_migrations failed on the copy of the demo database")
    return f"/runs/{result.run_id}"


def screenshot(
    url: str,
    out: Path,
    *,
    chromium: str,
    width: int = 1600,
    height: int = 1200,
    budget_ms: int = 25_000,
    timeout_s: float = 120,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dbguard-chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            url,
        ]
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ScreenshotError(f"chromium did not finish within {timeout_s:.0f} s") from None
    if not out.is_file() or out.stat().st_size < 10_000:
        raise ScreenshotError(f"chromium wrote no usable screenshot to {out}")


def run(
    pages: list[tuple[str, Path]],
    *,
    budget_ms: int,
    component: Optional[str] = None,
    size: tuple[int, int] = (1600, 1200),
    fix_flow_out: Optional[Path] = None,
) -> list[Path]:
    from dbguard_pipeline.demo import ensure_demo_database

    chromium = find_chromium()
    dsn = ensure_demo_database()  # keeps the embedded server up while this process lives
    with tempfile.TemporaryDirectory(prefix="dbguard-dagster-home-") as tmp:
        home = Path(tmp)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n", encoding="utf-8")
        env = {**os.environ, "DAGSTER_HOME": str(home), "DBGUARD_DATABASE_URL": dsn}
        defs_dir = None
        if component:
            defs_dir = home / "databases"
            write_component(defs_dir, component)
            os.environ[COMPONENT_DSN_ENV] = dsn
            env.update({"DBGUARD_DEFS_DIR": str(defs_dir), COMPONENT_DSN_ENV: dsn})
        audit_demo(home, dsn, defs_dir, component)
        if fix_flow_out is not None:
            pages = [*pages, (fix_flow(home, dsn), fix_flow_out)]
        with serve_ui(env, home / "webserver.log") as port:
            for path, out in pages:
                screenshot(
                    f"http://127.0.0.1:{port}{path}",
                    out,
                    chromium=chromium,
                    budget_ms=budget_ms,
                    width=size[0],
                    height=size[1],
                )
    return [out for _, out in pages]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dbguard_pipeline.devtools.ui_screenshot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "img" / "lineage.png"), help="PNG to write")
    parser.add_argument("--path", default=DEFAULT_PATH, help=f"UI page to open (default {DEFAULT_PATH})")
    parser.add_argument(
        "--page",
        action="append",
        default=[],
        metavar="PATH=PNG",
        help="a UI page and the PNG to save it to (repeatable; replaces --path/--out)",
    )
    parser.add_argument("--component", metavar="NAME", help="also declare the demo database as component NAME")
    parser.add_argument(
        "--fix-flow",
        metavar="PNG",
        help="also run apply_approved_migrations on a copy of the demo (approved fixes) and save its run page",
    )
    parser.add_argument("--budget-ms", type=int, default=25_000, help="Chromium virtual time budget")
    parser.add_argument("--size", default="1600x1200", help="window size WIDTHxHEIGHT (default 1600x1200)")
    args = parser.parse_args(argv)
    pages = [(p.rsplit("=", 1)[0], Path(p.rsplit("=", 1)[1])) for p in args.page if "=" in p]
    if len(pages) != len(args.page):
        parser.error("--page takes PATH=PNG")
    try:
        width, height = (int(v) for v in args.size.lower().split("x", 1))
        written = run(
            pages or ([] if args.fix_flow else [(args.path, Path(args.out))]),
            budget_ms=args.budget_ms,
            component=args.component,
            size=(width, height),
            fix_flow_out=Path(args.fix_flow) if args.fix_flow else None,
        )
    except ScreenshotError as exc:
        print(f"ui-screenshot: error: {exc}", file=sys.stderr)
        return 2
    for out in written:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
