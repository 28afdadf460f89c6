"""A lock on a run's output folder, so that two trainings never write (and delete) each other's checkpoints."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import fnmatch
import json
import os
import shlex
import socket
import sys
import warnings
from typing import Any

from monai_dpaat.atomic_io import fsync_dir

try:
    import fcntl
except ImportError:  # Windows: fall back to the owner's pid in the file
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "EARLIER_RUNS"]

#: the sub-folder of a run's folder that a fresh training moves an earlier run's files into
EARLIER_RUNS = "earlier_runs"
#: the files of a run (top level of its folder) that a fresh training moves aside: what a resume would pick up
RUN_FILES = ("checkpoint_*.pt", "model.pt")

#: the locks this process holds, by real path of the lock file
_HELD: dict[str, RunLock] = {}


def _fsync_dir(folder: str) -> None:
    """Make renames in ``folder`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fsync_dir(folder)


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot; Linux), to tell a reused pid from its first owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(owner: dict) -> bool:
    """Whether the process ``owner`` describes may still run (one on another host is assumed to)."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("boot_id") != _boot_id():
        return False  # this host was rebooted since
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    start = owner.get("proc_start")  # a pid reused by a later process (containers restart at the same pids)
    return start is None or _proc_start(pid) in (None, start)


def _describe(owner: dict | None) -> str:
    if not owner:
        return "an unknown owner (the lock file is empty or unreadable)"
    return (
        f"pid {owner.get('pid')} on host {owner.get('host')!r}, started {owner.get('started')}, "
        f"command: {owner.get('command')}"
    )


def _read(fd: int) -> dict | None:
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0).decode() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunLock:
    """Holds ``{folder}/{name}`` while a run writes into ``folder`` (a bundle's ``ckpt_dir``).

    :meth:`acquire` raises ``RuntimeError`` when another live run holds it, naming its owner (pid, host, start time,
    command), before this run has written anything. The lock is an OS lock (``fcntl.flock``) on that file, which the
    kernel drops when its process ends, however it ends (SIGKILL included): a lock file left by a dead run is taken
    over, with a warning naming it. Where ``flock`` is unavailable the file's owner is checked instead (same host and
    pid not alive, or the pid reused by a later process: taken over). :meth:`release` (idempotent) deletes the file;
    it runs at the end of the run (the bundles' ``finalize``) and, for a run ended by an exception, at interpreter
    exit. A lock an earlier run in this same process did not release is taken over with a warning.

    Bundle use::

        "run_lock": {"_target_": "monai_dpaat.handlers.run_lock.RunLock", "folder": "@ckpt_dir"},
        "run": ["$@run_lock.acquire()", ...],
        "finalize": ["$@run_lock.release()"]

    Args:
        folder: the output folder (created by :meth:`acquire` if missing).
        name: the lock file's name in ``folder``.
    """

    def __init__(self, folder: str | os.PathLike, name: str = "run.lock") -> None:
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, name)
        self._fd: int | None = None
        self._pid: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None and self._pid == os.getpid()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _owner(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
            "boot_id": _boot_id(),
            "proc_start": _proc_start(os.getpid()),
        }

    def _refuse(self, owner: dict | None) -> RuntimeError:
        return RuntimeError(
            f"the output folder {self.folder!r} is in use by another run (lock {self.path!r} held by "
            f"{_describe(owner)}). Nothing was written: wait for that run to end or stop it, or give this run another "
            "folder (bundle_root / ckpt_dir)."
        )

    def acquire(self) -> RunLock:
        """Take the lock, or raise ``RuntimeError`` naming the live run that holds it. Returns ``self``."""
        if self.held:
            return self
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as err:
            raise ValueError(f"output folder {self.folder!r} cannot be created: {err.strerror or err}") from None
        key = os.path.realpath(self.path)
        earlier = _HELD.get(key)
        if earlier is not None and earlier is not self and earlier.held:
            warnings.warn(
                f"taking over the lock {self.path!r} from an earlier run in this process (pid {os.getpid()}) that did "
                "not release it (it ended with an exception?)", stacklevel=2,
            )
            earlier.release()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                previous = _read(fd)
                if locked is False or (locked is None and previous and _alive(previous)):
                    raise self._refuse(previous)
                if not os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    os.close(fd)  # its holder released (deleted) it between our open and flock: open the new one
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if previous is not None or os.fstat(fd).st_size:
                warnings.warn(
                    f"taking over the lock {self.path!r} left by {_describe(previous)}: that run is no longer "
                    "running (killed or crashed before it released the lock)", stacklevel=2,
                )
            data = json.dumps(self._owner()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd, self._pid = fd, os.getpid()
            _HELD[key] = self
            atexit.register(self.release)
            return self
        raise RuntimeError(f"could not take the lock {self.path!r}: it kept being replaced by other runs")

    @staticmethod
    def _flock(fd: int) -> bool | None:
        """True: locked; False: another open file holds it; None: this file system / OS has no ``flock``."""
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            return None  # ENOLCK, EOPNOTSUPP, ...: some network file systems
        return True

    def archive_earlier_run(self, patterns: tuple[str, ...] = RUN_FILES) -> str | None:
        """Move an earlier run's files (``checkpoint_*.pt``, ``model.pt``, top level of ``folder``) into
        ``{folder}/earlier_runs/<timestamp>/``, with a warning naming that folder; return it (None: nothing to move).

        For a fresh (non-resume) training, after :meth:`acquire` and before anything is written: otherwise its
        checkpoints mix with an earlier run's (ignite keeps the higher-numbered older files), and a later resume
        (which looks at the top level only) would continue the earlier run. Each file is moved with an atomic
        ``os.rename`` into the same file system; nothing is deleted or overwritten. Raises ``RuntimeError`` when
        the lock is not held (another run may be writing the folder).
        """
        if not self.held:
            raise RuntimeError(f"archive_earlier_run needs the lock {self.path!r}: call acquire() first")
        try:
            names = sorted(e.name for e in os.scandir(self.folder)
                           if e.is_file(follow_symlinks=False) and any(fnmatch.fnmatchcase(e.name, p) for p in patterns))
        except OSError as err:
            raise RuntimeError(f"cannot list the output folder {self.folder!r}: {err.strerror or err}") from None
        if not names:
            return None
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        parent = os.path.join(self.folder, EARLIER_RUNS)
        os.makedirs(parent, exist_ok=True)
        for n in range(1000):
            target = os.path.join(parent, stamp if n == 0 else f"{stamp}-{n}")
            try:
                os.mkdir(target)
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"cannot make a new folder for the earlier run's files under {parent!r}")
        moved = []
        try:
            for name in names:
                os.rename(os.path.join(self.folder, name), os.path.join(target, name))
                moved.append(name)
        except OSError as err:
            raise RuntimeError(
                f"cannot move the earlier run's {name!r} from {self.folder!r} into {target!r}: {err.strerror or err} "
                f"(moved so far: {moved}); nothing was deleted"
            ) from None
        finally:
            for folder in (target, self.folder):
                _fsync_dir(folder)
        warnings.warn(
            f"the output folder {self.folder!r} held an earlier run's files {names}: this fresh training moved them "
            f"into {target!r} (to continue that run instead, move them back and run with configs/resume.json)",
            stacklevel=2,
        )
        return target

    def release(self) -> None:
        """Delete the lock file and drop the lock (does nothing when not held; a forked child never releases)."""
        fd, pid = self._fd, self._pid
        if fd is None:
            return
        self._fd = self._pid = None
        atexit.unregister(self.release)
        key = os.path.realpath(self.path)
        if _HELD.get(key) is self:
            del _HELD[key]
        try:
            if pid == os.getpid():
                try:
                    if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                        os.unlink(self.path)  # before the unlock: nobody can lock this file and then lose it
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
