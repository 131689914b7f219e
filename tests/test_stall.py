"""Stalled work ends, divergence stops early: a trial without progress is killed and recorded as
"stalled", a NaN loss ends its trial at once, options that cannot train are refused; the other
trials of the run go on. Real Ray workers, held at a known point by the `holdnet` test plugin."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest
import torch
from helpers import wait_for
from typer.testing import CliRunner

from covbench.checks import ContractError, check_models
from covbench.cli import app
from covbench.config import PRESETS, build_config
from covbench.execution.runner import execute
from covbench.training.loop import TrainingDiverged, TrainOptions, train_model

pytestmark = pytest.mark.process  # what `nox -s stress` repeats, idle and under load

runner = CliRunner()
# Seconds. A trial beats at every optimizer step, epoch and evaluation step; the longest gap of a
# healthy smoke trial is its worker's first import of the model plugins, several seconds on a
# loaded CI machine, so the limit stays well above that.
STALL = 20.0


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_a_stalled_trial_is_killed_within_its_limit_and_the_run_goes_on(ray_session, holdnet, tmp_path):
    (holdnet / "hold").touch()  # holdnet's first training forward in a worker waits, forever
    cfg = build_config(models=["holdnet", "unet"], n_seeds=1, preset=PRESETS["smoke"], epochs=1)
    out = tmp_path / "run"
    outcome = execute(cfg, out, stall_timeout=STALL)

    assert sorted(outcome.done) == ["unet__seed0__fold0"], outcome.failed
    assert list(outcome.failed) == ["holdnet__seed0__fold0"]
    assert outcome.failed["holdnet__seed0__fold0"].startswith("stalled: no progress")
    failure = json.loads((out / "trials" / "holdnet__seed0__fold0" / "failure.json").read_text())
    assert failure["reason"] == "stalled" and failure["status"] == "failed"
    entered = holdnet / "entered"
    # when the driver last saw it progress, by its clock: at most a poll (0.5 s) after the worker's
    # last beat, which came before the held forward (beats are at most 1 s apart)
    last_beat = failure["last_progress"]
    assert last_beat <= entered.stat().st_mtime + 2  # no progress once the forward was held
    assert failure["collected"] - entered.stat().st_mtime < STALL + 5, "not ended within its limit"
    assert failure["collected"] - last_beat >= STALL - 1, "ended before its limit"
    pid = int(entered.read_text())
    wait_for(lambda: _gone(pid), f"the stalled worker (pid {pid}) to be gone", timeout=30)
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "failed" and env["failed"] == ["holdnet__seed0__fold0"]


@pytest.mark.slow
def test_a_nan_loss_ends_its_trial_at_once_naming_epoch_and_lr(ray_session, holdnet, tmp_path):
    (holdnet / "nan").touch()
    cfg = build_config(models=["holdnet", "unet"], n_seeds=1, preset=PRESETS["smoke"], epochs=3)
    out = tmp_path / "run"
    outcome = execute(cfg, out)
    assert sorted(outcome.done) == ["unet__seed0__fold0"]
    error = outcome.failed["holdnet__seed0__fold0"]
    assert f"training diverged: the loss is nan in epoch 1 at learning rate {cfg.lr:g}" in error
    failure = json.loads((out / "trials" / "holdnet__seed0__fold0" / "failure.json").read_text())
    assert failure["reason"] == "diverged"
    assert not (out / "trials" / "holdnet__seed0__fold0" / "epochs.csv").exists()  # no epoch logged


def test_train_model_stops_at_the_first_non_finite_epoch_loss():
    class Explodes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.conv(x)
            return out * math.nan if self.calls > 2 else out  # finite during epoch 1 (2 batches)

    x = torch.rand(8, 1, 16, 16)
    y = (torch.rand(8, 1, 16, 16) > 0.5).float()
    seen = []
    opts = TrainOptions(epochs=5, batch_size=4, lr=0.01, amp="off")
    with pytest.raises(TrainingDiverged, match=r"loss is nan in epoch 2 at learning rate 0\.01;"):
        train_model(Explodes(), (x, y), (x[:0], y[:0]), opts, torch.device("cpu"), on_epoch=seen.append)
    assert [e.row["epoch"] for e in seen] == [1]  # epoch 1 was fine; nothing ran after epoch 2


def test_a_blocking_forward_cannot_hang_the_contract_check(holdnet):
    (holdnet / "block-check").touch()
    try:
        started = time.monotonic()
        with pytest.raises(ContractError) as err:
            check_models(["holdnet"], image_size=32, batch_size=8, timeout=2.0)
        assert time.monotonic() - started < 10
        assert (
            "model 'holdnet' (entry point holdnet:SPEC, from covbench-holdnet 0.0.1) did not finish "
            "the contract check within 2 s (--stall-timeout)" in str(err.value)
        )
    finally:
        (holdnet / "block-check").unlink()  # let the abandoned check thread end
    blocked = [t for t in threading.enumerate() if t.name == "covbench-check-holdnet"]
    for thread in blocked:
        thread.join(30)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
        (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
        (["--lr", "-1e-3"], "--lr must be a positive finite number, got -0.001"),
        (["--epochs", "0"], "--epochs must be positive, got 0"),
        (["--batch-size", "0"], "--batch-size must be positive, got 0"),
        (["--stall-timeout", "-1"], "--stall-timeout must be 0 (never) or a positive number of seconds"),
        (["--stall-timeout", "nan"], "--stall-timeout must be 0 (never) or a positive number of seconds"),
        (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number, got nan"),
    ],
)
def test_options_that_cannot_train_are_refused_before_anything_starts(args, message, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", *args,
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_a_trials_failure_reason_comes_from_its_exception_type_not_its_message():
    """failure.json's reason is the TrialFailure's own (TrainingDiverged: "diverged"); an error
    that merely says "TrainingDiverged" is an error."""
    from covbench.execution.scheduler import InProcessExecutor, Resources
    from covbench.training.loop import check_finite_loss

    def diverge():
        check_finite_loss(float("nan"), 1, 1e-3)

    def look_alike():
        raise RuntimeError("TrainingDiverged: not really")

    executor = InProcessExecutor()
    for tag, fn in (("nan", diverge), ("text", look_alike)):
        executor.submit(tag, fn, resources=Resources(1.0, 0.0))
    reasons = {f.tag: f.reason for f in executor.as_completed()}
    assert reasons == {"nan": "diverged", "text": None}
