"""Introspection: one Snapshot of a database from a fixed number of set-based catalog queries.

Ten statements whatever the number of tables (no query per table), inside READ ONLY transactions with
statement and lock timeouts, pipelined, and split over two connections that read one exported snapshot. Column numbers of keys are mapped to names in Python from
the columns query instead of a subquery per constraint or index. Works on PostgreSQL 13 to 17.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Optional

from dbguard_pipeline.errors import NotFoundError
from dbguard_pipeline.model.schema import (
    Column,
    Constraint,
    Function,
    Grant,
    Index,
    Membership,
    Policy,
    Role,
    Snapshot,
    Table,
    View,
)

if TYPE_CHECKING:
    import psycopg

SYSTEM_SCHEMA_FILTER = (
    "n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    " and n.nspname not like 'pg\\_temp\\_%%' and n.nspname not like 'pg\\_toast\\_temp\\_%%'"
)
SCHEMA_FILTER = f"{SYSTEM_SCHEMA_FILTER} and (%(schemas)s::text[] is null or n.nspname = any(%(schemas)s::text[]))"

Q_META = f"""
select current_database() as database, current_setting('server_version') as server_version,
       current_setting('server_version_num')::int as server_version_num, current_user as current_user,
       array(select n.nspname::text from pg_namespace n where {SCHEMA_FILTER} order by 1) as schemas
"""

Q_TABLES = f"""
select c.oid, n.nspname::text as schema, c.relname::text as name,
       case when c.relkind = 'p' then 'partitioned' when c.relispartition then 'partition' else 'table' end as kind,
       pg_get_userbyid(c.relowner)::text as owner, c.relrowsecurity as rls_enabled,
       c.relforcerowsecurity as rls_forced, c.reltuples::bigint as row_estimate,
       (select pn.nspname || '.' || pc.relname from pg_inherits i join pg_class pc on pc.oid = i.inhparent
          join pg_namespace pn on pn.oid = pc.relnamespace where i.inhrelid = c.oid limit 1) as parent,
       d.description as comment
from pg_class c join pg_namespace n on n.oid = c.relnamespace
left join pg_description d on d.objoid = c.oid and d.classoid = 'pg_class'::regclass and d.objsubid = 0
where c.relkind in ('r', 'p') and {SCHEMA_FILTER}
order by n.nspname, c.relname
"""

Q_COLUMNS = f"""
select a.attrelid as oid, a.attname::text as name, format_type(a.atttypid, a.atttypmod) as type,
       a.attnotnull as not_null,
       case when a.attgenerated = '' then pg_get_expr(d.adbin, d.adrelid) end as "default",
       case a.attidentity when 'a' then 'always' when 'd' then 'by default' end as identity,
       case when a.attgenerated <> '' then pg_get_expr(d.adbin, d.adrelid) end as generated,
       a.attnum as position
from pg_attribute a
join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped and {SCHEMA_FILTER}
order by a.attrelid, a.attnum
"""

Q_CONSTRAINTS = f"""
select con.conrelid as oid, con.conname::text as name, con.contype::text as contype, con.conkey::int2[] as conkey,
       pg_get_constraintdef(con.oid) as definition, con.convalidated as validated,
       con.confrelid as ref_oid, rn.nspname::text as ref_schema, rc.relname::text as ref_table,
       con.confkey::int2[] as confkey,
       -- with a schema filter the referenced table's columns may not be in the result: name them here
       case when con.contype = 'f' and %(schemas)s::text[] is not null then
         array(select a.attname::text from unnest(con.confkey) with ordinality k(attnum, ord)
               join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum order by k.ord) end
         as ref_columns,
       con.confdeltype::text as deltype, con.confupdtype::text as updtype
from pg_constraint con
join pg_class c on c.oid = con.conrelid join pg_namespace n on n.oid = c.relnamespace
left join pg_class rc on rc.oid = con.confrelid left join pg_namespace rn on rn.oid = rc.relnamespace
where c.relkind in ('r', 'p') and con.contype in ('p', 'u', 'c', 'f', 'x') and con.conparentid = 0
  and {SCHEMA_FILTER}
order by con.conrelid, con.conname
"""

Q_INDEXES = f"""
select i.indrelid as oid, ic.relname::text as name, i.indkey::int2[] as indkey, i.indnkeyatts as nkeyatts,
       pg_get_indexdef(i.indexrelid) as definition, i.indisunique as unique, i.indisprimary as primary,
       pg_get_expr(i.indpred, i.indrelid) as predicate, i.indisvalid as valid,
       pg_get_expr(i.indexprs, i.indrelid) as expressions
from pg_index i
join pg_class ic on ic.oid = i.indexrelid
join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and {SCHEMA_FILTER}
order by i.indrelid, ic.relname
"""

Q_POLICIES = f"""
select p.polrelid as oid, p.polname::text as name, p.polpermissive as permissive, p.polcmd::text as cmd,
       case when p.polroles = '{{0}}'::oid[] then array['public']
            else array(select r.rolname::text from pg_roles r where r.oid = any(p.polroles) order by 1) end as roles,
       pg_get_expr(p.polqual, p.polrelid) as using, pg_get_expr(p.polwithcheck, p.polrelid) as with_check
from pg_policy p
join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
where {SCHEMA_FILTER}
order by p.polrelid, p.polname
"""

Q_GRANTS = f"""
select c.oid, case when x.grantee = 0 then 'public' else pg_get_userbyid(x.grantee)::text end as grantee,
       x.privilege_type::text as privilege
from pg_class c join pg_namespace n on n.oid = c.relnamespace
cross join lateral aclexplode(c.relacl) x
where c.relkind in ('r', 'p', 'v', 'm') and x.grantee <> c.relowner and {SCHEMA_FILTER}
order by c.oid, 2, 3
"""

Q_VIEWS = f"""
select c.oid, n.nspname::text as schema, c.relname::text as name, pg_get_userbyid(c.relowner)::text as owner,
       c.relkind = 'm' as materialized,
       coalesce((select lower(split_part(o, '=', 2)) in ('true', 'on', '1', 'yes')
                 from unnest(c.reloptions) o where lower(split_part(o, '=', 1)) = 'security_invoker'), false)
         as security_invoker,
       coalesce((select lower(split_part(o, '=', 2)) in ('true', 'on', '1', 'yes')
                 from unnest(c.reloptions) o where lower(split_part(o, '=', 1)) = 'security_barrier'), false)
         as security_barrier,
       pg_get_viewdef(c.oid) as definition,
       array(select distinct dn.nspname || '.' || dc.relname from pg_rewrite rw
             join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = rw.oid
             join pg_class dc on dc.oid = d.refobjid and dc.oid <> c.oid and dc.relkind in ('r', 'p', 'v', 'm', 'f')
             join pg_namespace dn on dn.oid = dc.relnamespace
             where rw.ev_class = c.oid order by 1) as depends_on
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('v', 'm') and {SCHEMA_FILTER}
order by n.nspname, c.relname
"""

Q_FUNCTIONS = f"""
select n.nspname::text as schema, p.proname::text as name,
       pg_get_function_identity_arguments(p.oid) as arguments,
       coalesce(pg_get_function_result(p.oid), '') as returns, l.lanname::text as language,
       p.prosecdef as security_definer,
       case p.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end as volatility,
       coalesce(p.proconfig, '{{}}'::text[]) as config, pg_get_userbyid(p.proowner)::text as owner,
       case when l.lanname in ('sql', 'plpgsql') then p.prosrc end as body,
       array(select distinct case when x.grantee = 0 then 'public' else pg_get_userbyid(x.grantee)::text end
             from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
             where x.privilege_type = 'EXECUTE' order by 1) as executors,
       p.prokind = 'f' and (p.proretset or t.typtype = 'c' or p.prorettype = 'pg_catalog.record'::pg_catalog.regtype)
         as returns_rows
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
join pg_type t on t.oid = p.prorettype
where p.prokind in ('f', 'p') and {SCHEMA_FILTER}
  and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                  and d.deptype = 'e')
order by n.nspname, p.proname, 3
"""

# memberships: the direct grants of roles to each role (pg_auth_members) in the same statement; whether the
# member inherits: the grant's inherit_option on PostgreSQL 16+, the member's rolinherit before (read through
# to_jsonb so that one text serves every version).
Q_ROLES = """
select r.rolname::text as name, r.rolsuper as superuser, r.rolbypassrls as bypassrls, r.rolcanlogin as can_login,
       coalesce((select jsonb_agg(jsonb_build_object(
                   'role', g.rolname::text,
                   'inherit', coalesce((to_jsonb(m) ->> 'inherit_option')::boolean, r.rolinherit))
                 order by g.rolname)
                 from pg_auth_members m join pg_roles g on g.oid = m.roleid
                 where m.member = r.oid and g.rolname !~ '^pg_'), '[]'::jsonb) as memberships
from pg_roles r where r.rolname !~ '^pg_' order by r.rolname
"""

QUERIES = (Q_META, Q_TABLES, Q_COLUMNS, Q_CONSTRAINTS, Q_INDEXES, Q_POLICIES, Q_GRANTS, Q_VIEWS, Q_FUNCTIONS, Q_ROLES)

_CONTYPE = {"p": "primary_key", "u": "unique", "c": "check", "f": "foreign_key", "x": "exclusion"}
_FKACTION = {"a": "no action", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}
_POLCMD = {"*": "all", "r": "select", "a": "insert", "w": "update", "d": "delete"}


def _params_for(query: str, schemas: Optional[Sequence[str]]) -> Optional[dict]:
    return None if query is Q_ROLES else {"schemas": list(schemas) if schemas else None}


def introspect_connection(conn: psycopg.Connection, schemas: Optional[Sequence[str]] = None) -> Snapshot:
    """Snapshot through an open connection already inside a (read-only) transaction."""
    assembler = _Assembler()
    _run_queries(conn, QUERIES, schemas, assembler.add)
    return assembler.snapshot()


def _run_queries(
    conn: psycopg.Connection,
    queries: Sequence[str],
    schemas: Optional[Sequence[str]],
    consume: Optional[Callable[[str, list[Any]], None]] = None,
) -> dict[str, list[Any]]:
    """Each query's rows (named tuples: a third of a dict's memory, read by name in C), or, with ``consume``,
    each query's rows handed to it as soon as they arrive and not kept."""
    from psycopg.rows import namedtuple_row

    # Pipeline mode: the statements go out at once (one round trip instead of one per query).
    with conn.pipeline():
        cursors = []
        for q in queries:
            cur = conn.cursor(row_factory=namedtuple_row)
            cur.execute(q, _params_for(q, schemas))
            cursors.append((q, cur))
        rows = {}
        for q, cur in cursors:
            fetched = cur.fetchall()
            cur.close()
            if consume is None:
                rows[q] = fetched
            else:
                consume(q, fetched)
            del fetched
    return rows


class _NoSecondConnection(Exception):
    """The snapshot could not be exported: introspect on one connection instead."""


# The second connection's share: about half of the server's work (deparsing indexes and policies).
_SECOND_HALF = (Q_INDEXES, Q_POLICIES, Q_VIEWS, Q_FUNCTIONS)


def _introspect_two_connections(
    dsn: str, schemas: Optional[Sequence[str]], statement_timeout_ms: int, lock_timeout_ms: int
) -> Snapshot:
    """The same ten queries over two connections that read one exported snapshot (as ``pg_dump -j`` does), so
    the server deparses on two cores at once: about a quarter less wall time on 1,000 tables. When a second
    connection or a shared snapshot cannot be had (connection limit, a pooler, a standby), one connection does
    all ten."""
    import threading

    import psycopg

    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.pg.session import connect, read_only_session

    with read_only_session(
        dsn, snapshot="export", statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms
    ) as first:
        snapshot_id: Optional[str] = None
        try:
            # not in a savepoint: PostgreSQL exports snapshots from top-level transactions only
            row = first.execute("select pg_export_snapshot()").fetchone()
            snapshot_id = row[0] if row else None
        except psycopg.errors.FeatureNotSupported:  # e.g. during recovery on an old standby
            pass
        if snapshot_id is None:
            second = None
        else:
            try:
                second = connect(dsn)
            except DbguardError:  # connection limit, pooler
                second = None
        if second is None:
            if snapshot_id is None:
                first.rollback()
                raise _NoSecondConnection
            return introspect_connection(first, schemas)
        second_rows: dict[str, list[Any]] = {}
        errors: list[BaseException] = []

        def run_second() -> None:
            try:
                with read_only_session(
                    second,
                    snapshot=snapshot_id,
                    statement_timeout_ms=statement_timeout_ms,
                    lock_timeout_ms=lock_timeout_ms,
                ) as conn:
                    second_rows.update(_run_queries(conn, _SECOND_HALF, schemas))
            except BaseException as exc:  # noqa: BLE001  (re-raised in the calling thread)
                errors.append(exc)

        worker = threading.Thread(target=run_second, name="dbguard-introspect", daemon=True)
        worker.start()
        assembler = _Assembler()
        try:  # this connection's rows become objects while the second connection's queries still run
            _run_queries(first, [q for q in QUERIES if q not in _SECOND_HALF], schemas, assembler.add)
        finally:
            worker.join()
            second.close()
        if errors:
            raise errors[0]
        for q in _SECOND_HALF:  # after the columns: index keys are named from them
            assembler.add(q, second_rows.pop(q))
    return assembler.snapshot()


# ---------------------------------------------------------------------------------------------- libpq path
_SNAPSHOT_ID = re.compile(r"^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+$")


# The column names of each query, in order (the libpq path fetches rows as JSON arrays: a third of the memory of
# JSON objects at 8,000 tables); dbguard_tests/test_catalog_libpq.py checks them against the server's own names.
FIELDS: dict[str, tuple[str, ...]] = {
    Q_META: ("database", "server_version", "server_version_num", "current_user", "schemas"),
    Q_TABLES: (
        "oid", "schema", "name", "kind", "owner", "rls_enabled", "rls_forced", "row_estimate", "parent", "comment",
    ),
    Q_COLUMNS: ("oid", "name", "type", "not_null", "default", "identity", "generated", "position"),
    Q_CONSTRAINTS: (
        "oid", "name", "contype", "conkey", "definition", "validated", "ref_oid", "ref_schema", "ref_table",
        "confkey", "ref_columns", "deltype", "updtype",
    ),
    Q_INDEXES: (
        "oid", "name", "indkey", "nkeyatts", "definition", "unique", "primary", "predicate", "valid", "expressions",
    ),
    Q_POLICIES: ("oid", "name", "permissive", "cmd", "roles", "using", "with_check"),
    Q_GRANTS: ("oid", "grantee", "privilege"),
    Q_VIEWS: (
        "oid", "schema", "name", "owner", "materialized", "security_invoker", "security_barrier", "definition",
        "depends_on",
    ),
    Q_FUNCTIONS: (
        "schema", "name", "arguments", "returns", "language", "security_definer", "volatility", "config", "owner",
        "body", "executors", "returns_rows",
    ),
    Q_ROLES: ("name", "superuser", "bypassrls", "can_login", "memberships"),
}  # fmt: skip
_ROW_TYPES: dict[str, Callable[[Iterable[Any]], Any]] = {
    q: namedtuple("Row", names)._make  # type: ignore[attr-defined]  # noqa: PYI024
    for q, names in FIELDS.items()
}


def _as_json(query: str) -> str:
    """The query's rows as one JSON array of arrays (one value to fetch and one C-speed decode instead of a
    driver's row and type machinery); psycopg's ``%(schemas)s`` becomes ``$1`` (and ``%%`` ``%``)."""
    values = ", ".join(f't."{name}"' for name in FIELDS[query])
    if "%(schemas)s" in query:
        query = query.replace("%(schemas)s", "$1").replace("%%", "%")
    return f"select coalesce(json_agg(json_build_array({values})), '[]'::json) from (\n{query}\n) t"


def _as_rows(query: str, items: list[list]) -> list[Any]:
    """The decoded arrays as the query's named tuples (what the psycopg path's ``namedtuple_row`` gives), in
    place: each array is released as its tuple is made."""
    make = _ROW_TYPES[query]
    for k, item in enumerate(items):
        items[k] = make(item)
    return items


_BEGIN = "begin isolation level repeatable read read only"  # as read_only_session(snapshot=...) begins

# A second connection pays for itself from about this many tables (the server deparses on two cores, each
# connection building its own relation cache); below, one connection is faster. Measured with the whole CLI on
# ../shared/bench's databases, quiet 2-core machine, medians: 250 tables one 173 ms / two 188 ms, 1,000 tables
# 396 / 386 ms, 8,000 tables 2,758 / 2,523 ms (bench/results.md).
_SECOND_CONNECTION_FROM = 600
_TABLE_COUNT = (
    "select count(*) from pg_class where relkind in ('r', 'p')"
    " and relnamespace not in ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)"
)


def _session_sql(statement_timeout_ms: int, lock_timeout_ms: int) -> str:
    """The settings of :func:`~dbguard_pipeline.pg.readonly.session_settings` as one statement (the libpq path
    sends no parameters with it: the values are dbguard's own, integers and names)."""
    from dbguard_pipeline.pg.readonly import session_settings

    pairs = session_settings(statement_timeout_ms, lock_timeout_ms)
    assert not any("'" in v or "\\" in v for pair in pairs for v in pair)
    return "select " + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in pairs)


def _introspect_libpq(
    lib: Any,
    dsn: str,
    schemas: Optional[Sequence[str]],
    statement_timeout_ms: int,
    lock_timeout_ms: int,
    on_counts: Optional[Callable[[int, int], None]] = None,
) -> Snapshot:
    """The same queries in the same read-only transactions as the psycopg path (two connections sharing one
    exported snapshot, else one), through :mod:`dbguard_pipeline.pg.libpq`: no psycopg import. Each connection
    runs in a thread and hands its results over as they arrive; Ctrl-C cancels the queries. ``on_counts``
    hears the numbers of tables and policies of the database as soon as the first round trip brings them."""
    import queue
    import threading

    from dbguard_pipeline.errors import DbguardError
    from dbguard_pipeline.pg.failures import connect_failure, explain, session_failure
    from dbguard_pipeline.pg.libpq import Connection, LibpqError, text_array

    setup = _session_sql(statement_timeout_ms, lock_timeout_ms)
    schemas_param = text_array(list(schemas) if schemas else None)

    def failure(exc: LibpqError) -> DbguardError:
        mapped = session_failure(
            exc.sqlstate,
            str(exc),
            dsn,
            statement_timeout_ms=statement_timeout_ms,
            lock_timeout_ms=lock_timeout_ms,
            lost=exc.connection,
        )
        return mapped or DbguardError(f"catalog query failed: {explain(str(exc), dsn)}")

    try:
        first = Connection(lib, dsn)
    except LibpqError as exc:
        raise connect_failure(str(exc), dsn) from None
    connections = [first]
    threads: dict[Connection, threading.Thread] = {}
    try:
        snapshot_id, tables = None, 0
        try:
            snapshot_id, count, policies = first.execute(
                f"{_BEGIN}; {setup}; select pg_export_snapshot(), ({_TABLE_COUNT}), (select count(*) from pg_policy)"
            )
            tables = int(count or 0)
            if on_counts is not None:
                on_counts(tables, int(policies or 0))
        except LibpqError as exc:
            if exc.sqlstate != "0A000":  # pg_export_snapshot() not supported (a standby during recovery)
                raise failure(exc) from None
            first.execute(f"rollback; begin read only; {setup}")
        if snapshot_id and _SNAPSHOT_ID.match(snapshot_id) and tables >= _SECOND_CONNECTION_FROM:
            try:
                second = Connection(lib, dsn)
            except LibpqError:  # connection limit, pooler: one connection does it all
                second = None
            if second is not None:
                connections.append(second)
                try:
                    second.execute(f"{_BEGIN}; set transaction snapshot '{snapshot_id}'; {setup}")
                except LibpqError:
                    connections.pop().close()
        shares = (
            [(first, [q for q in QUERIES if q not in _SECOND_HALF]), (connections[1], list(_SECOND_HALF))]
            if len(connections) == 2
            else [(first, list(QUERIES))]
        )
        results: queue.SimpleQueue = queue.SimpleQueue()

        def work(conn: Connection, queries: list[str]) -> None:
            try:
                texts = [_as_json(q) for q in queries]
                params = [None if q is Q_ROLES else [schemas_param] for q in queries]
                for q, value in zip(queries, conn.first_values(texts, params), strict=False):
                    results.put((q, value))
            except BaseException as exc:  # noqa: BLE001  (handed to the calling thread)
                results.put((None, exc))
            else:
                results.put((None, None))

        for conn, queries in shares:
            thread = threading.Thread(target=work, args=(conn, queries), name="dbguard-introspect", daemon=True)
            thread.start()
            threads[conn] = thread
        assembler = _Assembler()
        later: dict[str, list[Any]] = {}
        running = len(shares)
        try:
            while running:
                q, items = results.get()
                if q is None:
                    running -= 1
                    if isinstance(items, LibpqError):
                        raise failure(items) from None
                    if items is not None:
                        raise items
                    continue
                # decoded here, not in the connection's thread: the objects the snapshot keeps are made by the
                # thread that keeps them (one malloc arena: 10 MiB less at 8,000 tables)
                rows = _as_rows(q, json.loads(items or b"[]"))
                del items
                if q in _SECOND_HALF and len(shares) == 2:
                    later[q] = rows
                else:  # the first connection's rows become objects while the second's queries still run
                    assembler.add(q, rows)
                del rows
        except BaseException:
            for conn in connections:
                conn.cancel()
            raise
        for q in _SECOND_HALF:  # after the columns: index keys are named from them
            if q in later:
                assembler.add(q, later.pop(q))
        return assembler.snapshot()
    finally:
        for conn in connections:
            # never free a connection a thread is still inside (after an error or Ctrl-C its query was cancelled:
            # the thread returns at once); one that does not return in time is left to the process's exit
            inside = threads.get(conn)
            if inside is not None:
                inside.join(timeout=10)
                if inside.is_alive():
                    continue
            conn.close()


def _names(attnames: dict[int, str], attnums: Optional[Sequence[int]]) -> tuple[Optional[str], ...]:
    """Column names of attribute numbers; None for 0 (an expression column of an index)."""
    return tuple(None if n == 0 else attnames.get(n, f"#{n}") for n in (attnums or ()))


def _key_names(attnames: dict[int, str], attnums: Optional[Sequence[int]]) -> tuple[str, ...]:
    """Column names of a constraint's key; an expression (an EXCLUDE constraint's) reads "(expression)"."""
    return tuple("(expression)" if n == 0 else attnames.get(n, f"#{n}") for n in (attnums or ()))


class _Assembler:
    """Builds the snapshot from the catalog queries' rows, one query at a time, as each arrives: a query's rows
    are dropped as soon as they are objects, so the peak memory is the snapshot plus the rows of the queries
    in flight, not the snapshot plus every query's rows. Columns come before constraints and indexes (their
    keys are attribute numbers, named from the columns); tables, views, functions and roles are built last.
    Repeated small values (type names, roles, privileges) are shared."""

    def __init__(self) -> None:
        self.by_oid: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self.attnames: dict[int, dict[int, str]] = defaultdict(dict)  # table oid -> attnum -> column name
        self.grants: dict[tuple[str, str], Grant] = {}  # one object per (grantee, privilege)
        self.kept: dict[str, list[Any]] = {}  # meta, tables, views, functions, roles: read in snapshot()

    def add(self, query: str, rows: list[Any]) -> None:
        handler = self._HANDLERS.get(query)
        if handler is None:
            self.kept[query] = rows
        else:
            handler(self, rows)

    def _columns(self, rows: list[Any]) -> None:
        intern = sys.intern
        by_oid, attnames = self.by_oid, self.attnames
        for r in rows:
            name = intern(r.name)
            attnames[r.oid][r.position] = name
            by_oid[r.oid]["columns"].append(
                Column(
                    name=name,
                    type=intern(r.type),
                    not_null=r.not_null,
                    default=r.default,
                    identity=r.identity,
                    generated=r.generated,
                    position=r.position,
                )
            )

    def _constraints(self, rows: list[Any]) -> None:
        by_oid, attnames = self.by_oid, self.attnames
        for r in rows:
            fk = r.contype == "f"
            ref_columns: tuple[str, ...] = ()
            if fk:
                ref_columns = (
                    tuple(r.ref_columns) if r.ref_columns is not None else _key_names(attnames[r.ref_oid], r.confkey)
                )
            by_oid[r.oid]["constraints"].append(
                Constraint(
                    name=r.name,
                    kind=_CONTYPE[r.contype],
                    columns=_key_names(attnames[r.oid], r.conkey),
                    definition=r.definition,
                    validated=r.validated,
                    ref_schema=r.ref_schema if fk else None,
                    ref_table=r.ref_table if fk else None,
                    ref_columns=ref_columns,
                    on_delete=_FKACTION.get(r.deltype) if fk else None,
                    on_update=_FKACTION.get(r.updtype) if fk else None,
                )
            )

    def _indexes(self, rows: list[Any]) -> None:
        by_oid, attnames = self.by_oid, self.attnames
        for r in rows:
            keys = (r.indkey or [])[: r.nkeyatts]
            by_oid[r.oid]["indexes"].append(
                Index(
                    name=r.name,
                    columns=_names(attnames[r.oid], keys),
                    definition=r.definition,
                    unique=r.unique,
                    primary=r.primary,
                    predicate=r.predicate,
                    valid=r.valid,
                    expressions=r.expressions,
                )
            )

    def _policies(self, rows: list[Any]) -> None:
        intern = sys.intern
        by_oid = self.by_oid
        for r in rows:
            by_oid[r.oid]["policies"].append(
                Policy(
                    name=r.name,
                    permissive=r.permissive,
                    command=_POLCMD[r.cmd],
                    roles=tuple(intern(x) for x in r.roles),
                    using=r.using,
                    with_check=r.with_check,
                )
            )

    def _grants(self, rows: list[Any]) -> None:
        intern = sys.intern
        by_oid, grants = self.by_oid, self.grants
        for r in rows:
            key = (r.grantee, r.privilege)
            grant = grants.get(key)
            if grant is None:
                grant = grants[key] = Grant(grantee=intern(key[0]), privilege=intern(key[1]))
            by_oid[r.oid]["grants"].append(grant)

    _HANDLERS: dict[str, Callable[[_Assembler, list[Any]], None]] = {}

    def snapshot(self) -> Snapshot:
        kept, by_oid = self.kept, self.by_oid
        self.attnames.clear()
        meta = kept[Q_META][0]
        table_objs = []
        for t in kept.pop(Q_TABLES):
            parts = by_oid.pop(t.oid, None) or {}
            table_objs.append(
                Table(
                    schema=t.schema,
                    name=t.name,
                    kind=t.kind,
                    owner=t.owner,
                    rls_enabled=t.rls_enabled,
                    rls_forced=t.rls_forced,
                    row_estimate=int(t.row_estimate),
                    columns=tuple(parts.get("columns", ())),
                    constraints=tuple(parts.get("constraints", ())),
                    indexes=tuple(parts.get("indexes", ())),
                    policies=tuple(parts.get("policies", ())),
                    grants=tuple(parts.get("grants", ())),
                    parent=t.parent,
                    comment=t.comment,
                )
            )
        views = tuple(
            View(
                schema=v.schema,
                name=v.name,
                owner=v.owner,
                materialized=v.materialized,
                security_invoker=v.security_invoker,
                security_barrier=v.security_barrier,
                definition=v.definition or "",
                depends_on=tuple(v.depends_on or ()),
                grants=tuple(by_oid[v.oid]["grants"]),
            )
            for v in kept[Q_VIEWS]
        )
        functions = tuple(
            Function(
                schema=f.schema,
                name=f.name,
                arguments=f.arguments,
                returns=f.returns,
                language=f.language,
                security_definer=f.security_definer,
                volatility=f.volatility,
                config=tuple(f.config or ()),
                owner=f.owner,
                body=f.body,
                executors=tuple(f.executors or ()),
                returns_rows=bool(f.returns_rows),
            )
            for f in kept[Q_FUNCTIONS]
        )
        roles = tuple(
            Role(
                name=r.name,
                superuser=r.superuser,
                bypassrls=r.bypassrls,
                can_login=r.can_login,
                memberships=tuple(Membership(role=m["role"], inherit=bool(m["inherit"])) for m in r.memberships),
            )
            for r in kept[Q_ROLES]
        )
        return Snapshot(
            database=meta.database,
            server_version=meta.server_version,
            server_version_num=meta.server_version_num,
            current_user=meta.current_user,
            taken_at=datetime.now(UTC).replace(microsecond=0).isoformat(),
            schemas=tuple(meta.schemas),
            tables=tuple(table_objs),
            views=views,
            functions=functions,
            roles=roles,
        )


_Assembler._HANDLERS = {
    Q_COLUMNS: _Assembler._columns,
    Q_CONSTRAINTS: _Assembler._constraints,
    Q_INDEXES: _Assembler._indexes,
    Q_POLICIES: _Assembler._policies,
    Q_GRANTS: _Assembler._grants,
}


def _assemble(rows: dict[str, list[Any]]) -> Snapshot:
    """The snapshot of every query's rows (``rows`` is emptied as they are used)."""
    assembler = _Assembler()
    for q in QUERIES:
        assembler.add(q, rows.pop(q))
    return assembler.snapshot()


def introspect(
    dsn_or_conn,
    schemas: Optional[Iterable[str]] = None,
    *,
    statement_timeout_ms: int = 60_000,
    lock_timeout_ms: int = 2_000,
    on_counts: Optional[Callable[[int, int], None]] = None,
) -> Snapshot:
    """Take a snapshot of the database (a DSN or an open connection) in READ ONLY transactions: with a DSN
    over two connections sharing one snapshot, with an open connection on that connection alone.
    ``on_counts(tables, policies)``: called early, from the first round trip, when the libpq path runs."""
    schemas = list(schemas) if schemas else None
    snapshot = None
    if isinstance(dsn_or_conn, str):
        from dbguard_pipeline.pg import libpq

        lib = libpq.load()
        if lib is not None:  # client_encoding UTF8: the server sends valid UTF-8 or refuses in one line
            snapshot = _introspect_libpq(lib, dsn_or_conn, schemas, statement_timeout_ms, lock_timeout_ms, on_counts)
    if snapshot is None and isinstance(dsn_or_conn, str):
        with contextlib.suppress(_NoSecondConnection):  # then one connection does it all
            snapshot = _introspect_two_connections(dsn_or_conn, schemas, statement_timeout_ms, lock_timeout_ms)
    if snapshot is None:
        from dbguard_pipeline.pg.session import read_only_session

        with read_only_session(
            dsn_or_conn, statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms
        ) as conn:
            snapshot = introspect_connection(conn, schemas)
    missing = [s for s in schemas or () if s not in snapshot.schemas]
    if missing:  # an audit of a schema that is not there would pass with 0 tables
        raise NotFoundError(f"schema not found in {snapshot.database}: {', '.join(missing)}")
    return snapshot
