"""The embedded PostgreSQL (pgserver): started on demand in ``$DBGUARD_HOME/pgdata``, shared by every process
that uses the same data directory, stopped when the last of them exits."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from dbguard_pipeline.errors import ConnectionError_


def dbguard_home() -> Path:
    base = os.environ.get("DBGUARD_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "dbguard"
    )
    return Path(base)


def _ensure_runtime_dir() -> None:
    # pgserver keeps its lock file in the user runtime dir; give it one quietly when none is set.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(tempfile.gettempdir()) / f"dbguard-runtime-{os.getuid()}"
        d.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(d)


_servers: dict[str, object] = {}


def embedded_server(pgdata: Optional[str | os.PathLike] = None):
    """Start (or reuse) the embedded PostgreSQL; its data directory lives in the cache folder.

    The server is shared by every process that uses the same data directory and stopped when the
    last of them exits.
    """
    _ensure_runtime_dir()
    import pgserver  # imported late: only the embedded path needs it

    path = Path(pgdata) if pgdata else dbguard_home() / "pgdata"
    key = str(path.resolve()) if path.exists() else str(path)
    if key not in _servers:
        path.mkdir(parents=True, exist_ok=True)
        try:
            _servers[key] = pgserver.get_server(path, cleanup_mode="stop")
        except Exception as exc:  # noqa: BLE001  (pgserver raises CalledProcessError, TimeoutExpired, ...)
            raise ConnectionError_(f"could not start the embedded PostgreSQL in {path}: {exc}") from None
    return _servers[key]


def embedded_dsn(dbname: str = "postgres", pgdata: Optional[str | os.PathLike] = None) -> str:
    srv = embedded_server(pgdata)
    return srv.get_uri(dbname)
