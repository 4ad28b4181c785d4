"""dbguard generate-migration: write a safe fix migration and its exact rollback, linted and round-trip tested."""
from __future__ import annotations

import sys

from dbguard_pipeline.commands._args import add_database_arguments

DESCRIPTION = (
    "Write a safe fix migration and its exact rollback: ACTION TABLE [ARGS...], or --all for one migration per "
    "fixable finding of a fresh audit. Actions: add-tenant-isolation TABLE, fix-rls-policy TABLE, "
    "add-composite-index TABLE COL1 [COL2 ...], add-foreign-key TABLE [REFTABLE [COLUMN]]. "
    "Every file passes squawk and is applied, checked and rolled back on a scratch copy before it is written."
)


def add_arguments(parser):
    parser.add_argument("action", nargs="?", metavar="ACTION",
                        help="add-tenant-isolation | fix-rls-policy | add-composite-index | add-foreign-key")
    parser.add_argument("table", nargs="?", metavar="TABLE", help="schema.table (or a table name when unambiguous)")
    parser.add_argument("args", nargs="*", metavar="ARGS", help="columns (add-composite-index); REFTABLE [COLUMN] (add-foreign-key)")
    parser.add_argument("--all", action="store_true", help="one migration per fixable finding of a fresh audit")
    parser.add_argument("--out-dir", default="migrations", metavar="DIR", help="where to write (default: migrations/)")
    add_database_arguments(parser)
    parser.add_argument("--tenant-default", metavar="VALUE",
                        help="add-tenant-isolation: the tenant for rows that reach none through foreign keys")
    test = parser.add_mutually_exclusive_group()
    test.add_argument("--test", dest="test", action="store_const", const="yes",
                      help="require the round trip on a scratch copy (default: run it when the server allows)")
    test.add_argument("--no-test", dest="test", action="store_const", const="no", help="skip the round trip")
    parser.add_argument("--dry-run", action="store_true", help="print the forward and rollback SQL, write nothing")
    parser.add_argument("--timestamp", metavar="YYYYMMDDHHMMSS", help="file name timestamp (default: now, UTC)")
    parser.set_defaults(test="auto")


def _out(line: str = "") -> None:
    print(line, flush=True)


def run(args) -> int:
    from dbguard_pipeline.pg.catalog import introspect
    from dbguard_pipeline.config import load_config
    from dbguard_pipeline.services import resolve_dsn
    from dbguard_pipeline.errors import DbguardError, MigrationError
    from dbguard_pipeline.fixes import script as mfiles
    from dbguard_pipeline.fixes.generate import NothingToFix, build_context, plan_action, plan_all
    from dbguard_pipeline.fixes.lint import lint_texts

    if args.all and args.action:
        raise DbguardError("give either --all or ACTION TABLE, not both")
    if not args.all and (not args.action or not args.table):
        raise DbguardError("usage: dbguard generate-migration ACTION TABLE [ARGS...] (or --all)")
    ts = mfiles.timestamp(args.timestamp)
    config = load_config(args.config)
    dsn = resolve_dsn(args.dsn)
    snapshot = introspect(dsn, config.schemas or None, statement_timeout_ms=config.statement_timeout_ms,
                          lock_timeout_ms=config.lock_timeout_ms)
    ctx = build_context(snapshot, config, dsn)

    if args.all:
        from dbguard_pipeline.rules import all_rules

        if not all_rules():
            raise DbguardError("--all needs the audit rules, which are not installed in this build")
        pending = mfiles.pending_fixes(args.out_dir, mfiles.applied_names(dsn))
        planned = plan_all(ctx, pending_fixes=pending, tenant_default=args.tenant_default)
        migrations = planned.migrations
        for line in planned.skipped:
            _out(f"skip  {line}")
        if not migrations:
            _out(f"nothing to fix: no fixable finding without a migration in {snapshot.database}")
            return 0
    else:
        try:
            migrations = [plan_action(ctx, args.action, args.table, args.args, args.tenant_default)]
        except NothingToFix as exc:
            _out(f"nothing to fix: {exc}")
            return 0

    texts = mfiles.rendered(migrations, ts)
    if args.dry_run:
        for name, text in texts.items():
            _out(f"-- ===== {name}")
            sys.stdout.write(text)
        return 0

    lint = lint_texts(texts, pg_version=_pg_version(snapshot.server_version))
    _out(lint.summary())
    if not lint.ok:
        for v in lint.violations:
            print(f"  {v}", file=sys.stderr)
        for e in lint.parse_errors:
            print(f"  {e}", file=sys.stderr)
        raise MigrationError("the generated SQL did not pass squawk/pglast (a dbguard bug): nothing was written")

    if args.test != "no":
        from dbguard_pipeline.fixes.sandbox import round_trip

        try:
            result = round_trip(dsn, migrations, config)
        except DbguardError as exc:
            if args.test == "yes":
                raise
            _out(f"round trip skipped: {exc} (use --test to require it)")
        else:
            _out(result.summary())
            for trip in result.trips:
                _out(f"  {trip.line()}")
            if not result.ok:
                raise MigrationError("the round trip on a scratch copy failed: nothing was written")

    written = mfiles.write_files(args.out_dir, texts)
    for m in migrations:
        fwd, rb = m.file_names(ts)
        _out(f"wrote {args.out_dir.rstrip('/')}/{fwd}")
        _out(f"      {args.out_dir.rstrip('/')}/{rb}")
        for w in m.what:
            _out(f"  - {w}")
    _out(f"{len(written) // 2} migration{'s' if len(written) != 2 else ''} written; review, then: "
         f"dbguard migrate up --dir {args.out_dir}")
    return 0


def _pg_version(server_version: str) -> str | None:
    import re

    m = re.match(r"(\d+)(?:\.(\d+))?", server_version or "")
    return f"{m.group(1)}.{m.group(2) or 0}" if m else None
