"""dbguard backup / restore on the demo database: round trips, restoring changed rows, the manifest, hostile
names, listing and retention, the CLI's one-line errors. Faults (killed backends, full disk, tampering) are
in test_backup_faults.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbguard_pipeline import backup
from dbguard_pipeline.backup.manifest import DUMP, MANIFEST
from dbguard_pipeline.errors import DbguardError

from .conftest import SECRET, _as_user, run_sql

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers (also used by test_backup_faults)
def dbguard(*args: str, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DBGUARD_DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "dbguard_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        **kwargs,
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def contents(dsn: str) -> dict[str, tuple[int, str]]:
    """Every user table's exact rows (sorted text, so independent of dbguard's own checksum), and more: the
    foreign keys and triggers, so a restore that lost one shows up."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set timezone = 'UTC'; set datestyle = 'ISO, YMD'; set extra_float_digits = 1")
        tables = conn.execute("""select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                                 where c.relkind = 'r' and n.nspname in ('public', 'auth', 'odd;schema')""").fetchall()
        for schema, name in tables:
            out[f"{schema}.{name}"] = conn.execute(
                sql.SQL(
                    "select count(*), coalesce(md5(string_agg(t::text, E'\\n' order by t::text)), '') from only {} t"
                ).format(sql.Identifier(schema, name))
            ).fetchone()
        out["<constraints>"] = (
            0,
            str(
                conn.execute(
                    "select array_agg(conname || ':' || pg_get_constraintdef(oid) order by conname) from pg_constraint "
                    "where connamespace in (select oid from pg_namespace where nspname in ('public', 'auth'))"
                ).fetchone()[0]
            ),
        )
        out["<triggers>"] = (
            0,
            str(
                conn.execute(
                    "select array_agg(tgname || ':' || tgenabled::text order by tgname) from pg_trigger where not tgisinternal"
                ).fetchone()[0]
            ),
        )
    return out


def folders(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []


# --------------------------------------------------------------------------- round trips
def test_whole_database_round_trip_gives_identical_checksums(demo_dsn, tmp_path):
    before = contents(demo_dsn)
    b = backup.take(demo_dsn, None, out_dir=tmp_path, label="nightly")
    assert b.manifest.scope == "all" and len(b.manifest.tables) >= 17
    assert {"public.tenants", "public.vehicles", "auth.users"} <= {f"{t.schema}.{t.name}" for t in b.manifest.tables}
    scratch = backup.restore(b.path, demo_dsn, scratch=True)
    assert scratch.verified and scratch.ok and not scratch.committed, scratch.lines()
    in_place = backup.restore(b.path, demo_dsn, verify=True)
    assert in_place.ok and in_place.committed and in_place.rows_loaded == b.manifest.rows, in_place.lines()
    assert contents(demo_dsn) == before
    [listed] = backup.list_backups(tmp_path)
    assert listed.verified and listed.status == "verified"


def test_restore_brings_changed_rows_back_exactly_and_leaves_other_tables_alone(demo_dsn, tmp_path):
    # a trigger that would rewrite restored rows, one disabled and one ALWAYS trigger: none may fire, all come back
    run_sql(
        demo_dsn,
        """
        create function public.shout() returns trigger language plpgsql as $$
        begin new.model := upper(new.model) || '!'; return new; end $$;
        create trigger vehicles_shout before insert or update on public.vehicles for each row execute function public.shout();
        create trigger vehicles_off before insert on public.vehicles for each row execute function public.shout();
        alter table public.vehicles disable trigger vehicles_off;
        create trigger tenants_always before insert on public.tenants for each row execute function public.shout();
        alter table public.tenants enable always trigger tenants_always;
        alter table public.tenants drop constraint tenants_slug_key;
        alter table public.tenants add constraint tenants_slug_key unique (slug);
        alter table public.tenants alter column name drop not null;
        create or replace function public.shout() returns trigger language plpgsql as $$
        begin if tg_table_name = 'tenants' then new.name := new.name || '!'; else new.model := upper(new.model) || '!'; end if;
        return new; end $$;
    """,
    )
    tables = ["public.tenants", "public.vehicles", "vehicle_images"]
    before = contents(demo_dsn)
    b = backup.take(demo_dsn, tables, out_dir=tmp_path)
    assert [t.name for t in b.manifest.tables] == ["tenants", "vehicles", "vehicle_images"]
    run_sql(
        demo_dsn,
        """
        update public.vehicles set make = 'Changed', year = 2001 where year is not null;
        delete from public.vehicle_images where id not in (select image_id from public.event_photos);
        insert into public.tenants (id, name, slug) values (gen_random_uuid(), 'Intruder', 'intruder');
        update public.garages set name = 'kept: not in the backup';
    """,
    )
    changed = contents(demo_dsn)
    assert all(changed[t] != before[t] for t in ("public.tenants", "public.vehicles", "public.vehicle_images"))
    result = backup.restore(b.path, demo_dsn, verify=True)
    assert result.ok and result.committed, result.lines()
    after = contents(demo_dsn)
    for t in ("public.tenants", "public.vehicles", "public.vehicle_images", "<constraints>", "<triggers>"):
        assert after[t] == before[t], t
    assert after["public.garages"] == changed["public.garages"] != before["public.garages"]


def test_restore_refuses_to_orphan_rows_outside_the_backup(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.vehicles"], out_dir=tmp_path)
    run_sql(
        demo_dsn,
        """
        insert into public.vehicles (id, tenant_id, vin, make, model)
        select gen_random_uuid(), id, 'NEWVIN', 'New', 'Car' from public.tenants limit 1;
        insert into public.vehicle_events (id, tenant_id, vehicle_id, event_type, date)
        select gen_random_uuid(), tenant_id, id, 'inspection', current_date from public.vehicles where vin = 'NEWVIN';
    """,
    )
    before = contents(demo_dsn)
    with pytest.raises(DbguardError, match=r"vehicle_events would reference rows that do not exist .*nothing"):
        backup.restore(b.path, demo_dsn)
    assert contents(demo_dsn) == before


def test_restore_refuses_rows_whose_parent_is_gone(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.vehicles"], out_dir=tmp_path)
    run_sql(
        demo_dsn,
        """
        with g as (select garage_id from public.vehicles where garage_id is not null limit 1)
        update public.vehicles set garage_id = null where garage_id in (select garage_id from g);
        delete from public.garages where id not in (select garage_id from public.vehicles where garage_id is not null);
    """,
    )
    before = contents(demo_dsn)
    proc = dbguard("restore", str(b.path), "--dsn", demo_dsn, "--verify")
    one_line_error(proc, "rows of public.vehicles would reference rows that do not exist", "vehicles_garage_id_fkey")
    assert contents(demo_dsn) == before


def test_restore_refuses_when_columns_changed(demo_dsn, tmp_path):
    b = backup.take(demo_dsn, ["public.garages"], out_dir=tmp_path)
    run_sql(
        demo_dsn, "alter table public.garages add column phone text; alter table public.garages drop column address"
    )
    before = contents(demo_dsn)
    proc = dbguard("restore", str(b.path), "--dsn", demo_dsn, "--verify")
    one_line_error(proc, "public.garages", "columns", "removed address", "added phone")
    assert contents(demo_dsn) == before


def test_types_identity_and_generated_columns_and_session_settings(demo_dsn, tmp_path):
    run_sql(
        demo_dsn,
        """
        create table public.kinds (id bigint generated always as identity primary key,
            at timestamptz, d date, i interval, f float8, n numeric, b bytea, a text[], j jsonb, m money,
            doubled numeric generated always as (n * 2) stored);
        insert into public.kinds (at, d, i, f, n, b, a, j, m)
        select now() - g * interval '1 day 3 hours', current_date - g, g * interval '90 minutes', g / 7.0, g / 3.0,
               decode(md5(g::text), 'hex'), array['x', null, g::text], jsonb_build_object('g', g), g * 1.5
        from generate_series(1, 200) g;
    """,
    )
    b = backup.take(demo_dsn, ["public.kinds"], out_dir=tmp_path)
    before = contents(demo_dsn)
    dbname = psycopg.conninfo.conninfo_to_dict(demo_dsn)["dbname"]
    run_sql(
        demo_dsn,
        sql.SQL(
            "alter database {} set timezone = 'Asia/Tokyo';"
            "alter database {} set datestyle = 'SQL, DMY'; alter database {} set extra_float_digits = -3;"
        )
        .format(*[sql.Identifier(dbname)] * 3)
        .as_string(None),
    )
    run_sql(demo_dsn, "delete from public.kinds where id > 100; insert into public.kinds (n) values (1)")
    result = backup.restore(b.path, demo_dsn, verify=True)
    assert result.ok and result.committed, result.lines()
    assert contents(demo_dsn) == before
    with psycopg.connect(demo_dsn) as conn:  # the identity sequence came back too
        assert conn.execute("insert into public.kinds (n) values (0) returning id").fetchone()[0] == 201


# --------------------------------------------------------------------------- the manifest, the CLI, secrets
def test_cli_backup_list_restore_and_the_password_never_shows(server_dsn, demo_dsn, password_role, tmp_path):
    dbname = psycopg.conninfo.conninfo_to_dict(demo_dsn)["dbname"]
    run_sql(
        demo_dsn,
        f"""
        create table public.pw_owned (id int primary key, note text, at timestamptz default now(), amount float8);
        insert into public.pw_owned select g, 'row ' || g, now() - g * interval '1 hour', g / 3.0 from generate_series(1, 500) g;
        alter table public.pw_owned owner to {password_role};
    """,
    )
    dsn = _as_user(server_dsn, password_role, SECRET, dbname)
    out = tmp_path / "backups"
    took = dbguard(
        "backup", "--dsn", dsn, "--out-dir", str(out), "--table", "pw_owned", "--label", "pw", "-v", "--format", "json"
    )
    assert took.returncode == 0, took.stderr
    info = json.loads(took.stdout)
    folder = Path(info["path"])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["database"] == dbname and manifest["server_version"] and manifest["dbguard_version"]
    assert manifest["created_at"].endswith("Z") and folder.name.endswith(f"_{dbname}_pw")
    [table] = manifest["tables"]
    assert (table["schema"], table["name"], table["rows"], len(table["checksum"])) == ("public", "pw_owned", 500, 32)
    assert table["columns"][0] == ["id", "integer"]
    dump = folder / DUMP
    assert manifest["dump"]["bytes"] == dump.stat().st_size
    assert manifest["dump"]["sha256"] == backup.manifest.sha256_file(dump)

    run_sql(demo_dsn, "delete from public.pw_owned where id > 250; update public.pw_owned set note = 'x'")
    restored = dbguard("restore", str(folder), "--dsn", dsn, "--verify", "-v")
    assert restored.returncode == 0, restored.stderr
    assert "verified: row counts and checksums identical" in restored.stdout
    scratch = dbguard("restore", str(folder), "--dsn", dsn, "--into-scratch")  # no CREATEDB: a one-line refusal
    one_line_error(scratch, "CREATEDB")
    listed = dbguard("backup", "list", "--out-dir", str(out))
    assert listed.returncode == 0 and folder.name in listed.stdout and "500 rows" in listed.stdout
    assert "verified" in listed.stdout
    every_file = "".join(p.read_text(errors="replace") for p in out.rglob("*.json"))
    for proc in (took, restored, scratch, listed):
        assert SECRET not in proc.stdout + proc.stderr
    assert SECRET not in every_file and "password" not in every_file.lower()


def test_hostile_identifiers_round_trip(demo_dsn, tmp_path):
    run_sql(
        demo_dsn,
        """
        create schema "odd;schema";
        create table "odd;schema"."a""b; drop table x" (id serial primary key, "we""ird col" text, v jsonb);
        insert into "odd;schema"."a""b; drop table x" ("we""ird col", v)
            select E'line\\nbreak\\ttab ' || g, jsonb_build_object('g', g) from generate_series(1, 50) g;
        create table "odd;schema"."t*" (id int);
        create table "odd;schema"."tx" (id int);
        create table "odd;schema"."new
line" (id int);
        insert into "odd;schema"."t*" values (1); insert into "odd;schema"."tx" values (2), (3);
        insert into "odd;schema"."new
line" values (4);
    """,
    )
    before = contents(demo_dsn)
    proc = dbguard(
        "backup",
        "--dsn",
        demo_dsn,
        "--out-dir",
        str(tmp_path),
        "--format",
        "json",
        "--table",
        '"odd;schema"."a""b; drop table x"',
        "--table",
        '"odd;schema"."t*"',
        "--table",
        '"odd;schema"."new\nline"',
        "--label",
        "../../etc",
    )
    assert proc.returncode == 0, proc.stderr
    folder = Path(json.loads(proc.stdout)["path"])
    assert folder.parent == tmp_path and "/" not in folder.name[len("20250101T000000Z_") :]
    names = [t["name"] for t in json.loads((folder / MANIFEST).read_text())["tables"]]
    assert names == ['a"b; drop table x', "t*", "new\nline"]  # "t*" is not a pattern: tx is not in it
    run_sql(
        demo_dsn,
        """truncate "odd;schema"."a""b; drop table x"; insert into "odd;schema"."t*" values (9);
                         delete from "odd;schema"."new
line"; insert into "odd;schema".tx values (7)""",
    )
    restored = dbguard("restore", str(folder), "--dsn", demo_dsn, "--verify")
    assert restored.returncode == 0, restored.stderr
    assert "\\x0a" in restored.stdout or "checksums identical" in restored.stdout
    after = contents(demo_dsn)
    for key in ('odd;schema.a"b; drop table x', "odd;schema.t*", "odd;schema.new\nline"):
        assert after[key] == before[key], key
    assert after["odd;schema.tx"] != before["odd;schema.tx"]  # not in the backup: untouched
    listed = dbguard("backup", "list", "--out-dir", str(tmp_path))
    assert listed.returncode == 0 and "new\nline" not in listed.stdout and "new\\x0aline" in listed.stdout


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--table", "public.nope"], ["public.nope does not exist"]),
        (["--table", "a.b.c.d"], ["a.b.c.d"]),
        (["--table", "public.tenants", "--all"], ["not both"]),
        ([], ["--table", "--all"]),
        (["--table", "pg_catalog.pg_class"], ["system table"]),
        (["--table", "public.vehicle_overview"], ["is a view"]),
        (["--keep", "0", "--all"], ["--keep"]),
    ],
)
def test_backup_bad_input_is_one_line(demo_dsn, tmp_path, args, needles):
    one_line_error(dbguard("backup", "--dsn", demo_dsn, "--out-dir", str(tmp_path), *args), *needles)
    assert folders(tmp_path) == []


def test_list_and_restore_bad_input_is_one_line(demo_dsn, tmp_path):
    one_line_error(dbguard("backup", "list", "--out-dir", str(tmp_path / "missing")), "does not exist")
    one_line_error(dbguard("backup", "list", "--out-dir", str(tmp_path), "--table", "t"), "--table")
    one_line_error(dbguard("backup", "prune", "--out-dir", str(tmp_path)), "--keep")
    one_line_error(dbguard("restore", str(tmp_path / "nope"), "--dsn", demo_dsn), "no such backup")
    (tmp_path / "junk").mkdir()
    one_line_error(dbguard("restore", str(tmp_path / "junk"), "--dsn", demo_dsn), "not a backup")
    (tmp_path / "junk" / MANIFEST).write_text("{not json")
    one_line_error(dbguard("restore", str(tmp_path / "junk"), "--dsn", demo_dsn), "not valid JSON")
    proc = dbguard("backup", "--help")
    assert proc.returncode == 0 and "--out-dir" in proc.stdout and "--keep" in proc.stdout


# --------------------------------------------------------------------------- listing and retention
def test_list_newest_first_and_prune_keeps_the_newest_verified(demo_dsn, tmp_path):
    taken = [backup.take(demo_dsn, ["public.tenants"], out_dir=tmp_path, label=f"n{i}") for i in range(4)]
    assert len({b.path for b in taken}) == 4  # same second: distinct names
    assert backup.restore(taken[0].path, demo_dsn, scratch=True).ok  # the oldest is the only verified one
    (tmp_path / ".partial-20990101T000000Z_x-1234").mkdir()  # a backup being written: never listed
    (tmp_path / "not-a-backup").mkdir()
    listed = backup.list_backups(tmp_path)
    assert [b.path for b in listed[:4]] == [b.path for b in reversed(taken)] or sorted(
        b.path.name for b in listed[:4]
    ) == sorted(b.path.name for b in taken)
    assert listed[-1].path.name == "not-a-backup" and listed[-1].status.startswith("INVALID")
    proc = dbguard("backup", "list", "--out-dir", str(tmp_path), "--format", "json")
    data = json.loads(proc.stdout)
    assert [d["verified"] for d in data].count(True) == 1 and all("password" not in json.dumps(d) for d in data)

    newest = listed[0].path
    would = backup.prune(tmp_path, keep=1, dry_run=True)
    assert len(would) == 2 and newest not in would and taken[0].path not in would
    assert all(p.exists() for p in would)
    proc = dbguard("backup", "prune", "--out-dir", str(tmp_path), "--keep", "1")
    assert proc.returncode == 0 and "deleted 2 backups" in proc.stdout, proc.stderr
    left = {p.name for p in tmp_path.iterdir()}
    assert {newest.name, taken[0].path.name, "not-a-backup"} <= left and len(left) == 4  # + the young partial


def test_keep_days_and_keep_on_take(demo_dsn, tmp_path):
    first = backup.take(demo_dsn, ["public.tenants"], out_dir=tmp_path)
    later = first.manifest.created + timedelta(days=10)
    assert backup.prune(tmp_path, keep_days=30, now=later) == []
    assert backup.prune(tmp_path, keep_days=5, now=later, dry_run=True) == [first.path]
    proc = dbguard("backup", "--dsn", demo_dsn, "--out-dir", str(tmp_path), "--table", "tenants", "--keep", "1")
    assert proc.returncode == 0 and "pruned 1 older backup" in proc.stdout, proc.stderr
    assert len(backup.list_backups(tmp_path)) == 1 and not first.path.exists()


def test_backup_verify_flag_marks_the_backup(demo_dsn, tmp_path):
    proc = dbguard("backup", "--dsn", demo_dsn, "--out-dir", str(tmp_path), "--table", "public.vehicles", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "scratch copy of the database" in proc.stdout and "checksums identical" in proc.stdout
    [b] = backup.list_backups(tmp_path)
    assert b.verified
