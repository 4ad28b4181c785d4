"""dbguard lint-migration: lint migration files before they are merged (the pre-commit hook): squawk's
rules for safe schema changes, and dbguard's policy checks on the RLS statements (CREATE / ALTER POLICY,
DISABLE / NO FORCE ROW LEVEL SECURITY), with no database."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Lint SQL migration files without a database: squawk (locks, unsafe DDL) and dbguard's row level security "
    "checks on CREATE POLICY / ALTER POLICY / ALTER TABLE ... ROW LEVEL SECURITY statements (always-true "
    "policies, unsafe setting casts, per-row auth calls, user_metadata, RLS disabled). Exit 0 clean, 1 "
    "problems, 2 usage errors."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="SQL migration files")
    parser.add_argument("--no-squawk", action="store_true", help="only dbguard's policy checks")
    parser.add_argument("--pg-version", metavar="N.M", help="the PostgreSQL version squawk assumes (e.g. 16.0)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.policy.parse import PolicyParseError
    from dbguard_pipeline.policy.statements import statement_problems
    from dbguard_pipeline.text import escape_controls

    lines: list[tuple[int, int, str]] = []  # (file index, line, text): printed in file and line order
    for i, name in enumerate(args.files):
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DbguardError(f"file not found: {name}") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise DbguardError(f"{name} is not a UTF-8 text file") from None
        except OSError as exc:
            raise DbguardError(f"cannot read {name}: {exc.strerror or exc}") from None
        try:
            problems = statement_problems(text)
        except PolicyParseError as exc:
            lines.append((i, 0, f"{name}: does not parse: {escape_controls(str(exc) or 'syntax error')}"))
            continue
        for p in problems:
            lines.append((i, p.line, f"{name}:{p.line}: {p.severity}: {escape_controls(p.message)} [dbguard {p.rule}]"))
    if not args.no_squawk:
        from dbguard_pipeline.fixes.lint import lint_files

        result = lint_files(args.files, args.pg_version)
        index = {Path(f).name: i for i, f in enumerate(args.files)}
        for v in result.violations:
            i = index.get(v.file, len(args.files))
            name = args.files[i] if i < len(args.files) else v.file
            lines.append((i, v.line, f"{name}:{v.line}: squawk {v.rule}: {escape_controls(v.message)}"))
    for _i, _line, text in sorted(lines, key=lambda x: (x[0], x[1])):
        print(text)
    checks = "dbguard policy checks" + ("" if args.no_squawk else " and squawk")
    print(
        f"dbguard lint-migration: {len(lines)} problem{'s' if len(lines) != 1 else ''} in {len(args.files)} "
        f"file{'s' if len(args.files) != 1 else ''} ({checks})",
        file=sys.stderr,
    )
    return 1 if lines else 0
