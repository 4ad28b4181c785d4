"""Writing results: to a file (atomically, never half-written) or to standard output."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from dbguard_pipeline.errors import DbguardError


def write_output(text: str, path: Optional[str]) -> None:
    if not path or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise DbguardError(f"--out {path} is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        raise DbguardError(f"cannot write {path}: {exc.strerror or exc}") from None
