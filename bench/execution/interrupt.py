"""SIGINT and SIGTERM during a run: stop cleanly once, whatever arrives after.

SIGTERM is how Kubernetes, Slurm and spot preemption stop a job, SIGINT is Ctrl-C. Either one,
the first time, raises `Interrupted` (a KeyboardInterrupt, so the runner's one stop path handles
both) in the main thread; the runner then records the trials that finished, cancels the rest and
writes `"status": "interrupted"`. Signals that arrive while it does so (a second Ctrl-C, a SIGTERM
repeated by a supervisor) are counted and ignored: the cleanup is what makes the resume exact, so
it is never cut short. The command exits 128 + the signal number (130 for SIGINT, 143 for
SIGTERM), as shells and schedulers expect.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `exit_code` is the conventional 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_fired: list[int] = []  # the signals received inside the active `trap_signals` block, in order


def received() -> str | None:
    """The name of the first signal the active trap received ("SIGTERM"), or None. Ray turns an
    exception raised by a signal handler during `ray.wait` into a plain KeyboardInterrupt, so the
    exception alone does not say which signal it was."""
    return signal.Signals(_fired[0]).name if _fired else None


def exit_code(exc: KeyboardInterrupt) -> int:
    """130 for a plain KeyboardInterrupt (Ctrl-C), 128 + signal number for `Interrupted`."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


@contextmanager
def trap_signals() -> Iterator[None]:
    """Within the block, the first SIGINT or SIGTERM raises `Interrupted`; later ones are ignored
    until the block ends (the caller's cleanup runs inside it). Outside the main thread, where
    Python cannot set handlers, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer = list(_fired)
    _fired.clear()

    def handler(signum: int, frame: FrameType | None) -> None:
        _fired.append(signum)
        if len(_fired) == 1:
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    except KeyboardInterrupt as exc:
        if _fired and not isinstance(exc, Interrupted):  # Ray's stand-in for our exception
            raise Interrupted(_fired[0]) from None
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _fired[:] = outer
