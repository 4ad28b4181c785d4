"""dbguard validate: the audit, reported for people (text) or CI (json, sarif, junit, github, markdown)."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Optional

from dbguard_pipeline import RULES_DOC_URL
from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Audit row level security, tenancy, data integrity, performance and security of a PostgreSQL "
    "database (read-only) and report the findings. Exit 0 when nothing (new, with --baseline) is at or above "
    "--fail-on, 1 otherwise, 2 on usage, connection or permission errors."
)

# cli.run leaves without the interpreter's teardown: every file this command writes is closed when run() returns
FAST_EXIT = True

FORMATS = ("text", "json", "sarif", "junit", "github", "markdown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="report format (default: text; github = workflow annotations, markdown = PR comment or job summary)",
    )
    parser.add_argument("--out", metavar="FILE", help="write the report here (default: standard output)")
    parser.add_argument(
        "--fail-on",
        choices=("critical", "warning"),
        default="critical",
        help="exit 1 when a finding has this severity or higher (default: critical)",
    )
    parser.add_argument(
        "--rule",
        action="append",
        metavar="ID",
        dest="rules",
        help=f"run only this rule (repeatable; the rules: {RULES_DOC_URL})",
    )
    parser.add_argument(
        "--exclude-rule",
        action="append",
        metavar="ID",
        dest="exclude_rules",
        default=[],
        help="do not run this rule (repeatable; adds to the config's exclude_rules; dbguard rules lists the ids)",
    )
    parser.add_argument(
        "--no-data", action="store_true", help="skip the data metrics (row counts, NULLs, orphans): schema rules only"
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="accept the findings of this file (written by --write-baseline, or a json or sarif report): they are "
        "listed as ignored and only new findings fail",
    )
    parser.add_argument(
        "--write-baseline", metavar="FILE", help="also write today's findings as a baseline file (for --baseline)"
    )
    parser.add_argument(
        "--group-by",
        choices=("rule", "table"),
        default="rule",
        help="text: group the problems by rule (default) or by table",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="text: also list the tables without finding and the ignored findings",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="text: only the count line; nothing on standard error (no progress)"
    )
    parser.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the text report (auto: when writing to a terminal and NO_COLOR is unset)",
    )


_WRITERS = {
    "text": "dbguard_pipeline.report.grouped",
    "sarif": "dbguard_pipeline.report.sarif",
    "junit": "dbguard_pipeline.report.junit",
    "github": "dbguard_pipeline.report.github",
    "markdown": "dbguard_pipeline.report.markdown",
}


class _Warmup:
    """Imports, in a thread, what the audit needs after the introspection, while the catalog queries run: the
    introspection mostly waits on the server, so about 0.1 s of imports costs no wall time there. The policy
    parser (pglast, 20 ms) only when the database has policies: the first round trip of the catalog tells
    (:meth:`counts`); without that news (the psycopg path) it is loaded anyway.

    The modules the introspection needs are imported first, in the calling thread, and the caller imports
    nothing new until it has joined, so the two threads never import at the same time anything but the
    warm-up's own modules. A failure here is ignored: the audit imports the same modules again and reports it."""

    def __init__(self, fmt: str = "text") -> None:
        import threading

        import dbguard_pipeline.errors
        import dbguard_pipeline.pg.catalog
        import dbguard_pipeline.pg.failures
        import dbguard_pipeline.pg.libpq  # noqa: F401

        self.fmt = fmt
        self.policies: Optional[int] = None  # None: not known
        self.settled = threading.Event()
        self.thread = threading.Thread(target=self._warm, name="dbguard-warm-imports", daemon=True)
        self.thread.start()

    def counts(self, tables: int, policies: int) -> None:
        self.policies = policies
        self.settled.set()

    def join(self, *, failed: bool = False) -> None:
        if failed:
            self.policies = 0  # nothing more to load for an error message
        self.settled.set()
        self.thread.join()

    def _warm(self) -> None:
        import importlib

        try:
            import dbguard_pipeline.audit
            import dbguard_pipeline.commands.output
            import dbguard_pipeline.report
            import dbguard_pipeline.rules.context  # noqa: F401
            from dbguard_pipeline import rules

            if self.fmt in _WRITERS:
                importlib.import_module(_WRITERS[self.fmt])
            rules.all_rules()  # imports every rule module (none imports pglast)
            self.settled.wait()
            if self.policies is None or self.policies > 0:
                import dbguard_pipeline.policy  # noqa: F401  (pglast)
        except Exception:  # noqa: BLE001, S110  (imported again, and reported, where used)
            pass


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere nothing): the catalog
    rows and libpq's results, freed once the snapshot is built, would otherwise stay in the process (a third of
    its memory at 8,000 tables) under everything that comes after."""
    try:
        import ctypes

        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, ImportError, TypeError):  # not glibc (TypeError: Windows has no CDLL(None))
        return
    trim(0)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    finally:
        gc.unfreeze()  # a caller in the same process (tests, a notebook) gets its collector back as it was


def _run(args: argparse.Namespace) -> int:
    # Only what is needed before connecting is imported here; the audit, the rules and the reports are imported
    # while the server answers the catalog queries (_Warmup).
    from dbguard_pipeline import services
    from dbguard_pipeline.commands.progress import progress
    from dbguard_pipeline.config import config_path, load_config
    from dbguard_pipeline.text import plural, use_color

    source = config_path(args.config)
    config = load_config(source)
    if args.rules or args.exclude_rules or config.exclude_rules or config.severity:  # unknown ids: before connecting
        from dbguard_pipeline.audit import selected_rules

        selected_rules(args.rules + args.exclude_rules if args.rules else args.exclude_rules)
        if args.exclude_rules:
            config = config.model_copy(update={"exclude_rules": (*config.exclude_rules, *args.exclude_rules)})
        selected_rules(args.rules, config)
    baseline = None
    if args.baseline:  # a bad file fails before connecting
        from dbguard_pipeline.report import load_baseline

        baseline = load_baseline(args.baseline)
    dsn = services.resolve_dsn(args.dsn)
    to_file = bool(args.out) and args.out != "-"
    color = False if to_file else use_color(args.color)
    if args.color == "always":
        color = True
    with progress(quiet=args.quiet, color=use_color(args.color, sys.stderr)) as bar:
        bar.phase("introspecting the schema")
        warmup = _Warmup(args.format)
        collecting = gc.isenabled()
        gc.disable()  # the snapshot's objects are many and live to the end: no collection while they are built
        failed = True
        try:
            snapshot = services.introspect(dsn, config, config.schemas or None, on_counts=warmup.counts)
            failed = False
        finally:
            warmup.join(failed=failed)
            gc.freeze()  # and none walks them afterwards, until run() returns
            if collecting:
                gc.enable()
        trim_heap()
        bar.phase(
            f"auditing {plural(len(snapshot.tables), 'table')}"
            + ("" if args.no_data else " (data metrics: one read per table)")
        )
        result = services.audit(dsn, config, rules=args.rules, with_metrics=not args.no_data, snapshot=snapshot)
    from dbguard_pipeline.commands.output import write_output
    from dbguard_pipeline.report import apply_baseline, render, render_baseline

    if args.write_baseline:
        write_output(render_baseline(result), args.write_baseline)
    gone: tuple[str, ...] = ()
    accepted = 0
    if baseline is not None:
        outcome = apply_baseline(result, baseline)
        result, accepted, gone = outcome.result, outcome.accepted, outcome.gone
    where = str(source) if source is not None else None
    report = render(
        result,
        args.format,
        fail_on=args.fail_on,
        color=color,
        group_by=args.group_by,
        verbose=args.verbose,
        quiet=args.quiet,
        config_source=where,
    )
    write_output(report, args.out)
    code = result.exit_code(args.fail_on)
    if args.quiet:
        return code
    if baseline is not None:
        print(
            f"baseline {args.baseline}: {accepted} accepted, {len(result.findings)} new"
            + (f", {len(gone)} fixed since (--write-baseline to refresh it)" if gone else ""),
            file=sys.stderr,
        )
    if args.write_baseline:
        print(f"wrote baseline {args.write_baseline}", file=sys.stderr)
    if to_file:
        s = result.summary()
        extra = f", {len(result.not_measured)} not measured" if result.not_measured else ""
        print(
            f"wrote {args.out}: {s['critical']} critical, {s['warning']} warning, {s['info']} info, "
            f"{s['ignored']} ignored{extra} ({result.database}; config: {where or 'defaults'})",
            file=sys.stderr,
        )
    return code
