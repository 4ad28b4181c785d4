"""The command examples of README.md and docs/*.md run as written, on a fresh copy of the demo database.

Every ``bash``/``sh`` (or unlabelled) fenced block is read; its ``dbguard`` lines (``$ `` prompts and
``&&`` chains included) for the commands below run in order in one working directory, as a reader pasting the
block would, with ``$DATABASE_URL``, ``$PROD_URL``, ``$STAGING_URL`` and ``$DBGUARD_DATABASE_URL`` all naming
the copy. A line must not end in a usage or input error (exit 2), a traceback or an ``error:`` line: the
docs cannot drift from the CLI. Output blocks (``dbguard X: error: ...``) and synopses (``[--dsn URL]``) are
not commands and are left out; so are the commands that need more than a database (``demo``, ``backup``,
``restore``: their own tests run them) and ``migrate rollback NAME`` of an example migration name.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dbguard_pipeline.rules import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"validate", "introspect", "test-isolation", "diff", "generate-migration", "lint-migration", "migrate"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    doc: str
    index: int
    commands: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}#{self.index}"


def _commands(body: str) -> list[str]:
    out = []
    for raw in body.splitlines():
        line = raw.strip().removeprefix("$ ")
        line = re.sub(r"\s+#.*$", "", line)  # a trailing comment
        for part in (p.strip() for p in line.split("&&")):
            if not part.startswith("dbguard ") or part.split()[1].endswith(":"):  # output: "dbguard diff: error: ..."
                continue
            words = shlex.split(part)
            if len(words) < 2 or words[1] not in RUN:
                continue
            if re.search(r"\[|\b[A-Z]{3,}\b(?!\w*_)|\.\.\.", part.replace("$", "")):  # a synopsis or placeholder
                continue
            if words[1] == "migrate" and "rollback" in words:
                continue
            out.append(part)
    return out


def _blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for i, m in enumerate(FENCE.finditer(text)):
            if m.group(1) not in ("", "bash", "sh", "shell"):
                continue
            commands = _commands(m.group(2))
            if commands:
                blocks.append(Block(str(doc.relative_to(ROOT)), i, tuple(commands)))
    return blocks


BLOCKS = _blocks()


def test_the_examples_are_found():
    docs = {b.doc for b in BLOCKS}
    assert {"README.md", "docs/validate.md", "docs/diff.md", "docs/demo.md", "docs/migrations.md"} <= docs
    verbs = {shlex.split(c)[1] for b in BLOCKS for c in b.commands}
    assert {"validate", "diff", "generate-migration", "migrate", "introspect"} <= verbs


def test_the_rule_count_in_the_readme_is_the_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"\n{len(REGISTRY)} rules ([docs/rules.md]" in readme


@pytest.mark.integration
@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_doc_example_runs(block, demo_dsn, tmp_path):
    (tmp_path / "migrations").mkdir()  # the reader's repository has its migrations folder
    env = {**os.environ, "DBGUARD_HOME": str(tmp_path / "home")}
    for name in ("DATABASE_URL", "PROD_URL", "STAGING_URL", "DBGUARD_DATABASE_URL", "DBGUARD_ISOLATION_DSN"):
        env[name] = demo_dsn
    env.pop("DBGUARD_CONFIG", None)
    for command in block.commands:
        argv = [env.get(a[1:], a) if a.startswith("$") else a for a in shlex.split(command)]
        if argv[1] == "diff":  # a snapshot file the reader has from an earlier `introspect --out`
            for snap in (a for a in argv[2:] if a.endswith(".json") and not (tmp_path / a).exists()):
                made = subprocess.run(
                    [sys.executable, "-m", "dbguard_pipeline.cli", "introspect", "--out", snap],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                assert made.returncode == 0, made.stderr
        if argv[1] == "lint-migration":
            continue
        proc = subprocess.run(
            [sys.executable, "-m", "dbguard_pipeline.cli", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        where = f"{block}: `{command}` exited {proc.returncode}:\n{proc.stderr[-2000:]}"
        assert proc.returncode in (0, 1), where
        assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, where


def _documented_errors(doc: str, prefix: str) -> list[str]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip().startswith(prefix)]


@pytest.mark.integration
def test_the_documented_diff_errors_are_the_real_ones(demo_dsn, tmp_path):
    documented = _documented_errors("docs/diff.md", "dbguard diff: error:")
    env = {**os.environ, "DBGUARD_DATABASE_URL": demo_dsn}

    def diff(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "dbguard_pipeline.cli", "diff", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        return proc.stderr.strip()

    subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", "introspect", "--out", "before.json"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", "validate", "--format", "json", "--out", "report.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert diff("before.json", "after.json") in documented
    assert diff("report.json", demo_dsn) in documented


def test_every_install_line_installs_this_project():
    """README/docs: a `pip install` of dbguard installs this checkout (`.` or `".[extra]"` with a real extra),
    never a registry name or a placeholder URL; only other projects' packages are named."""
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = set(meta["optional-dependencies"])
    others = {"dagster-k8s", "dagster-celery", "pytest"}
    seen = 0
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            m = re.search(r"pip install (.*?)(?:\s+#.*)?(?:`|$)", line)
            if not m:
                continue
            args = [a for a in shlex.split(m.group(1)) if not a.startswith("-")]
            ours = [a for a in args if a not in others]
            assert "git+" not in line and " dbguard" not in f" {m.group(1)}", f"{doc.name}: {line.strip()}"
            for a in ours:
                spec = re.fullmatch(r"\.(?:\[([a-z,]+)\])?", a)
                assert spec, f"{doc.name}: `{a}` is not this project's checkout: {line.strip()}"
                assert set(filter(None, (spec.group(1) or "").split(","))) <= extras, line
                seen += 1
    assert seen >= 5
