"""A Ray cluster whose nodes share no disk: checkpoints on S3, results back through Ray.

The head node (the driver's, no CPUs) sees the run folder; each worker node is a `ray start` in
its own mount namespace with an empty private tmpfs over the folder that holds the run folders
(tests/nodes.py), so nothing a worker writes there reaches the driver and nothing the driver
writes reaches a worker. The S3 server is moto's real server (tests/s3server.py), reached through
the same fsspec code a user's bucket is. Skipped, with the reason, where `unshare -m` is not
allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pandas as pd
import pytest
from helpers import RUN_BOUND_S, Hold, running
from nodes import QUICK_NODE_LOSS, Node, private_nodes_unavailable, wait_for_nodes

pytestmark = [pytest.mark.process, pytest.mark.slow]

WHY_NOT = private_nodes_unavailable()
needs_private_nodes = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
TRIAL = "unet__seed0__fold0"
ARGS = ["--models", "unet", "--seeds", "1", "--preset", "smoke", "--epochs", "3", "--checkpoint-every", "0"]
COVBENCH = str(Path(sys.executable).with_name("covbench"))


class Cluster:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp = tmp_path
        self.runs = tmp_path / "runs"  # the driver's; every worker sees an empty tmpfs here
        self.runs.mkdir()
        self.env = env
        self.nodes: list[Node] = []
        self.head = self._add(head=None, cpus=0)

    def _add(self, head: str | None, cpus: int) -> Node:
        n = len(self.nodes)
        private = None if head is None else self.runs
        node = Node(head=head, env=self.env, log=self.tmp / f"node{n}.log", private=private, cpus=cpus)
        self.nodes.append(node)
        return node

    def add_worker(self) -> Node:
        node = self._add(head=self.head.address, cpus=1)
        wait_for_nodes(self.head.address, self.nodes, self.env)
        return node

    def covbench(self, *args: str) -> list[str]:
        return [COVBENCH, "run", *ARGS, "--address", self.head.address, *args]

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            if node.proc.poll() is None:
                node.kill()


@pytest.fixture
def cluster(tmp_path, s3):
    # token authentication on every node and the driver, as covbench's own instance has it
    env = {**os.environ, **s3.env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.update(QUICK_NODE_LOSS)  # the lost node is counted lost in 2.5 s, not 15 s (tests/nodes.py)
    env.pop("RAY_ADDRESS", None)
    env.pop("COVBENCH_TEST_HOLD", None)
    c = Cluster(tmp_path, env)
    try:
        yield c
    finally:
        c.shutdown()


def _objects(s3, bucket: str, prefix: str) -> set[str]:
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix) :] for o in listing.get("Contents", [])}


@needs_private_nodes
def test_without_storage_a_cluster_without_a_shared_disk_is_refused_before_training(cluster):
    cluster.add_worker()
    out = cluster.runs / "r"
    proc = subprocess.run(
        cluster.covbench("--out", str(out)),
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    error = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    text = " ".join(" ".join(error).split())
    assert "is not visible on 1 of 2 Ray nodes" in text and "--storage" in text, text
    assert "Traceback" not in proc.stderr
    assert not (out / "trials").exists() and not (out / "config.json").exists()  # nothing trained


@needs_private_nodes
def test_a_lost_node_resumes_from_the_s3_checkpoint_on_a_fresh_node(cluster, s3, tmp_path):
    bucket = s3.bucket("no-shared-disk")
    first = cluster.add_worker()
    hold = Hold(tmp_path / "hold")  # outside the private folder: every node sees it
    out = cluster.runs / "lost"
    cmd = cluster.covbench("--storage", f"s3://{bucket}/lost", "--out", str(out))
    with running(cmd, env=hold.env(cluster.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        hold.wait_held()  # epoch 1 trained on the first node, its checkpoint uploaded, and no further
        assert "trials/unet__seed0__fold0/checkpoint.pt" in _objects(s3, bucket, "lost/")
        assert not (out / "trials" / TRIAL / "checkpoint.pt").exists()  # never on the driver's disk
        first.kill()  # the node is gone, with its private disk and its processes
        cluster.add_worker()  # a fresh node, with a fresh empty private disk
        output, _ = proc.communicate(timeout=RUN_BOUND_S)
    assert proc.returncode == 0, output[-4000:]

    record = json.loads((out / "trials" / TRIAL / "record.json").read_text())
    assert record["attempts"] == 2 and record["resumed_from_epoch"] == 1  # from S3, not from scratch
    assert record["weights"] == f"s3://{bucket}/lost/trials/{TRIAL}/weights.pt"
    objects = _objects(s3, bucket, "lost/")
    assert f"trials/{TRIAL}/weights.pt" in objects and f"trials/{TRIAL}/checkpoint.pt" not in objects
    assert ".covbench-lock" not in objects  # the driver let go of the prefix
    epochs = pd.read_csv(out / "trials" / TRIAL / "epochs.csv")["epoch"].tolist()
    assert epochs == [1, 2, 3]  # epoch 1's row came with the checkpoint from the lost node

    # Every report file, from the driver's disk alone: overlays and the patient-level table too.
    for name in ("summary.json", "table.md", "cases.csv", "test_slices.npz"):
        assert (out / name).is_file(), name
    assert (out / "trials" / TRIAL / "predictions.npz").is_file()
    assert list(out.glob("figures/**/qualitative.png")), sorted(p.name for p in out.rglob("*.png"))
    report = subprocess.run(
        [COVBENCH, "report", str(out), "--unit", "patient"], env=cluster.env, capture_output=True, text=True,
        timeout=RUN_BOUND_S,
    )  # fmt: skip
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]

    # The same trial, never interrupted, on the same cluster: the same per-case metrics.
    ref = cluster.runs / "ref"
    again = subprocess.run(
        cluster.covbench("--storage", f"s3://{bucket}/ref", "--out", str(ref)), env=cluster.env,
        capture_output=True, text=True, timeout=RUN_BOUND_S,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    resumed = pd.read_csv(out / "trials" / TRIAL / "cases.csv").sort_values("case").reset_index(drop=True)
    whole = pd.read_csv(ref / "trials" / TRIAL / "cases.csv").sort_values("case").reset_index(drop=True)
    numbers = [c for c in whole.columns if pd.api.types.is_float_dtype(whole[c])]
    assert numbers and resumed["case"].tolist() == whole["case"].tolist()
    pd.testing.assert_frame_equal(resumed[numbers], whole[numbers], rtol=1e-6, atol=1e-9)
