"""The hold point of the fault seam (COVBENCH_TEST_HOLD): the tool every test that interrupts a
running trial relies on, so it is checked on its own, in one process, with a real checkpointer."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from helpers import BOUND_S, Hold, wait_for

from covbench import faults
from covbench.faults import FaultHooks
from covbench.folder.layout import CHECKPOINT
from covbench.registry import get_model
from covbench.training.checkpoint import Checkpointer, CheckpointPolicy
from covbench.training.loop import Best, EpochEnd

pytestmark = pytest.mark.process  # what `nox -s stress` repeats, idle and under load


def _in_thread(fn, *args) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, daemon=True)
    t.start()
    return t


def test_nothing_happens_unless_the_variable_is_set(tmp_path, monkeypatch):
    for name in (faults.HOLD, faults.KILL_ONCE, faults.FAIL):
        monkeypatch.delenv(name, raising=False)
    hooks = FaultHooks.from_env()
    assert hooks == FaultHooks() and not hooks.hold_armed
    hooks.at_epoch_end("t", 1)  # returns at once, writes nothing
    monkeypatch.setenv(faults.HOLD, str(tmp_path / "hold"))
    assert FaultHooks.from_env().hold_folder == str(tmp_path / "hold")


def test_a_trial_holds_once_until_released(tmp_path):
    hold = Hold(tmp_path / "hold")
    hooks = FaultHooks(hold_folder=str(hold.folder))
    first = _in_thread(hooks.at_epoch_end, "unet__seed0__fold0", 1)
    other = _in_thread(hooks.at_epoch_end, "unet__seed1__fold0", 1)
    held = hold.wait_held(2)
    assert held["unet__seed0__fold0"] == {"trial": "unet__seed0__fold0", "epoch": 1, "pid": os.getpid()}
    assert first.is_alive() and other.is_alive()  # both wait
    hold.release("unet__seed0__fold0")  # one trial released, the other still held
    first.join(BOUND_S)
    assert not first.is_alive() and other.is_alive()
    again = _in_thread(hooks.at_epoch_end, "unet__seed0__fold0", 2)  # a retry: no second hold
    again.join(BOUND_S)
    assert not again.is_alive()
    hold.release()  # everyone
    other.join(BOUND_S)
    assert not other.is_alive()
    hooks.at_epoch_end("unet__seed2__fold0", 1)  # after a release of all, a new trial passes too


def test_a_hold_nobody_releases_fails_instead_of_hanging(tmp_path, monkeypatch):
    monkeypatch.setattr(faults, "HOLD_LIMIT_S", 0.2)
    with pytest.raises(RuntimeError, match="trial t was never released"):
        FaultHooks(hold_folder=str(tmp_path)).at_epoch_end("t", 1)


def test_the_checkpointer_holds_with_its_checkpoint_on_disk(tmp_path):
    """At the hold the epoch's checkpoint is complete on disk: a test may kill the trial there and
    rely on the retry resuming from that epoch."""
    hold = Hold(tmp_path / "hold")
    trial_dir = tmp_path / "unet__seed0__fold0"
    trial_dir.mkdir()
    hooks = FaultHooks(hold_folder=str(hold.folder))
    checkpointer = Checkpointer(trial_dir, "key", CheckpointPolicy(every_seconds=0), hooks)
    model = get_model("unet").create(in_channels=1, classes=1, width=4)
    end = EpochEnd({"epoch": 1}, model, torch.optim.Adam(model.parameters()), Best(0.5, 1, None))

    def epoch_end() -> None:
        checkpointer.after_epoch(end)
        checkpointer.fault_point()

    t = _in_thread(epoch_end)
    held = hold.wait_held()
    assert held["unet__seed0__fold0"]["epoch"] == 1 and t.is_alive()
    state = torch.load(trial_dir / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1 and state["config_key"] == "key"
    hold.release()
    wait_for(lambda: not t.is_alive(), "the released trial to go on")
    checkpointer.close()
