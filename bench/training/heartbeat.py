"""Progress beats of a running trial attempt, seen by the driver's stall watch.

A worker's beats go to the driver's attempt board (covbench.execution.scheduler.AttemptBoard, a small Ray
actor on the driver's node), never to a file: on a cluster without a shared disk a file on the
worker's node is invisible to the driver. `attach` gives this process a sender for its attempt;
`beat()` calls it at most once a second, so calling it after every optimizer step and every
evaluation step costs next to nothing (one fire-and-forget actor call per second). The driver
never compares times of two machines: it notes, by its own clock, when an attempt's beat count
last changed, and calls an attempt stalled when it has not changed for `--stall-timeout` seconds.

Outside an attempt (in-process runs, the driver, a plugin's own tests) `beat()` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_INTERVAL = 1.0  # seconds between two beats sent

_send: Callable[[], object] | None = None
_last = 0.0


def attach(send: Callable[[], object] | None) -> None:
    """Make `send` what this process's beats call (None: beats do nothing)."""
    global _send, _last
    _send, _last = send, 0.0


def beat() -> None:
    """Say that the attempt is making progress (an optimizer step, an epoch, an evaluation step)."""
    global _last
    if _send is None:
        return
    now = time.monotonic()
    if now - _last < MIN_INTERVAL:
        return
    _last = now
    try:
        _send()
    except Exception:  # the board is gone (the driver stopped): the attempt is about to be cancelled
        pass
