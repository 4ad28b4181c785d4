"""Writing results: to a file (atomically, never half-written) or to standard output.

``--out`` never replaces what the path names with something else: a symlink is written through to its target,
a device or a FIFO is written in place (``--out /dev/null`` as root must not replace the machine's /dev/null),
a regular file is replaced atomically keeping its mode, and a new file gets the usual mode (0666 less the umask).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Optional

from dbguard_pipeline.errors import DbguardError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_output(text: str, path: Optional[str]) -> None:
    if not path or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(os.path.realpath(path))  # through symlinks (a dangling link: its target is created)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise DbguardError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise DbguardError(f"--out {path} is a directory")
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            # a device, a FIFO, a socket: write into it, never replace it
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DbguardError(f"cannot write {path}: {exc.strerror or exc}") from None
