"""The snapshot file's `format_version`, and the one definition of "same schema" (model/equality.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dbguard_pipeline.cli import main
from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.equality import comparable, same_schema
from dbguard_pipeline.model.schema import Column, Function, Policy, Snapshot, Table
from dbguard_pipeline.model.snapshot_json import FORMAT_VERSION, check_snapshot_json, dump_snapshot, load_snapshot

SNAP = Snapshot(
    database="app",
    server_version="16.2",
    server_version_num=160002,
    current_user="auditor",
    taken_at="2026-01-01T00:00:00+00:00",
    schemas=("public", "dbguard"),
    tables=(
        Table(
            "public",
            "t",
            "table",
            "app",
            True,
            False,
            10,
            columns=(Column("id", "integer", True, position=1), Column("tenant_id", "uuid", True, position=2)),
            policies=(Policy("p", True, "all", ("authenticated",), "tenant_id = x"),),
        ),
        Table("dbguard", "ledger", "table", "app", False, False, 3),
    ),
)


def test_dump_writes_format_version_first_and_the_dataclass_does_not_carry_it():
    text = dump_snapshot(SNAP)
    data = json.loads(text)
    assert FORMAT_VERSION == 1 and next(iter(data)) == "format_version" and data["format_version"] == 1
    assert load_snapshot(text) == SNAP and dump_snapshot(load_snapshot(text)) == text
    assert not hasattr(SNAP, "format_version")


def test_a_file_without_format_version_is_version_1():
    data = json.loads(dump_snapshot(SNAP))
    del data["format_version"]
    assert check_snapshot_json(data) is None
    assert load_snapshot(json.dumps(data)) == SNAP


def test_a_function_written_before_executors_were_read_loads_with_none():
    fn = Function("public", "f", "", "integer", "sql", True, "stable", owner="app", body="select 1")
    data = json.loads(dump_snapshot(replace(SNAP, functions=(fn,))))
    (written,) = data["functions"]
    assert written["executors"] == [] and written["returns_rows"] is False
    del written["executors"], written["returns_rows"]  # as an older dbguard wrote it
    assert check_snapshot_json(data) is None
    (loaded,) = load_snapshot(json.dumps(data)).functions
    assert loaded == fn and loaded.executors == () and not loaded.returns_rows


def test_a_newer_or_malformed_format_version_is_refused_in_one_line(tmp_path, capsys):
    data = json.loads(dump_snapshot(SNAP))
    newer = dict(data, format_version=2)
    message = "snapshot format 2 is newer than this dbguard understands (1)"
    assert check_snapshot_json(newer) == message
    with pytest.raises(DbguardError, match=r"^snapshot format 2 is newer than this dbguard understands \(1\)$"):
        load_snapshot(json.dumps(newer))
    assert check_snapshot_json(dict(data, format_version="1")) == "format_version should be a whole number from 1"
    assert check_snapshot_json(dict(data, format_version=True)) == "format_version should be a whole number from 1"

    (tmp_path / "new.json").write_text(json.dumps(newer), encoding="utf-8")
    (tmp_path / "old.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == [f"dbguard diff: error: target {tmp_path / 'new.json'}: {message}"]
    assert main(["diff", str(tmp_path / "old.json"), str(tmp_path / "old.json")]) == 0


def test_same_schema_ignores_what_is_not_schema():
    other = replace(
        SNAP,
        database="copy",
        taken_at="2027-01-01T00:00:00+00:00",
        current_user="other",
        tables=tuple(
            replace(
                t,
                row_estimate=t.row_estimate + 99,
                columns=tuple(replace(c, position=c.position + 5) for c in t.columns),
            )
            for t in SNAP.tables
        ),
    )
    assert other != SNAP and same_schema(SNAP, other) and comparable(other) == comparable(SNAP)
    changed = replace(SNAP, tables=(replace(SNAP.tables[0], rls_forced=True), SNAP.tables[1]))
    assert not same_schema(SNAP, changed)
    ledger = replace(SNAP, tables=(SNAP.tables[0], replace(SNAP.tables[1], comment="bookkeeping")))
    assert not same_schema(SNAP, ledger) and same_schema(SNAP, ledger, exclude_schemas=("dbguard",))
