"""Progress beats of a running trial attempt, seen by the driver's stall watch.

The worker writes the attempt's heartbeat file when the attempt starts (covbench.scheduler); after
that, `beat()` only renews the file's modification time, at most once a second, so calling it after
every optimizer step and every evaluation step costs next to nothing. The driver never compares
that time with its own clock (a worker on another node, or an NFS server, has another clock): it
notes when the time last changed, by its own clock, and calls an attempt stalled when it has not
changed for `--stall-timeout` seconds (covbench.scheduler.StallWatch).

Outside an attempt (in-process runs, the driver, a plugin's own tests) `beat()` does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MIN_INTERVAL = 1.0  # seconds between two renewals of the file's time

_path: Path | None = None
_last = 0.0


def attach(path: Path | None) -> None:
    """Make `path` the file this process's beats renew (None: beats do nothing)."""
    global _path, _last
    _path, _last = path, 0.0


def beat() -> None:
    """Say that the attempt is making progress (an optimizer step, an epoch, an evaluation step)."""
    global _last
    if _path is None:
        return
    now = time.monotonic()
    if now - _last < MIN_INTERVAL:
        return
    _last = now
    try:
        os.utime(_path)
    except OSError:  # the file was replaced or the folder is gone: the next beat tries again
        pass
