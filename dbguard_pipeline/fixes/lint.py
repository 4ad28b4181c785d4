"""Lint generated SQL: squawk (the squawk-cli package, a project dependency) and the PostgreSQL parser.

squawk runs with its default rules and no file-wide exclusions. The generated files silence exactly three
findings, each with an inline ``-- squawk-ignore RULE`` on the one statement it concerns
(docs/migrations.md explains each):
  * ban-drop-constraint on the temporary NOT NULL CHECK, dropped once SET NOT NULL holds the guarantee;
  * ban-drop-constraint and ban-drop-column in rollback files, on objects the forward file created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from dbguard_pipeline.errors import DbguardError


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


@dataclass
class LintResult:
    files: list[str]
    violations: list[Violation] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    squawk_version: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations and not self.parse_errors

    def summary(self) -> str:
        if self.ok:
            return f"squawk {self.squawk_version}: 0 violations in {len(self.files)} files; pglast: all parse"
        return (
            f"squawk {self.squawk_version}: {len(self.violations)} violations, "
            f"{len(self.parse_errors)} parse errors in {len(self.files)} files"
        )


def squawk_binary() -> str:
    """The squawk executable installed with the package (next to this Python), else on PATH."""
    candidates = [Path(sys.executable).parent / "squawk", Path(sys.prefix) / "bin" / "squawk"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("squawk")
    if not found:
        raise DbguardError("squawk is not installed (pip install squawk-cli==2.70.0)")
    return found


def squawk_pg_version(server_version: str) -> Optional[str]:
    """The ``--pg-version`` squawk expects (``16.4``, ``15.0``) from the server's version text, or None."""
    m = re.match(r"(\d+)(?:\.(\d+))?", server_version or "")
    return f"{m.group(1)}.{m.group(2) or 0}" if m else None


def parse_check(text: str) -> Optional[str]:
    """None when pglast parses the text, else the parser's one-line error."""
    import pglast

    try:
        pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        return str(exc).splitlines()[0]
    return None


def lint_files(paths: Iterable[str | os.PathLike[str]], pg_version: Optional[str] = None) -> LintResult:
    files = [str(p) for p in paths]
    result = LintResult(files=[os.path.basename(p) for p in files])
    for p in files:
        err = parse_check(Path(p).read_text(encoding="utf-8"))
        if err:
            result.parse_errors.append(f"{os.path.basename(p)}: {err}")
    if not files:
        return result
    exe = squawk_binary()
    cmd = [exe, "--reporter", "json"]
    if pg_version:
        cmd.append(f"--pg-version={pg_version}")
    env = dict(os.environ, SQUAWK_DISABLE_UPLOAD="1", NO_COLOR="1")
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, env=env)
        result.squawk_version = version.stdout.strip().split()[-1] if version.stdout.strip() else "?"
        proc = subprocess.run(cmd + files, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DbguardError(f"could not run squawk: {exc}") from None
    out = proc.stdout.strip()
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not out):
        raise DbguardError(f"squawk failed (exit {proc.returncode}): {(proc.stderr or out).strip().splitlines()[:1]}")
    items = json.loads(out) if out else []
    for item in items:
        result.violations.append(
            Violation(
                file=os.path.basename(item.get("file", "")),
                line=int(item.get("line", 0)) + 1,
                rule=item.get("rule_name", "?"),
                message=item.get("message", ""),
            )
        )
    return result


def lint_texts(texts: dict[str, str], pg_version: Optional[str] = None) -> LintResult:
    """Lint SQL not yet written anywhere: {file name: text}."""
    with tempfile.TemporaryDirectory(prefix="dbguard-lint-") as tmp:
        paths = []
        for name, text in texts.items():
            p = Path(tmp) / name
            p.write_text(text, encoding="utf-8")
            paths.append(p)
        return lint_files(paths, pg_version)
