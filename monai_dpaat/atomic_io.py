"""Atomic single-file writes: the one primitive the reports, plots, Grad-CAM outputs and checkpoints use.

:func:`atomic_write` writes to a temporary file in the same folder (a hidden, unique ``.<name>.<8 hex>.tmp``
name, created with mode ``0666 & ~umask`` as ``open()`` would, not ``tempfile``'s ``0600``), flushes and
fsyncs it, ``os.replace``\\ s it over the target and fsyncs the folder. On any error (including
``KeyboardInterrupt``) the temporary file is removed and the old file, if any, is left untouched.

Only the standard library is used here (no other ``monai_dpaat`` module), so any module can import it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "ensure_output_dir", "fsync_dir", "new_file",
           "temp_name"]


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with parents) and check it is a writable folder; raises ``ValueError`` otherwise."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output_dir {str(out)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output_dir {str(out)!r} is not writable")
    return out


def new_file(path: str | os.PathLike) -> int:
    """Create ``path`` (it must not exist) for writing with mode ``0666 & ~umask``, as ``open()`` would:
    ``tempfile.mkstemp`` makes ``0600`` files, which other users (a web server, a group) cannot read.
    Returns the file descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in folder ``path`` durable. A no-op where folders cannot be opened (e.g. Windows) or the
    file system cannot sync folders (``EINVAL``/``EBADF``/``ENOTSUP``); other ``OSError``\\ s propagate."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # file systems that cannot sync folders
            raise
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``: ``.<name>.<8 hex digits>.tmp``."""
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Replace ``path`` atomically with what ``write(f)`` writes to the binary file object ``f``.

    The folder must exist. The temporary file is flushed and fsynced before ``os.replace``, and the folder
    after it; on any error the temporary file is removed and the error propagates. Returns ``Path(path)``.
    """
    path = Path(path)
    while True:
        tmp = temp_name(path)
        try:
            fd = new_file(tmp)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the write's own error is the one to report
            if os.path.lexists(tmp):
                os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
