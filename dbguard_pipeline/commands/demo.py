"""dbguard demo: embedded PostgreSQL + the demo database + what the audit finds.

``dbguard demo`` (re)loads the demo and prints the audit; it exits 0, since finding the planted problems is
the demo working (``dbguard validate`` is the command whose exit code gates CI). ``--serve`` keeps the
embedded server running until Ctrl-C so the other commands can be tried on it; ``--print-dsn`` prints the
URL of a server that ``--serve`` keeps running, and never reloads anything.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from dbguard_pipeline.errors import DbguardError

DESCRIPTION = (
    "Start the embedded PostgreSQL (data directory in the cache folder, reused across runs), load the demo "
    "database afresh and print what dbguard finds (exit 0: the findings are planted). --serve keeps the "
    "server running for the other commands until Ctrl-C."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="reuse the demo database as it is instead of reloading it")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep the embedded server running until Ctrl-C and print the URL to use with the other commands "
        "(loads the demo only when it is missing; --reset reloads it)",
    )
    parser.add_argument("--reset", action="store_true", help="with --serve: reload the demo database first")
    parser.add_argument(
        "--print-dsn",
        action="store_true",
        help="print the URL of the demo database that `dbguard demo --serve` is serving, and exit "
        "(never reloads; exit 2 when no server is running)",
    )


def run(args: argparse.Namespace) -> int:
    if args.print_dsn:
        return _print_dsn()
    if args.serve:
        return _serve(reset=args.reset)
    if args.reset:
        raise DbguardError("--reset goes with --serve (plain `dbguard demo` always reloads; --keep does not)")
    from dbguard_pipeline.demo import ensure_demo_database
    from dbguard_pipeline.pg.dsn import describe_dsn
    from dbguard_pipeline.pg.embedded import dbguard_home

    t0 = time.perf_counter()
    dsn = ensure_demo_database(reset=not args.keep)
    print(
        f"demo database ready: {describe_dsn(dsn)} (data directory {dbguard_home() / 'pgdata'}, "
        f"{time.perf_counter() - t0:.1f}s)",
        file=sys.stderr,
    )
    code = report_audit(dsn)
    if code:
        print(
            "the demo has planted critical findings, as expected (`dbguard validate` exits 1 on them; the demo "
            "exits 0). Try the other commands on it: dbguard demo --serve",
            file=sys.stderr,
        )
    return 0


def report_audit(dsn: str) -> int:
    """Audit the demo database with the default config and print the text report; returns the audit's exit
    code at --fail-on critical (1 on the demo: it has critical findings)."""
    from dbguard_pipeline import services
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.report import render

    result = services.audit(dsn, Config())
    sys.stdout.write(render(result, "text", color=None))
    sys.stdout.flush()
    return result.exit_code("critical")


def _pgdata() -> Path:
    from dbguard_pipeline.pg.embedded import dbguard_home

    return dbguard_home() / "pgdata"


def _server_running(pgdata: Path) -> bool:
    """A live postmaster on this data directory (first line of postmaster.pid names a running process)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _print_dsn() -> int:
    from dbguard_pipeline.demo import DEMO_DATABASE, is_demo_loaded
    from dbguard_pipeline.pg.embedded import embedded_dsn

    if not _server_running(_pgdata()):
        raise DbguardError(
            "no embedded server is running: start one with `dbguard demo --serve` (it prints the URL and keeps "
            "the server up until Ctrl-C), then use that URL"
        )
    if not is_demo_loaded(embedded_dsn("postgres"), DEMO_DATABASE):
        raise DbguardError("the embedded server has no demo database: start it with `dbguard demo --serve`")
    print(embedded_dsn(DEMO_DATABASE))
    return 0


def _serve(*, reset: bool) -> int:
    from dbguard_pipeline.demo import DEMO_DATABASE, ensure_demo_database
    from dbguard_pipeline.pg.embedded import embedded_dsn

    ensure_demo_database(reset=reset)
    dsn = embedded_dsn(DEMO_DATABASE)  # the same spelling --print-dsn prints
    print(dsn, flush=True)
    print(
        f"serving the demo database until Ctrl-C. In another shell:\n"
        f"  export DBGUARD_DATABASE_URL='{dsn}'\n"
        f"  dbguard validate; dbguard test-isolation; dbguard generate-migration --all; dbguard migrate up",
        file=sys.stderr,
        flush=True,
    )
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    print("demo server stopped", file=sys.stderr)
    return 0
