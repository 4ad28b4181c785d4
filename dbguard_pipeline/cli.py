"""The `dbguard` command line: a thin shell over the core.

Each subcommand lives in ``dbguard_pipeline/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; only the chosen one is imported, so ``dbguard introspect`` never pays for Dagster,
pandas or Great Expectations. Errors a user can cause are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Optional

from dbguard_pipeline import __version__
from dbguard_pipeline.errors import DbguardError

# name -> (module under dbguard_pipeline.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "start the embedded PostgreSQL, load the demo database and audit it"),
    "introspect": ("introspect", "write the JSON schema snapshot of a database"),
    "validate": ("validate", "audit RLS, tenancy, integrity, performance and security; report for people or CI"),
    "generate-migration": ("generate_migration", "write a safe fix migration and its exact rollback"),
    "migrate": ("migrate", "apply, list or roll back migrations with a ledger"),
    "fix": ("fix", "review and approve pending migrations; apply them backed up, verified, undone on regression"),
    "test-isolation": ("test_isolation", "prove tenant isolation by trying cross-tenant access (rolled back)"),
    "lint-migration": ("lint_migration", "lint migration files without a database: squawk + RLS policy checks"),
    "diff": ("diff", "compare two databases or snapshots: what changed, and what got weaker"),
    "backup": ("backup", "back up tables (pg_dump, with row counts and checksums); list and prune backups"),
    "restore": ("restore", "restore a backup in place or into a scratch database, verified against its manifest"),
    "rules": ("rules", "list the audit's rules: id, severity (after the config's overrides), category, fix"),
    "init": ("init", "write a dbguard.yaml for the connected database, inferred from its schema and policies"),
    "analyze": ("analyze", "measure what row level security costs each tenant table, with fixes proven faster"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _top_parser() -> _Parser:
    parser = _Parser(prog="dbguard", description="Audit, prove and fix tenant isolation in multi-tenant PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"dbguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_mod, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        top = _top_parser()  # only here: a parser with every command costs 5 ms a start
        if argv and not argv[0].startswith("-"):
            top.error(f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
        top.parse_args(argv)  # --help / --version exit here
        top.print_help()
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[name]
    full_name = f"{__package__}.commands.{module_name}"
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as exc:
        if exc.name != full_name:
            raise
        print(f"dbguard {name}: error: this command is not available in this build", file=sys.stderr)
        return 2
    parser = _Parser(prog=f"dbguard {name}", description=getattr(module, "DESCRIPTION", help_))
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    global _fast_exit
    _fast_exit = bool(getattr(module, "FAST_EXIT", False))
    try:
        return int(module.run(args) or 0)
    except DbguardError as exc:
        print(f"dbguard {name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"dbguard {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


_fast_exit = False  # set by main() for a command whose module says FAST_EXIT = True


def run() -> None:
    code = main()
    if _fast_exit:
        _exit_without_teardown(code)
    sys.exit(code)


def _exit_without_teardown(code: int) -> None:
    """Leave as ``sys.exit`` would, minus the interpreter's teardown (freeing every object of the audit one by
    one: 15-20 ms of ``validate --no-data``'s 0.2 s at 250 tables): the atexit handlers run, standard output and
    error are flushed, then ``os._exit``. Only for commands that declare it (``FAST_EXIT = True``: every file they
    write is closed before they return); when another non-daemon thread is alive or a flush fails (a closed pipe),
    the normal exit is taken."""
    import atexit
    import threading

    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001  (sys.exit reports it as Python does)
        return
    os._exit(code)


if __name__ == "__main__":
    run()
