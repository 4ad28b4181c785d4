"""A small libpq client for the CLI's start-up path: parse a database URL and run the read-only catalog queries
without importing psycopg.

Importing psycopg costs about 0.12 s of a process's start (its adapters, asyncio for its async connection,
importlib.metadata for its version), more than the whole introspection of 250 tables. ``dbguard validate
--no-data`` needs none of it: the catalog queries return each result as one JSON text (``json_agg``), decoded in C
by :func:`json.loads` (:mod:`dbguard_pipeline.pg.catalog`). So this module binds the few libpq functions it needs with :mod:`ctypes`: the libpq that
psycopg-binary ships (the very library psycopg itself would use), else the system's ``libpq.so.5``. When neither
loads, :func:`load` returns None and the callers use psycopg as before; ``DBGUARD_LIBPQ=psycopg`` forces that
(tests run both ways and compare).

What it does not do: writes, COPY, binary results, notices, async. Everything else (TLS, passwords from
``.pgpass``, service files, PG* environment variables, multiple hosts, ``connect_timeout``) is libpq's own, the
same as through psycopg. Errors come out as :class:`LibpqError` with the server's SQLSTATE; the callers turn them
into the same one-line messages as the psycopg path (:mod:`dbguard_pipeline.pg.failures`).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Optional

ENV_LIBPQ = "DBGUARD_LIBPQ"
PIPELINE = True  # libpq 14+ pipelines the catalog queries; False (tests) sends them one by one, as before 14

_CONNECTION_OK = 0
_PGRES_COMMAND_OK = 1
_PGRES_TUPLES_OK = 2
_PGRES_PIPELINE_SYNC = 10
_PG_DIAG_SQLSTATE = ord("C")
_PG_DIAG_SEVERITY = ord("S")  # localized, as it starts the message


class LibpqError(Exception):
    """A failed connection (``sqlstate`` None, or the server's when it refused us) or statement."""

    def __init__(self, message: str, sqlstate: Optional[str] = None, *, connection: bool = False):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.connection = connection  # the connection could not be made, or was lost


class _ConninfoOption(ctypes.Structure):
    _fields_ = [
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    ]


_lib: Any = None
_loaded = False


def _candidates() -> Iterator[str]:
    """psycopg-binary's libpq first (what psycopg uses when psycopg-c is not installed), then the system's."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("psycopg_binary")  # finds, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            libs = os.path.join(os.path.dirname(location), "psycopg_binary.libs")
            yield from sorted(glob.glob(os.path.join(libs, "libpq-*.so*")))
            yield from sorted(glob.glob(os.path.join(location, ".dylibs", "libpq*.dylib")))  # macOS wheels
    if sys.platform == "darwin":
        yield "libpq.5.dylib"
    elif sys.platform != "win32":
        yield "libpq.so.5"


def load(*, respect_env: bool = True) -> Any:
    """The bound libpq, or None when none can be loaded (or ``DBGUARD_LIBPQ=psycopg`` asks for psycopg, unless
    ``respect_env`` is False: the tests of this module)."""
    global _lib, _loaded
    if respect_env and os.environ.get(ENV_LIBPQ, "").strip().lower() == "psycopg":
        return None
    if _loaded:
        return _lib
    _loaded = True
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            _bind(lib)
        except (OSError, AttributeError):
            continue
        _lib = lib
        break
    return _lib


def _bind(lib: Any) -> None:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    sig = {
        "PQconninfoParse": (ctypes.POINTER(_ConninfoOption), [s, ctypes.POINTER(ctypes.c_char_p)]),
        "PQconninfoFree": (None, [ctypes.POINTER(_ConninfoOption)]),
        "PQfreemem": (None, [p]),
        "PQconnectdbParams": (p, [ctypes.POINTER(s), ctypes.POINTER(s), i]),
        "PQstatus": (i, [p]),
        "PQerrorMessage": (s, [p]),
        "PQfinish": (None, [p]),
        "PQexec": (p, [p, s]),
        "PQsendQueryParams": (i, [p, s, i, p, ctypes.POINTER(s), p, p, i]),
        "PQgetResult": (p, [p]),
        "PQresultStatus": (i, [p]),
        "PQresultErrorMessage": (s, [p]),
        "PQresultErrorField": (s, [p, i]),
        "PQntuples": (i, [p]),
        "PQnfields": (i, [p]),
        "PQgetvalue": (p, [p, i, i]),
        "PQgetlength": (i, [p, i, i]),
        "PQgetisnull": (i, [p, i, i]),
        "PQclear": (None, [p]),
        "PQgetCancel": (p, [p]),
        "PQcancel": (i, [p, s, i]),
        "PQfreeCancel": (None, [p]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    for name in ("PQenterPipelineMode", "PQpipelineSync"):  # libpq 14+: optional
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = i, [p]


def _text(raw: Optional[bytes]) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()


def conninfo_to_dict(lib: Any, dsn: str) -> dict[str, str]:
    """libpq's own parse of a URL or key=value string (what psycopg's ``conninfo_to_dict`` returns); a
    malformed one raises ValueError with libpq's reason."""
    errmsg = ctypes.c_char_p()
    options = lib.PQconninfoParse(dsn.encode(), ctypes.byref(errmsg))
    if not options:
        reason = errmsg.value
        if errmsg:
            lib.PQfreemem(errmsg)
        raise ValueError(_text(reason) or "cannot parse the connection string")
    try:
        out = {}
        k = 0
        while options[k].keyword:
            value = options[k].val
            if value is not None:
                out[options[k].keyword.decode()] = value.decode()
            k += 1
        return out
    finally:
        lib.PQconninfoFree(options)


class Connection:
    """One libpq connection; blocking calls (ctypes lets other threads run meanwhile)."""

    def __init__(self, lib: Any, dsn: str, *, connect_timeout: int = 10, application_name: str = "dbguard"):
        self.lib = lib
        # keywords before "dbname" are defaults the URL may override; client_encoding after it is ours: the JSON
        # texts are decoded as UTF-8
        pairs = [
            ("connect_timeout", str(connect_timeout)),
            ("application_name", application_name),
            ("dbname", dsn),
            ("client_encoding", "UTF8"),
        ]
        keywords = (ctypes.c_char_p * (len(pairs) + 1))(*[k.encode() for k, _ in pairs], None)
        values = (ctypes.c_char_p * (len(pairs) + 1))(*[v.encode() for _, v in pairs], None)
        self.pgconn = lib.PQconnectdbParams(keywords, values, 1)
        if not self.pgconn:
            raise LibpqError("out of memory", connection=True)
        if lib.PQstatus(self.pgconn) != _CONNECTION_OK:
            message = _text(lib.PQerrorMessage(self.pgconn))
            self.close()
            raise LibpqError(message, connection=True)

    def close(self) -> None:
        if self.pgconn:
            self.lib.PQfinish(self.pgconn)  # an open transaction is rolled back by the server
            self.pgconn = None

    def cancel(self) -> None:
        """Ask the server to cancel what this connection runs (callable from another thread)."""
        pgconn = self.pgconn
        if not pgconn:
            return
        handle = self.lib.PQgetCancel(pgconn)
        if handle:
            buf = ctypes.create_string_buffer(256)
            self.lib.PQcancel(handle, buf, 256)
            self.lib.PQfreeCancel(handle)

    def _check(self, res: Any) -> int:
        """The result's status; raises LibpqError (and frees the result) for an error."""
        lib = self.lib
        if not res:
            raise LibpqError(_text(lib.PQerrorMessage(self.pgconn)) or "no result", connection=True)
        status = lib.PQresultStatus(res)
        if status in (_PGRES_COMMAND_OK, _PGRES_TUPLES_OK, _PGRES_PIPELINE_SYNC):
            return status
        message = _text(lib.PQresultErrorMessage(res)) or _text(lib.PQerrorMessage(self.pgconn))
        severity = _text(lib.PQresultErrorField(res, _PG_DIAG_SEVERITY))
        if severity and message.startswith(severity + ":"):  # "ERROR:  ...": psycopg strips it too
            message = message[len(severity) + 1 :].strip()
        sqlstate = lib.PQresultErrorField(res, _PG_DIAG_SQLSTATE)
        lib.PQclear(res)
        code = sqlstate.decode() if sqlstate else None
        lost = code is None or code.startswith("08") or code.startswith("57P")
        raise LibpqError(message, code, connection=lost)

    def execute(self, command: str) -> tuple[Optional[str], ...]:
        """Run statements (no parameters: text written by dbguard only); the first row of the last result (an
        empty tuple when it has none)."""
        lib = self.lib
        res = lib.PQexec(self.pgconn, command.encode())
        self._check(res)
        try:
            if lib.PQresultStatus(res) != _PGRES_TUPLES_OK or lib.PQntuples(res) < 1:
                return ()
            return tuple(
                None
                if lib.PQgetisnull(res, 0, k)
                else ctypes.string_at(lib.PQgetvalue(res, 0, k), lib.PQgetlength(res, 0, k)).decode()
                for k in range(lib.PQnfields(res))
            )
        finally:
            lib.PQclear(res)

    def first_values(
        self, queries: Sequence[str], params: Sequence[Optional[Sequence[Optional[str]]]]
    ) -> Iterator[Any]:
        """Each query's first value (the queries return one row, one column: a JSON text), in order, each as
        soon as it arrives, as bytes (None for SQL NULL or no row). In pipeline mode (libpq 14+) they all go out
        at once, one round trip, as psycopg's pipeline does."""
        lib = self.lib
        pipeline = PIPELINE and hasattr(lib, "PQenterPipelineMode") and lib.PQenterPipelineMode(self.pgconn) == 1
        if not pipeline:
            for query, values in zip(queries, params, strict=True):
                self._send(query, values)
                yield self._next_value()
                self._drain()
            return
        for query, values in zip(queries, params, strict=True):
            self._send(query, values)
        if lib.PQpipelineSync(self.pgconn) != 1:
            raise LibpqError(_text(lib.PQerrorMessage(self.pgconn)), connection=True)
        for _ in queries:
            yield self._next_value()
            self._drain()  # the NULL that ends each query's results
        res = lib.PQgetResult(self.pgconn)  # the sync point
        self._check(res)
        lib.PQclear(res)

    def _send(self, query: str, values: Optional[Sequence[Optional[str]]]) -> None:
        values = values or ()
        array = (ctypes.c_char_p * max(len(values), 1))(*[None if v is None else v.encode() for v in values])
        if self.lib.PQsendQueryParams(self.pgconn, query.encode(), len(values), None, array, None, None, 0) != 1:
            raise LibpqError(_text(self.lib.PQerrorMessage(self.pgconn)), connection=True)

    def _next_value(self) -> Optional[bytes]:
        lib = self.lib
        res = lib.PQgetResult(self.pgconn)
        self._check(res)
        try:
            if lib.PQntuples(res) < 1 or lib.PQgetisnull(res, 0, 0):
                return None
            return ctypes.string_at(lib.PQgetvalue(res, 0, 0), lib.PQgetlength(res, 0, 0))
        finally:
            lib.PQclear(res)

    def _drain(self) -> None:
        while True:
            res = self.lib.PQgetResult(self.pgconn)
            if not res:
                return
            self.lib.PQclear(res)


def text_array(values: Optional[Sequence[str]]) -> Optional[str]:
    """A ``text[]`` parameter in PostgreSQL's array literal syntax, every element quoted (None: SQL NULL)."""
    if values is None:
        return None
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
