"""Progress on standard error: per-item counts ("data metrics: tables 12/12") when standard error is a terminal
(a real pty), nothing when it is not, nothing with --quiet; the report on standard output is the same either
way."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dbguard_pipeline.progress import listening, muted, tick

ROOT = Path(__file__).resolve().parents[1]
COUNT = re.compile(r"(?P<label>[a-z][a-z :]+?) +\S* *(?P<done>\d+)/(?P<total>\d+)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run(argv: list[str], tty: bool, tmp_path: Path) -> tuple[int, str, str]:
    """The CLI with standard error on a pty (``tty``) or a pipe; (exit code, stdout, stderr as drawn)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="xterm-256color", COLUMNS="140", DBGUARD_HOME=str(tmp_path))
    env.pop("NO_COLOR", None)
    cmd = [sys.executable, "-m", "dbguard_pipeline.cli", *argv]
    if not tty:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    try:
        proc2 = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=tmp_path
        )
        os.close(slave)
        # stdout is read beside the pty: a report bigger than a pipe's buffer must not block the child
        import threading

        stdout: list[bytes] = []
        reader = threading.Thread(target=lambda: stdout.append(proc2.stdout.read() if proc2.stdout else b""))
        reader.start()
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        code = proc2.wait(timeout=600)
        reader.join(timeout=60)
        out = b"".join(stdout).decode()
    finally:
        os.close(master)
    return code, out, b"".join(chunks).decode(errors="replace")


def _counts(err: str) -> dict[str, set[tuple[int, int]]]:
    seen: dict[str, set[tuple[int, int]]] = {}
    for frame in re.split(r"[\r\n]", ANSI.sub("", err)):
        for m in COUNT.finditer(frame):
            seen.setdefault(m["label"].strip(), set()).add((int(m["done"]), int(m["total"])))
    return seen


def test_ticks_reach_only_the_listener_of_the_context():
    heard: list[tuple[str, int, int]] = []
    tick("tables", 1, 2)  # nobody listens: nothing happens
    with listening(lambda *a: heard.append(a)):
        tick("tables", 1, 2)
        tick("tables", 2, 2)
    tick("tables", 3, 3)
    assert heard == [("tables", 1, 2), ("tables", 2, 2)]
    with listening(lambda *a: heard.append(a)):
        with muted():
            tick("probes: tables", 1, 1)  # an inner loop never takes over the outer count
        tick("fixes", 1, 1)
    assert heard[2:] == [("fixes", 1, 1)]


@pytest.mark.integration
def test_validate_draws_per_table_counts_on_a_terminal_only(demo_dsn, tmp_path):
    argv = ["validate", "--dsn", demo_dsn, "--color", "never"]
    code, out, err = _run(argv, tty=True, tmp_path=tmp_path)
    seen = _counts(err)
    tables = seen.get("data metrics: tables")
    assert tables, f"no table counts on the terminal: {err[-400:]!r}"
    total = {t for _, t in tables}
    assert len(total) == 1 and (total.pop(),) * 2 in tables  # the last frame says every table is done
    assert "introspecting the schema" in ANSI.sub("", err)
    # not a terminal: nothing on stderr, and the same report
    code2, out2, err2 = _run(argv, tty=False, tmp_path=tmp_path)
    assert (code2, err2) == (code, "")
    strip = re.compile(r"\d+\.\d+ ?s\b")
    assert strip.sub("", out2) == strip.sub("", out)
    # --quiet on a terminal: nothing drawn
    _, _, err3 = _run([*argv, "--quiet"], tty=True, tmp_path=tmp_path)
    assert not _counts(err3) and "introspecting" not in err3


@pytest.mark.integration
def test_test_isolation_counts_probed_tables(demo_dsn, tmp_path):
    argv = ["test-isolation", "--dsn", demo_dsn, "--format", "json"]
    code, out, err = _run(argv, tty=True, tmp_path=tmp_path)
    import json

    relations = json.loads(out)["summary"]["tables"]
    assert relations > 5
    probed = _counts(err).get("probes: tables")
    assert probed and (relations, relations) in probed, err[-400:]
    # one frame per table: every count from 1 to N was drawn (the bar refreshes on each tick)
    assert {d for d, _ in probed} >= set(range(1, relations + 1))
    _, _, quiet_err = _run([*argv, "--quiet"], tty=True, tmp_path=tmp_path)
    assert "probes" not in quiet_err


@pytest.mark.integration
def test_generate_all_counts_fixes(demo_dsn, tmp_path):
    argv = ["generate-migration", "--all", "--dsn", demo_dsn, "--timestamp", "20260101000000"]
    dry = [*argv, "--out-dir", str(tmp_path / "dry"), "--dry-run"]
    code, out, err = _run(dry, tty=True, tmp_path=tmp_path)
    assert code == 0, err[-400:]
    planned = _counts(err).get("planning: fixes")
    assert planned, err[-400:]
    total = max(t for _, t in planned)
    assert (total, total) in planned and total >= out.count("-- ===== ") // 2 > 0
    _, out2, err2 = _run(dry, tty=False, tmp_path=tmp_path)
    assert (out2, err2) == (out, "")
    # written: every fix's round trip on the scratch copy is counted
    code, out, err = _run([*argv, "--out-dir", str(tmp_path / "m")], tty=True, tmp_path=tmp_path)
    trips = _counts(err).get("round trips: fixes")
    files = len(list((tmp_path / "m").glob("*_rollback.sql"))) + len(
        list((tmp_path / "m" / "rejected").glob("*_rollback.sql"))
    )
    assert trips and {d for d, _ in trips} >= set(range(files + 1)) and (files, files) in trips, err[-400:]
    assert "probes: tables" not in _counts(err)  # the probe each round trip runs is muted
