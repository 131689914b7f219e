"""One writer per run folder: an OS lock on `<run>/.lock`, held for a whole command.

Two `covbench run` (or a run and a `report`) on one folder would interleave their writes: two
configurations in one folder, two drivers training the same trial. `run_lock` takes an exclusive
`flock` on `<run>/.lock` without waiting; a second process gets `RunLocked` at once (one line,
exit 2) naming the folder and the process that holds it. The kernel drops the lock when its holder
exits, however it exits (SIGKILL, OOM killer, a lost SSH session), so a lock is never stale on a
local file system. On NFS v4 Linux maps `flock` to a lease-backed POSIX lock, freed when the lease
of a dead client runs out; Lustre needs the `flock` mount option.

The lock is re-entrant within one process (the CLI holds it across `execute` and the report,
`execute` takes it again for library callers). The `.lock` file of a folder in use is never
deleted: that would let a third process lock a fresh inode while the second holds the old one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covbench.errors import RunFolderWarning, RunLocked
from covbench.folder.layout import MARKER, RUN_LOCK, RunFolder  # the names are the layout's, used here
from covbench.folder.manifest import now_iso


@dataclass
class _Held:
    fd: int
    pid: int
    depth: int = 1


_held: dict[str, _Held] = {}  # resolved run folder -> this process's lock on it


def holder(run_dir: Path) -> dict[str, Any] | None:
    """Who holds (or last held) the lock, as its holder wrote it; None when unknown."""
    try:
        text = RunFolder(run_dir).lock.read_text(encoding="utf-8")
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not said which yet)"
    argv = [str(a) for a in info.get("command") or []]
    command = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else ""
    command = command if len(command) <= 100 else command[:97] + "..."
    what = f"`{command}`" if command else "another process"
    return f"{what} (pid {info.get('pid')} on host {info.get('host')}, since {info.get('since')})"


@contextmanager
def run_lock(run_dir: Path, create: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the block, or raise RunLocked at once.

    `create=False` (a `report` of a folder that may not exist) skips the lock when the folder
    does not exist, leaving the "not a run folder" error to the caller."""
    run_dir = Path(run_dir)
    created = False
    if not run_dir.is_dir():
        if not create:
            yield
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        created = True
    key = str(run_dir.resolve())
    held = _held.get(key)
    if held is not None and held.pid == os.getpid():
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
        return
    fd = -1
    try:
        fd = os.open(RunFolder(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(
            f"{run_dir} is in use by {_describe(holder(run_dir))}; one covbench at a time writes a "
            "run folder: wait for it to end, or use another --out"
        ) from None
    except OSError as exc:  # a read-only folder, a file system without locks: say nothing guards it
        if fd >= 0:
            os.close(fd)
        if exc.errno == errno.EROFS:  # nobody can write it, so nobody needs to be kept out
            yield
            return
        warnings.warn(
            f"{run_dir}: cannot lock {RUN_LOCK} ({exc}); make sure no other covbench writes this folder",
            RunFolderWarning,
            stacklevel=3,
        )
        yield
        return
    info = {"pid": os.getpid(), "host": platform.node(), "since": now_iso(), "command": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _held[key] = _Held(fd, os.getpid())
    try:
        yield
    finally:
        del _held[key]
        try:
            os.ftruncate(fd, 0)  # a lock file nobody holds names nobody
            if created and set(os.listdir(run_dir)) <= {RUN_LOCK, MARKER}:
                # A bad option stopped the command before anything was written: leave no empty
                # folder behind. Still holding the lock, and nobody else knew the folder.
                RunFolder(run_dir).marker.unlink(missing_ok=True)
                os.unlink(RunFolder(run_dir).lock)
                run_dir.rmdir()
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock
