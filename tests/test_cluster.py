"""Ray as a user meets it: a quiet local instance, and a real two-node cluster that loses a node.

Both run in a subprocess: each needs its own Ray instance, and Ray reads its authentication mode
once, at import (covbench.execution.scheduler.ray_defaults), so the session's instance cannot stand in. The
subprocesses (and every Ray process they start) see only Ray Core: the packages that only
`ray[default]` or `ray[client]` bring are made unimportable, except Ray's own vendored copies, as
after `pip install ray` - covbench depends on `ray`, not `ray[default]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import RUN_BOUND_S
from nodes import QUICK_NODE_LOSS

from covbench.execution.scheduler import ray_defaults

pytestmark = pytest.mark.process  # what `nox -s stress` repeats, idle and under load

# What only ray[default] / ray[client] install (their Requires-Dist), by import name.
EXTRAS_ONLY = ("aiohttp", "aiohttp_cors", "colorful", "opencensus", "prometheus_client", "smart_open",
               "virtualenv", "opentelemetry", "pydantic", "grpc", "py_spy")  # fmt: skip
RAY_CORE_ONLY = f"""
import importlib.machinery, sys

class _RayCoreOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in {EXTRAS_ONLY!r}:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and "thirdparty_files" in str(spec.origin or spec.submodule_search_locations):
            return spec  # vendored inside the ray wheel itself (the runtime-env agent's aiohttp)
        raise ModuleNotFoundError(f"No module named {{name!r}} (not in Ray Core)", name=name)

sys.meta_path.insert(0, _RayCoreOnly())
"""


def _ray_core_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Child processes import a sitecustomize that hides the extras' packages."""
    site = tmp_path / "ray-core-only"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RAY_CORE_ONLY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))


LOCAL = textwrap.dedent(
    """
    import json, os
    from covbench.execution.scheduler import RayExecutor, Resources

    def environment():
        env = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
        return {**env, "nice": os.getpriority(os.PRIO_PROCESS, 0)}

    ex = RayExecutor(num_cpus=1)
    ex.submit("t", environment, resources=Resources(1, 0))
    (done,) = list(ex.as_completed())
    try:
        import grpc  # noqa: F401
        core_only = False
    except ImportError:
        core_only = True
    result = {"address": ex.address, "nodes": ex.nodes(), "worker": done.result, "core_only": core_only}
    print("RESULT" + json.dumps(result))
    ex.shutdown()
    """
)


def test_ray_defaults_respect_the_user(monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as before `import ray`
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    ray_defaults(starting_local=False)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert "RAY_AUTH_MODE" not in os.environ  # joining a cluster: how it was started decides
    assert "RAY_worker_niceness" not in os.environ
    ray_defaults(starting_local=True)
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_worker_niceness"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_worker_niceness", "10")
    ray_defaults(starting_local=True)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1" and os.environ["RAY_AUTH_MODE"] == "disabled"
    assert os.environ["RAY_worker_niceness"] == "10"


def test_local_ray_is_quiet_private_and_recorded(tmp_path, monkeypatch):
    """No Ray notice on a plain local start, token auth on, usage stats off, addresses known, and
    trials at the driver's priority (Ray's own default would be nice 15)."""
    for name in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED", "RAY_ADDRESS", "RAY_worker_niceness"):
        monkeypatch.delenv(name, raising=False)
    _ray_core_only(tmp_path, monkeypatch)
    proc = subprocess.run([sys.executable, "-c", LOCAL], capture_output=True, text=True, timeout=RUN_BOUND_S)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(line[len("RESULT") :])
    assert out["core_only"]  # the extras really were out of reach
    assert out["worker"] == {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "nice": os.nice(0)}
    lines = (proc.stdout + proc.stderr).splitlines()
    noise = [ln for ln in lines if ln.strip() and not ln.startswith("RESULT")]
    assert not noise, noise  # not "Token authentication is enabled ...", nor anything else
    host, _, port = out["address"].rpartition(":")  # the GCS address, for the manifest
    assert host and port.isdigit()
    assert [n["head"] for n in out["nodes"]] == [True] and out["nodes"][0]["ip"] == host


CLUSTER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from covbench.execution.scheduler import ray_defaults

    ray_defaults(starting_local=True)  # before `import ray`, as covbench does for its own instance
    import ray
    from ray.cluster_utils import Cluster
    from covbench.config import PRESETS, build_config
    from covbench.execution.runner import execute

    run_dir, epochs = Path(sys.argv[1]), int(sys.argv[2])
    sys.path.insert(0, sys.argv[4])  # tests/, for the shared helpers
    from helpers import Hold
    from covbench.faults import HOLD

    hold = Hold(Path(sys.argv[3]))
    os.environ[HOLD] = str(hold.folder)  # the trial stops after its first epoch's checkpoint
    # A head without CPUs (the driver's node) and one worker node: the trial can only start there.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    trial = run_dir / "trials" / "unet__seed0__fold0"
    lost = {}

    def lose_the_worker_node(kind, info):
        # Runs in the driver's loop (the main thread: Cluster.add_node installs signal handlers).
        if kind != "started" or lost:
            return
        hold.wait_held()  # epoch 1 trained and saved on the worker, and no further: it holds
        lost["node_id"] = worker.node_id
        lost["ran_on"] = info["node_id"]  # as the driver's attempt board saw it start
        cluster.remove_node(worker, allow_graceful=False)  # the node is gone, with its processes
        cluster.add_node(num_cpus=1)  # a replacement for the retry to land on

    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"], epochs=epochs)
    outcome = execute(cfg, run_dir, checkpoint_every=0, max_retries=2, on_event=lose_the_worker_node)
    print("RESULT" + json.dumps({
        "failed": outcome.failed,
        "done": outcome.done,
        "lost": lost,
        "record": json.loads((trial / "record.json").read_text()),
        "epochs": [int(line.split(",")[0]) for line in (trial / "epochs.csv").read_text().splitlines()[1:]],
        "environment": json.loads((run_dir / "environment.json").read_text()),
    }))
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.slow
def test_two_node_cluster_loses_the_worker_node_and_the_trial_resumes_elsewhere(tmp_path, monkeypatch):
    _ray_core_only(tmp_path, monkeypatch)
    for name, value in QUICK_NODE_LOSS.items():  # read by the GCS that Cluster starts in the child
        monkeypatch.setenv(name, value)
    epochs = 3  # the node goes while the trial holds after epoch 1 (COVBENCH_TEST_HOLD)
    args = [str(tmp_path / "run"), str(epochs), str(tmp_path / "hold"), str(Path(__file__).parent)]
    proc = subprocess.run(
        [sys.executable, "-c", CLUSTER, *args],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(line[len("RESULT") :])
    record, lost = out["record"], out["lost"]
    assert out["failed"] == {} and out["done"] == ["unet__seed0__fold0"]
    assert lost["ran_on"] == lost["node_id"]  # the first attempt really ran on the lost node
    assert record["attempts"] == 2 and record["node_id"] != lost["node_id"]  # retried elsewhere
    assert record["resumed_from_epoch"] == 1  # from its epoch-1 checkpoint, not from scratch
    assert out["epochs"] == list(range(1, epochs + 1))  # every epoch logged once
    env = out["environment"]
    assert env["ray_address"] and {n["head"] for n in env["nodes"]} == {True, False}
