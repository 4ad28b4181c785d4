"""Traces a rolled-back probe can still leave, measured rather than assumed away: sequences advanced by
``nextval()`` (a trigger, a policy function or a column default the probe did not set; nextval is never rolled
back), and session-level advisory locks that the probe's own session took through a trigger or function
(they outlive a rollback, so they are counted and released after each relation)."""
from __future__ import annotations

from typing import Any, Optional

import psycopg

from dbguard_pipeline.config import Config
from dbguard_pipeline.semantics import tenancy

_SEQUENCES = """
select n.nspname, c.relname, s.last_value::text, s.start_value::text, s.increment_by::text,
       (select tn.nspname || '.' || tc.relname || '.' || a.attname from pg_depend d
          join pg_class tc on tc.oid = d.refobjid join pg_namespace tn on tn.oid = tc.relnamespace
          join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
         where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.refclassid = 'pg_class'::regclass
           and d.deptype in ('a', 'i') limit 1)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
left join pg_sequences s on s.schemaname = n.nspname and s.sequencename = c.relname
where c.relkind = 'S'
"""

# "schema.seq" -> (last value, owning column, the value before the first: start - increment)
SequenceValues = dict[str, tuple[Optional[int], Optional[str], Optional[int]]]


def sequence_values(conn: psycopg.Connection[Any], config: Config) -> SequenceValues:
    """last_value of every sequence in the audited schemas (read without nextval; None: never used, or not
    readable by the connecting role)."""
    out: SequenceValues = {}
    for schema, name, last, start, step, owner in conn.execute(_SEQUENCES).fetchall():
        if tenancy.in_audited_schema(schema, config):
            origin = int(start) - int(step) if start is not None and step is not None else None
            out[f"{schema}.{name}"] = (int(last) if last is not None else None, owner, origin)
    return out


def moved_sequences(before: SequenceValues, after: SequenceValues) -> list[dict[str, Any]]:
    """The sequences that moved during the run: which, by how much, and why it could not be avoided."""
    moved = []
    for name, (last, owner, origin) in sorted(after.items()):
        was = before.get(name, (None, None, None))[0]
        if last == was or last is None:
            continue
        base = was if was is not None else origin
        by = abs(last - base) if base is not None else None
        why = ("nextval() is never rolled back; the probe gives explicit values to identity and serial columns of "
               "the rows it builds, so a trigger, a policy function or the default of a column it did not set "
               "called it")
        if owner:
            why += f" (the sequence belongs to {owner})"
        moved.append({"sequence": name, "before": was, "after": last, "by": by, "why": why})
    return moved


def advisory_locks_released(conn: psycopg.Connection[Any]) -> int:
    """Count the session-level advisory locks this session still holds (after a relation's transaction rolled
    back, only session-level ones remain) and release them."""
    row = conn.execute(
        "with n as materialized (select count(*) as c from pg_locks where locktype = 'advisory'"
        " and pid = pg_backend_pid()) select c, case when c > 0 then pg_advisory_unlock_all() end from n"
    ).fetchone()
    return int(row[0]) if row else 0
