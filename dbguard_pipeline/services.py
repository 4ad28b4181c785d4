"""The service layer: what the CLI and the Dagster definitions call. They map arguments and present results;
every judgment and every database conversation lives below this module."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dbguard_pipeline.errors import UsageError
from dbguard_pipeline.pg.dsn import ENV_DSN, parse_dsn

if TYPE_CHECKING:
    from dbguard_pipeline.analyze import AnalyzeReport
    from dbguard_pipeline.audit.run import AuditResult
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.diff.result import SnapshotDiff
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.fixes.actions import Context
    from dbguard_pipeline.fixes.apply import ApplyRun, Pending
    from dbguard_pipeline.fixes.approvals import Approval
    from dbguard_pipeline.fixes.ledger import Runner
    from dbguard_pipeline.fixes.lint import LintResult
    from dbguard_pipeline.fixes.outcomes import OutcomeRow
    from dbguard_pipeline.fixes.plan import Migration
    from dbguard_pipeline.fixes.sandbox import SandboxResult
    from dbguard_pipeline.model.schema import Snapshot
    from dbguard_pipeline.probe.report import ProbeReport


def resolve_dsn(dsn: Optional[str] = None, *, allow_demo: bool = True) -> str:
    """--dsn, else $DBGUARD_DATABASE_URL, else (when ``allow_demo``) the embedded demo database, loaded on first
    use. An empty --dsn or an empty $DBGUARD_DATABASE_URL is a usage error, never a silent fall-back: an unset
    variable in a script must not send migrations to another database."""
    if dsn is not None:
        if not dsn.strip():
            raise UsageError("--dsn is empty: give a database URL (or leave --dsn out)")
        parse_dsn(dsn)
        return dsn
    env = os.environ.get(ENV_DSN)
    if env is not None:
        if not env.strip():
            raise UsageError(f"${ENV_DSN} is set but empty: give a database URL (or unset it)")
        parse_dsn(env)
        return env
    if not allow_demo:
        raise UsageError(f"no database given: use --dsn URL or set ${ENV_DSN}")
    from dbguard_pipeline.demo import ensure_demo_database

    return ensure_demo_database()


# --------------------------------------------------------------------------- performance
def analyze(
    dsn: Optional[str],
    config: Config,
    tables: Optional[Sequence[str]] = None,
    *,
    snapshot: Optional[Snapshot] = None,
    runs: int = 3,
    prove: bool = True,
    top_statements: int = 10,
) -> AnalyzeReport:
    """``dbguard analyze`` and the ``rls_performance`` asset: what row level security costs each tenant table,
    measured as the app role and as the owner (read-only); with ``prove``, each fix is applied to a scratch copy
    and measured before it is proposed. ``snapshot`` reuses an introspection already made."""
    from dbguard_pipeline.analyze import Options
    from dbguard_pipeline.analyze import analyze as run_analysis
    from dbguard_pipeline.errors import DbguardError

    if runs < 1 or runs > 50:
        raise DbguardError("--runs must be between 1 and 50")
    options = Options(runs=runs, prove=prove, top_statements=top_statements)
    return run_analysis(resolve_dsn(dsn), config, tables, options=options, snapshot=snapshot)


# --------------------------------------------------------------------------- fix migrations
@dataclass
class GeneratedFixes:
    """One run of the fix pipeline: plan -> render -> lint -> round trip -> write. Each step fills its part;
    ``failure`` (lint or round trip) stops the run before anything is written. Holds no DSN (the Dagster ops
    pass it between them and may store it)."""

    database: str
    server_version: str
    timestamp: str  # of the file names
    out_dir: str
    migrations: list[Migration] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # all fixable findings: why a group or a finding is not planned
    manual: list[str] = field(default_factory=list)  # critical/warning findings no action fixes (--all)
    nothing: Optional[str] = None  # one action that finds nothing to fix: why
    texts: dict[str, str] = field(default_factory=dict)  # {file name: SQL}, once rendered
    lint: Optional[LintResult] = None
    round_trip: Optional[SandboxResult] = None
    round_trip_skipped: Optional[str] = None  # why the optional round trip could not run
    written: list[Path] = field(default_factory=list)
    rejected: list[Migration] = field(default_factory=list)  # failed their round trip: written to rejected/
    failure: Optional[DbguardError] = None


def plan_fixes(
    dsn: Optional[str],
    config: Config,
    *,
    action: Optional[str] = None,
    table: Optional[str] = None,
    args: Sequence[str] = (),
    tenant_default: Optional[str] = None,
    cache_keys: Optional[Sequence[str]] = None,
    out_dir: str = "migrations",
    timestamp: Optional[str] = None,
    with_analyze: bool = False,
) -> GeneratedFixes:
    """Plan on a fresh snapshot: ``action`` on ``table``, or (no action) one migration per table and action for
    the audit's fixable findings (only ``cache_keys`` when given) that no pending file in ``out_dir`` fixes;
    with ``with_analyze``, also an ``optimize-policy`` migration for each table where ``dbguard analyze`` proved
    that rewrite faster on a scratch copy (never for a table whose policies another migration of the run, or a
    pending file, already rewrites)."""
    from dbguard_pipeline.fixes import script
    from dbguard_pipeline.fixes.actions import NothingToFix, build_context, plan_action
    from dbguard_pipeline.fixes.ledger import applied_names
    from dbguard_pipeline.fixes.select import plan_all
    from dbguard_pipeline.pg.catalog import introspect

    ts = script.timestamp(timestamp)
    dsn = resolve_dsn(dsn)
    snapshot = introspect(
        dsn,
        config.schemas or None,
        statement_timeout_ms=config.statement_timeout_ms,
        lock_timeout_ms=config.lock_timeout_ms,
    )
    ctx = build_context(snapshot, config, dsn)
    fixes = GeneratedFixes(snapshot.database, snapshot.server_version, ts, out_dir)
    if action is None:
        from dbguard_pipeline.fixes.actions.context import check_role

        check_role(ctx)  # a missing app_role is a config error, not a list of skipped fixes (issue #13, item 11)
        findings = ctx.findings
        if cache_keys:
            wanted = set(cache_keys)
            findings = [f for f in findings if f.cache_key in wanted]
        planned = plan_all(
            ctx,
            findings,
            pending_fixes=script.pending_fixes(out_dir, applied_names(dsn)),
            tenant_default=tenant_default,
        )
        fixes.migrations, fixes.skipped, fixes.manual = planned.migrations, planned.skipped, planned.manual
        if with_analyze:
            _add_proven_optimizations(dsn, config, ctx, fixes, snapshot, out_dir)
        return fixes
    try:
        m = plan_action(ctx, action, table or "", args, tenant_default)
    except NothingToFix as exc:
        fixes.nothing = str(exc)
        return fixes
    # like --all: a migration for the same action and table that is written but not applied yet is the fix
    # (a second one would fail on "already exists" after the first is applied)
    same = _pending_same(out_dir, m.stem(ts)[len(ts) :], set(applied_names(dsn)))
    if same:
        fixes.nothing = (
            f"{same[-1]} in {out_dir} is pending and does the same for {m.qualified}: apply it with dbguard migrate up"
        )
        return fixes
    fixes.migrations = [m]
    return fixes


def _pending_same(out_dir: str, stem_suffix: str, applied: set[str]) -> list[str]:
    """Migration files in ``out_dir`` for the same action and table (``_<action>_<table>``) not applied yet."""
    folder = Path(out_dir)
    return sorted(
        p.stem
        for p in (folder.glob(f"*{stem_suffix}.sql") if folder.is_dir() else ())
        if p.stem.endswith(stem_suffix) and p.stem[: -len(stem_suffix)].isdigit() and p.stem not in applied
    )


def _add_proven_optimizations(
    dsn: str, config: Config, ctx: Context, fixes: GeneratedFixes, snapshot: Snapshot, out_dir: str
) -> None:
    """``--all --analyze``: the optimize-policy suggestions analyze proved (measured faster on a scratch copy,
    same rows, exact rollback), planned again on this run's snapshot."""
    from dbguard_pipeline.fixes.actions import NothingToFix, plan_action
    from dbguard_pipeline.fixes.actions.optimize_policy import OPTIMIZE_POLICY
    from dbguard_pipeline.fixes.ledger import applied_names
    from dbguard_pipeline.text import one_line

    report = analyze(dsn, config, snapshot=snapshot, prove=True, top_statements=0)
    proven = sorted({s.relation for t in report.tables for s in t.proposed if s.action == OPTIMIZE_POLICY})
    unproven = {
        s.relation: f"{s.status}: {s.reason or 'not measured'}"
        for t in report.tables
        for s in t.suggestions
        if s.action == OPTIMIZE_POLICY and not s.proposed and s.relation not in proven
    }
    for relation, why_not in sorted(unproven.items()):
        fixes.skipped.append(f"{OPTIMIZE_POLICY} {relation}: not proven by dbguard analyze ({one_line(why_not)})")
    # fix-rls-policy and add-tenant-isolation rewrite policies too: one migration per table's policies per run
    rewritten = {m.qualified: m.action for m in fixes.migrations if m.action != "add-composite-index"}
    applied = set(applied_names(dsn))
    for relation in proven:
        if relation in rewritten:
            fixes.skipped.append(
                f"{OPTIMIZE_POLICY} {relation}: {rewritten[relation]} changes the table in this run (run "
                "generate-migration --all --analyze again once it is applied)"
            )
            continue
        try:
            m = plan_action(ctx, OPTIMIZE_POLICY, relation)
        except NothingToFix as exc:
            fixes.skipped.append(f"{OPTIMIZE_POLICY} {relation}: {exc}")
            continue
        same = _pending_same(out_dir, m.stem(fixes.timestamp)[len(fixes.timestamp) :], applied)
        if same:
            fixes.skipped.append(f"{OPTIMIZE_POLICY} {relation}: {same[-1]} in {out_dir} is pending and does it")
            continue
        m.why = [f"dbguard analyze measured it {_speedup(report, relation)} on a scratch copy"]
        fixes.migrations.append(m)


def _speedup(report: AnalyzeReport, relation: str) -> str:
    best = max(
        (s.speedup or 0.0 for t in report.tables for s in t.proposed if s.relation == relation),
        default=0.0,
    )
    return f"{best:.1f}x faster" if best else "faster"


def render_fixes(fixes: GeneratedFixes) -> GeneratedFixes:
    """The forward and rollback file of each migration (deterministic: same plan, same bytes)."""
    from dbguard_pipeline.fixes import script

    fixes.texts = script.rendered(fixes.migrations, fixes.timestamp)
    return fixes


def lint_fixes(fixes: GeneratedFixes) -> GeneratedFixes:
    """squawk (for the audited server's version; zero violations required) and the PostgreSQL parser."""
    from dbguard_pipeline.errors import MigrationError
    from dbguard_pipeline.fixes import script
    from dbguard_pipeline.fixes.lint import lint_texts, squawk_pg_version

    fixes.lint = lint_texts(fixes.texts, pg_version=squawk_pg_version(fixes.server_version))
    if not fixes.lint.ok:
        # a migration whose files fail is rejected (a dbguard bug); the others go on
        problems = [str(v) for v in fixes.lint.violations] + list(fixes.lint.parse_errors)
        for m in fixes.migrations:
            names = m.file_names(fixes.timestamp)
            mine = [p for p in problems if p.startswith(names)]
            if mine:
                m.rejected = f"the generated SQL did not pass squawk/pglast (a dbguard bug): {mine[0]}"
        fixes.rejected = [m for m in fixes.migrations if m.rejected]
        fixes.migrations = [m for m in fixes.migrations if not m.rejected]
        fixes.texts = script.rendered(fixes.migrations, fixes.timestamp)
        if not fixes.rejected or not fixes.migrations:
            fixes.failure = MigrationError(
                "the generated SQL did not pass squawk/pglast (a dbguard bug): nothing was written"
            )
    return fixes


def round_trip_fixes(dsn: str, config: Config, fixes: GeneratedFixes, mode: str = "auto") -> GeneratedFixes:
    """Apply, check, judge and roll back each migration on a scratch copy of the database. ``mode``: "yes"
    (required: a copy that cannot be made is a failure), "auto" (skipped, with the reason, when the server does
    not allow it) or "no". A migration that fails its round trip is moved to ``rejected`` (with the reason in
    its header) and never blocks the others; the texts are rendered again with the verdicts in the headers."""
    from dbguard_pipeline.errors import DbguardError, MigrationError
    from dbguard_pipeline.fixes.sandbox import round_trip

    if mode == "no" or not fixes.migrations:
        return fixes
    try:
        fixes.round_trip = round_trip(dsn, fixes.migrations, config)
    except DbguardError as exc:
        if mode == "yes":
            fixes.failure = exc
        else:
            fixes.round_trip_skipped = str(exc)
        return fixes
    from dbguard_pipeline.fixes import script

    fixes.rejected += [m for m in fixes.migrations if m.rejected]
    fixes.migrations = [m for m in fixes.migrations if not m.rejected]
    fixes.texts = script.rendered(fixes.migrations, fixes.timestamp)
    if fixes.rejected and not fixes.migrations:
        fixes.failure = MigrationError(
            f"every migration failed its round trip on a scratch copy: written to "
            f"{Path(fixes.out_dir) / 'rejected'} with the reasons, nothing to apply"
        )
    return fixes


def write_fixes(fixes: GeneratedFixes) -> GeneratedFixes:
    """Write every passed migration into ``out_dir`` (all or none) and every rejected one into
    ``out_dir/rejected`` (the runner never reads that folder). Raises the run's failure, if any, after writing
    the rejected files (lint failures write nothing)."""
    from dbguard_pipeline.fixes import script

    if fixes.rejected:
        script.write_files(Path(fixes.out_dir) / "rejected", script.rendered(fixes.rejected, fixes.timestamp))
    if fixes.failure is not None:
        raise fixes.failure
    if fixes.texts:
        fixes.written = script.write_files(fixes.out_dir, fixes.texts)
    return fixes


def generate_fixes(
    dsn: Optional[str],
    config: Config,
    *,
    action: Optional[str] = None,
    table: Optional[str] = None,
    args: Sequence[str] = (),
    tenant_default: Optional[str] = None,
    cache_keys: Optional[Sequence[str]] = None,
    out_dir: str = "migrations",
    timestamp: Optional[str] = None,
    round_trip: str = "auto",
    dry_run: bool = False,
    with_analyze: bool = False,
) -> GeneratedFixes:
    """The whole fix pipeline: plan, render, then (unless ``dry_run``) lint, round trip and write. A lint
    failure stops the run (nothing written); a migration that fails its round trip goes to ``rejected/``
    and the others are written."""
    from dbguard_pipeline.fixes.script import timestamp as checked_timestamp

    timestamp = checked_timestamp(timestamp)  # a bad --timestamp fails before any connection
    dsn = resolve_dsn(dsn)
    fixes = plan_fixes(
        dsn,
        config,
        action=action,
        table=table,
        args=args,
        tenant_default=tenant_default,
        cache_keys=cache_keys,
        out_dir=out_dir,
        timestamp=timestamp,
        with_analyze=with_analyze,
    )
    if not fixes.migrations:
        return fixes
    render_fixes(fixes)
    if dry_run:
        return fixes
    lint_fixes(fixes)
    if fixes.failure is None:
        round_trip_fixes(dsn, config, fixes, round_trip)
    if fixes.failure is None:
        write_fixes(fixes)
    elif fixes.rejected:
        from contextlib import suppress

        from dbguard_pipeline.errors import DbguardError

        with suppress(DbguardError):  # writes the rejected files, then raises the failure the caller reports
            write_fixes(fixes)
    return fixes


def fixes_wanted(cache_keys: Sequence[str], out_dir: str) -> tuple[list[str], list[str]]:
    """Of the audit's finding cache keys: the fixable ones, and those of them that no migration file in
    ``out_dir`` names yet (what a fix run would be for; read from the files alone, without a connection)."""
    from dbguard_pipeline.fixes.script import pending_fixes
    from dbguard_pipeline.fixes.select import fixable_keys

    fixable = fixable_keys(cache_keys)
    pending = pending_fixes(out_dir)
    return fixable, [k for k in fixable if k not in pending]


# --------------------------------------------------------------------------- the migration runner
def migrator(
    dsn: Optional[str],
    directory: str | Path,
    *,
    lock_retries: int = 0,
    log: Optional[Callable[[str], None]] = None,
    require_approval: bool = False,
) -> Runner:
    """The runner for the migrations in ``directory`` on the database (``dsn`` as :func:`resolve_dsn` reads
    it, but never the embedded demo database): ``status()``, ``plan(target)``, ``up(target)``,
    ``rollback(name, dry_run)``. ``require_approval``: ``up`` refuses, before applying anything, a pending
    migration without a valid approval record."""
    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.fixes.ledger import Runner

    if lock_retries < 0:
        raise DbguardError("--lock-retries must be 0 or more")
    runner = Runner(resolve_dsn(dsn, allow_demo=False), directory, lock_retries=lock_retries)
    if log is not None:
        runner.log = log
    if require_approval:
        from dbguard_pipeline.fixes.approvals import gate

        runner.gate = gate(directory)
    return runner


# --------------------------------------------------------------------------- approve, back up, apply, verify
def pending_migrations(dsn: str, directory: str | Path) -> list[Pending]:
    """The migrations of ``directory`` not applied yet, with their approval, header, scope and last attempt."""
    from dbguard_pipeline.fixes.apply import list_pending

    return list_pending(dsn, directory)


def approve_migrations(directory: str | Path, names: Sequence[str], by: Optional[str] = None) -> list[Approval]:
    """Write the approval record of each named migration (``by``: else git's user.name, else $USER)."""
    from dbguard_pipeline.fixes.approvals import approve, approver

    return approve(directory, list(names), approver(by, directory))


def backup_dir(config: Config) -> Path:
    from dbguard_pipeline.pg.embedded import dbguard_home

    return Path(config.backup_dir) if config.backup_dir else dbguard_home() / "backups"


def apply_approved(
    dsn: str,
    config: Config,
    directory: str | Path,
    *,
    backup: Optional[str] = None,
    dry_run: bool = False,
    via: str = "dbguard fix",
    log: Optional[Callable[[str], None]] = None,
    alert: bool = True,
) -> ApplyRun:
    """Back up, apply, verify and (on regression) roll back and restore every approved pending migration, in
    order; the CLI's ``dbguard fix`` and the ``apply_approved_migrations`` job both call this. ``alert``: send a
    regression to the alert channels here (the Dagster job leaves it to the run-failure sensor, which alerts
    on the failed run)."""
    from dbguard_pipeline.fixes.apply import Options
    from dbguard_pipeline.fixes.apply import apply_approved as run

    opts = Options(
        backup_dir=backup_dir(config),
        backup=backup or config.fix_backup,
        dry_run=dry_run,
        via=via,
        alert=alert,
    )
    if log is not None:
        opts.log = log
    return run(dsn, config, directory, opts)


def fix_outcomes(dsn: str, limit: int = 50) -> list[OutcomeRow]:
    """The newest attempts of dbguard fix / apply_approved_migrations (dbguard.fix_outcomes)."""
    from dbguard_pipeline.fixes.outcomes import read_recent

    return read_recent(dsn, limit)


# --------------------------------------------------------------------------- audit, probe, diff


def introspect(
    dsn: str,
    config: Optional[Config] = None,
    schemas: Optional[Iterable[str]] = None,
    *,
    on_counts: Optional[Callable[[int, int], None]] = None,
) -> Snapshot:
    """The schema snapshot of ``dsn`` (read-only transactions, the config's timeouts). ``schemas``: only these
    (None: every schema; the audit's scope is ``config.schemas or None``). ``on_counts(tables, policies)``:
    told early how big the catalog is (validate decides from it whether to load the policy parser)."""
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.pg.catalog import introspect as take_snapshot

    config = config or Config()
    return take_snapshot(
        dsn,
        schemas,
        statement_timeout_ms=config.statement_timeout_ms,
        lock_timeout_ms=config.lock_timeout_ms,
        on_counts=on_counts,
    )


def audit(
    dsn: str,
    config: Config,
    *,
    rules: Optional[Iterable[str]] = None,
    with_metrics: bool = True,
    snapshot: Optional[Snapshot] = None,
) -> AuditResult:
    """The whole audit (``dbguard validate``, ``dbguard demo``): snapshot, data metrics, rules, ignores."""
    from dbguard_pipeline.audit import run_audit

    return run_audit(dsn, config, rules=rules, with_metrics=with_metrics, snapshot=snapshot)


def static_audit(snapshot: Snapshot, config: Config) -> AuditResult:
    """The rules that read the schema alone, on a snapshot taken before (the ``rls_audit`` asset)."""
    from dbguard_pipeline.audit import static_audit as run

    return run(snapshot, config)


def data_audit(dsn: str, snapshot: Snapshot, config: Config) -> AuditResult:
    """One pass of data metrics and the data rules (the ``tenant_coverage`` and ``data_integrity`` assets)."""
    from dbguard_pipeline.audit import data_audit as run

    return run(dsn, snapshot, config)


def probe(
    dsn: str,
    config: Optional[Config] = None,
    tables: Optional[Sequence[str]] = None,
    *,
    snapshot: Optional[Snapshot] = None,
    tenants: Optional[Sequence[str]] = None,
    test_rows: Optional[bool] = None,
) -> ProbeReport:
    """Cross-tenant reads and writes as the application role, always rolled back (``dbguard test-isolation``).
    ``test_rows=False`` (default: ``config.probe_test_rows``): nothing is inserted, not even rolled back."""
    from dbguard_pipeline.config import Config as _Config
    from dbguard_pipeline.probe import probe as run
    from dbguard_pipeline.probe.disagree import disagreements

    config = config or _Config()
    report = run(dsn, config, tables, snapshot=snapshot, tenants=tenants, test_rows=test_rows)
    if report.snapshot is not None:  # where the static audit of the same snapshot and the probe disagree
        report.disagreements = disagreements(report, static_audit(report.snapshot, config).findings, report.snapshot)
    return report


def diff(
    source: Snapshot,
    target: Snapshot,
    config: Optional[Config] = None,
    *,
    source_label: Optional[str] = None,
    target_label: Optional[str] = None,
    source_kind: str = "snapshot",
    target_kind: str = "snapshot",
) -> SnapshotDiff:
    """What changed from ``source`` to ``target``, what got weaker, new and resolved findings (``dbguard diff``).
    The labels are for people: never a DSN with a password."""
    from dbguard_pipeline.diff import diff_snapshots

    return diff_snapshots(
        source,
        target,
        config,
        source=source_label,
        target=target_label,
        source_kind=source_kind,
        target_kind=target_kind,
    )
