"""`covbench run --storage`: refused in one line before any work when the storage cannot serve,
and a run on the session's Ray whose checkpoints and weights live on a real S3 server."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from helpers import RUN_BOUND_S
from typer.testing import CliRunner

from covbench.cli import app
from covbench.errors import RunFolderWarning, RunLocked
from covbench.folder.layout import STORAGE_LOCK
from covbench.folder.storage import Storage
from covbench.training.predict import load_predictor

runner = CliRunner()
RUN = ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", "--epochs", "2"]


def _one_line_refusal(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    text = " ".join(result.output.split("error:", 1)[1].split())
    for word in words:
        assert word in text, text
    return text


def test_a_storage_url_of_an_unknown_kind_is_refused(tmp_path):
    result = runner.invoke(app, [*RUN, "--storage", "nosuchfs://x/y", "--out", str(tmp_path / "r")])
    _one_line_refusal(result, "--storage", "nosuchfs")
    assert not (tmp_path / "r").exists()  # refused before the run folder was made


def test_a_missing_bucket_is_refused_before_any_work(s3, tmp_path):
    out = tmp_path / "r"
    result = runner.invoke(app, [*RUN, "--storage", "s3://no-such-bucket/run", "--out", str(out)])
    _one_line_refusal(result, "s3://no-such-bucket/run", "no-such-bucket")
    assert not (out / "trials").exists() and not (out / "config.json").exists()


def test_an_unreachable_endpoint_is_refused_before_any_work(s3, tmp_path, monkeypatch):
    from s3server import free_port

    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # the second wins where both are set
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    out = tmp_path / "r"
    result = runner.invoke(app, [*RUN, "--storage", f"s3://{s3.bucket('unreached')}/run", "--out", str(out)])
    _one_line_refusal(result, "s3://", "unreached")
    assert not (out / "trials").exists()


@pytest.mark.process
def test_credentials_the_server_refuses_are_refused_before_any_work(s3, tmp_path, monkeypatch):
    """moto with authentication on, in its own process (tests/s3server.py): an unknown key."""
    from s3server import server_process

    with server_process(auth=True) as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOBODYKNOWSTHIS")
        out = tmp_path / "r"
        result = runner.invoke(app, [*RUN, "--storage", f"s3://{server.guarded}/run", "--out", str(out)])
    _one_line_refusal(result, f"s3://{server.guarded}/run", "access key")
    assert not (out / "trials").exists()


@pytest.mark.slow
@pytest.mark.process
def test_a_run_keeps_checkpoints_and_weights_on_s3_and_a_resume_finds_them(ray_session, s3, tmp_path):
    """In a child process with its own Ray: its workers get the S3 endpoint and keys from their
    environment, as every node of a cluster must (the session's Ray predates the `s3` fixture)."""
    bucket = s3.bucket("run-storage")
    out = tmp_path / "r"
    url = f"s3://{bucket}/runs/r"
    env = {k: v for k, v in {**os.environ, **s3.env}.items() if k != "RAY_ADDRESS"}
    command = [str(Path(sys.executable).with_name("covbench")), *RUN, "--storage", url, "--out", str(out)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trial = out / "trials" / "unet__seed0__fold0"
    record = json.loads((trial / "record.json").read_text())
    assert record["weights"] == f"{url}/trials/unet__seed0__fold0/weights.pt"
    assert not (trial / "weights.pt").exists() and not (trial / "checkpoint.pt").exists()
    assert (trial / "epochs.csv").is_file() and (trial / "predictions.npz").is_file()  # by value
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/r/")["Contents"]}
    assert keys == {"runs/r/trials/unet__seed0__fold0/weights.pt"}  # no checkpoint, no lock left
    env = json.loads((out / "environment.json").read_text())
    assert env["storage"] == url

    # The folder remembers its storage: a resume uses it, another one is refused.
    other = runner.invoke(app, ["run", "--resume", str(out), "--storage", f"s3://{bucket}/elsewhere"])
    _one_line_refusal(other, f"s3://{bucket}/elsewhere", url)
    again = runner.invoke(app, ["run", "--resume", str(out)])
    assert again.exit_code == 0 and "0 trials run, 1 already done" in again.output, again.output

    # covbench predict loads the evaluated weights from the bucket: they give the trial's own predictions
    predictor = load_predictor(out, "unet", seed=0)
    saved, slices = np.load(trial / "predictions.npz"), np.load(out / "test_slices.npz")
    where = {int(i): k for k, i in enumerate(slices["index"])}
    images = slices["image"][[where[int(i)] for i in saved["index"]]]
    assert np.abs(predictor.probabilities(images) * 255 - saved["prob"]).max() <= 1.0


def test_a_lock_left_by_a_dead_driver_of_this_host_is_taken_over(tmp_path):
    """A driver killed with SIGKILL cannot delete its lock; one of this host whose process is gone
    is stale for sure. A live holder, or one on another host, still keeps a driver out."""
    storage = Storage.local(tmp_path / "store")
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = {"command": "covbench run ...", "pid": gone.pid, "host": platform.node(), "since": "earlier"}
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / STORAGE_LOCK).write_text(json.dumps(left))
    with pytest.warns(RunFolderWarning, match=f"pid {gone.pid} .* which is gone; taken over"):
        with storage.lock({"command": "mine", "pid": os.getpid(), "host": platform.node()}):
            assert json.loads((tmp_path / "store" / STORAGE_LOCK).read_text())["command"] == "mine"
    assert not (tmp_path / "store" / STORAGE_LOCK).exists()

    for holder in ({**left, "pid": os.getpid()}, {**left, "host": "another-host"}):
        (tmp_path / "store" / STORAGE_LOCK).write_text(json.dumps(holder))
        with pytest.raises(RunLocked, match="is in use by"):
            with storage.lock({"command": "mine", "pid": os.getpid(), "host": platform.node()}):
                pass
