"""Ray nodes on one machine that share no files where the run folder is.

Each node is `ray start --block` inside its own mount namespace (`unshare -m`), with a private,
empty tmpfs mounted over one folder: the processes of that node (its raylet, its workers) see
nothing of what the driver writes there, exactly as a node of a cloud cluster sees nothing of the
driver's disk. Everything else (the Python install, /tmp/ray, the hold folder of a test) stays
shared. A node is lost for real: every process in its namespace is killed with SIGKILL.

Needs `unshare -m` (root, or unprivileged user namespaces); `private_nodes_unavailable()` says
why not, for a skip.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import BOUND_S, wait_for
from s3server import free_port

RAY = str(Path(sys.executable).with_name("ray"))

# Ray's GCS counts a node dead after `health_check_failure_threshold` (5) failed health checks
# `health_check_period_ms` (3000) apart: a node that is gone stays "alive" for 15 s, and a retry
# waits for that. Tests that lose a node on purpose check what happens after the loss, not Ray's
# patience, so the GCS of their clusters checks every 0.5 s (2.5 s). A check of a live node still
# has Ray's 10 s timeout, so a busy machine does not make a live node look lost.
QUICK_NODE_LOSS = {"RAY_health_check_period_ms": "500"}


def private_nodes_unavailable() -> str | None:
    """None when this machine can start nodes with a private tmpfs; else the reason it cannot."""
    if shutil.which("unshare") is None:
        return "no `unshare` command on this machine"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs covbench-probe /mnt && umount /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"`unshare -m` with a tmpfs mount is not allowed here: {probe.stderr.strip()[:200]}"
    return None


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class Node:
    """One Ray node; `private` is the folder it sees as an empty tmpfs (None: sees everything)."""

    def __init__(self, *, head: str | None, env: dict[str, str], log: Path, private: Path | None = None,
                 cpus: int = 1) -> None:  # fmt: skip
        self.port = free_port() if head is None else None
        start = [RAY, "start", "--block", f"--num-cpus={cpus}", "--node-ip-address=127.0.0.1",
                 "--disable-usage-stats", "--include-dashboard=false"]  # fmt: skip
        start += [f"--address={head}"] if head else ["--head", f"--port={self.port}"]
        if head is not None:
            start.remove("--include-dashboard=false")  # a head-only option
        mount = f"mount -t tmpfs covbench-private {shlex.quote(str(private))} && " if private else ""
        script = f"{mount}exec {shlex.join(start)}"
        self.log_path = log
        self.killed = False
        self.log = open(log, "ab")  # noqa: SIM115 - kept open for the node's life
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.namespace = wait_for(self._own_namespace, "the node's mount namespace", 60)
        self.address = f"127.0.0.1:{self.port}" if head is None else head

    def _own_namespace(self) -> str | None:
        mine = _namespace(self.proc.pid)
        return mine if mine and mine != _namespace(os.getpid()) else None

    def processes(self) -> list[int]:
        """Every process of this node (its namespace), the `ray start` itself included."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _namespace(int(entry)) == self.namespace:
                pids.append(int(entry))
        return pids

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """Lose the node: SIGKILL to every process in it, then wait until none is left."""
        self.killed = True
        for _ in range(50):
            pids = self.processes()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.proc.wait(timeout=BOUND_S)
        self.log.close()


def wait_for_nodes(address: str, nodes: list[Node], env: dict[str, str]) -> None:
    """Until the cluster at `address` counts as alive exactly the `nodes` whose processes run
    (asked from a separate process); fails at once, with its log, if one of them died."""
    code = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    expected = sum(1 for node in nodes if node.proc.poll() is None)

    def enough() -> bool:
        for node in nodes:
            if node.proc.poll() is not None and node.namespace and not node.killed:
                node.log.flush()
                raise AssertionError(f"a Ray node exited ({node.proc.returncode}): {node.log_tail()}")
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(expected)]

    wait_for(enough, f"{expected} alive Ray nodes at {address}", BOUND_S, every=1.0)
