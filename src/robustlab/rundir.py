"""A directory robustlab writes into (a run, a study, an evaluation's --out) keeps two promises.

**One writer.** `RunLock(dir)` holds an advisory lock (`flock` on `dir/.lock`) for the whole train,
eval, sweep, analyze or study of that directory. A second process gets a `RobustlabError` naming the
holder's pid and command, before it has changed any file. The operating system releases the lock
when its holder ends, by any signal (kill -9 included), so a crashed run never blocks its rerun. A
process whose ancestor holds the lock — a study's worker, a torchrun rank the study launched —
acts for that ancestor and passes. On systems without `fcntl` (Windows) there is no lock.

**Nothing half-written.** Every file is written to a temporary name beside it and renamed onto it
(`atomic_path`, `write_text_atomic`), so a kill at any moment leaves either the old or the new file.
A full disk (ENOSPC, EDQUOT) becomes a one-line error; the previous file stays intact.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import RobustlabError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _ancestors() -> set[int]:
    """This process and its ancestors (pids), read from /proc where there is one, else the parent only."""
    pids, pid = {os.getpid()}, os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
    return pids


class RunLock:
    """The advisory lock of one directory, as a context manager (the directory is created if needed)."""

    def __init__(self, directory: str | Path, command: str | None = None):
        self.dir = Path(directory)
        self.command = command or " ".join(["robustlab", *sys.argv[1:]])[:200]
        self._fd: int | None = None
        self._created = False  # the directory did not exist before acquire()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        if fcntl is None:
            return
        created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 400).decode(errors="replace").strip()
            os.close(fd)
            pid = int(holder.split(" ", 1)[0]) if holder.split(" ", 1)[0].isdigit() else None
            if pid is not None and pid in _ancestors():
                return  # our parent (a study, torchrun's launcher) holds it for us
            what = f"pid {pid}: {holder.split(' ', 1)[1] if ' ' in holder else '?'}" if pid else "pid unknown"
            raise RobustlabError(
                f"{self.dir} is being written by another robustlab process ({what}); one writer per "
                f"directory: wait for it to finish, stop it, or use another directory."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        self._fd = fd
        self._created = created

    def release(self) -> None:
        """Unlock; a directory this lock created and nothing else wrote into is removed again."""
        if self._fd is None:
            return
        if self._created and [p.name for p in self.dir.iterdir()] == [LOCK_FILE]:
            (self.dir / LOCK_FILE).unlink()
            self.dir.rmdir()
        os.close(self._fd)
        self._fd = None


@contextmanager
def locked(directories: list[Path]) -> Iterator[None]:
    """Hold the locks of several directories, all or none (a taken one releases those already held)."""
    held: list[RunLock] = []
    try:
        for d in directories:
            lock = RunLock(d)
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so numpy and matplotlib keep the format) that is
    renamed onto `path` when the block ends without error, and removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            raise RobustlabError(
                f"no space left on the device while writing {path}; the previous {path.name} (if any) is "
                f"intact. Free some space and run the same command again."
            ) from None
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
