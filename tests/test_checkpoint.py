"""Checkpoints off the critical path: schedule, background writes, exact resume, self-healing,
and a finished trial folder that keeps only the evaluated weights."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import BOUND_S

import covbench.training.checkpoint as ckpt
from covbench.folder.layout import CHECKPOINT, WEIGHTS
from covbench.registry import get_model
from covbench.training.checkpoint import Checkpointer, CheckpointPolicy
from covbench.training.loop import Best, EpochEnd, TrainOptions, seed_everything, train_model

CPU = torch.device("cpu")
KEY = "cfg-key-data"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(seed: int = 0, width: int = 4) -> torch.nn.Module:
    seed_everything(seed)
    return get_model("unet").create(in_channels=1, classes=1, width=width)


def data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 32, 32, generator=g)
    return x, (x > 0.7).float()


def train(model, epochs: int, checkpointer: Checkpointer | None = None, resume=None):
    """train_model with a checkpointer wired as a trial wires it; returns (result, ckpt_s per epoch)."""
    blocked: list[float] = []

    def on_epoch(end: EpochEnd) -> None:
        if checkpointer is not None:
            blocked.append(checkpointer.after_epoch(end))

    options = TrainOptions(epochs=epochs, batch_size=4, lr=2e-3, seed=0)
    result = train_model(model, data(), data(4, seed=1), options, CPU, on_epoch=on_epoch, resume=resume)
    return result, blocked


def test_schedule_writes_after_the_first_epoch_then_by_time(tmp_path):
    rare = Checkpointer(tmp_path / "rare", KEY, CheckpointPolicy(every_seconds=3600))
    (tmp_path / "rare").mkdir()
    _, blocked = train(build(), 4, rare)
    rare.close()
    assert rare.stats.epochs_written == [1]  # then nothing until an hour has passed
    assert blocked[0] > 0 and blocked[1:] == [0.0, 0.0, 0.0]

    (tmp_path / "every").mkdir()
    every = Checkpointer(tmp_path / "every", KEY, CheckpointPolicy(every_seconds=0))
    train(build(), 3, every)
    every.close()
    assert every.stats.epochs_written == [1, 2, 3]
    state = torch.load(tmp_path / "every" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 3 and state["config_key"] == KEY
    with pytest.raises(ValueError, match="0 or more seconds"):
        CheckpointPolicy(every_seconds=-1)


@pytest.mark.process
def test_the_write_runs_in_the_background(tmp_path, monkeypatch):
    """after_epoch returns while the file is still being written: only the host copy blocks."""
    release, entered = threading.Event(), threading.Event()
    real = ckpt._durable_save

    def slow_save(state, storage, name):
        entered.set()
        assert release.wait(BOUND_S)
        return real(state, storage, name)

    monkeypatch.setattr(ckpt, "_durable_save", slow_save)
    checkpointer = Checkpointer(tmp_path, KEY, CheckpointPolicy(every_seconds=3600))
    model = build()
    options = TrainOptions(epochs=1, batch_size=4, lr=2e-3)
    opt = torch.optim.Adam(model.parameters())
    checkpointer.after_epoch(EpochEnd({"epoch": 1}, model, opt, Best(0.5, 1, None)))
    assert entered.wait(BOUND_S) and not (tmp_path / CHECKPOINT).exists()  # writing, and we are back
    release.set()
    checkpointer.close()
    assert (tmp_path / CHECKPOINT).exists() and options.epochs == 1
    assert not list(tmp_path.glob("*.tmp"))  # the unique temporary file was renamed away


def test_resume_from_a_checkpoint_on_disk_is_exact(tmp_path):
    full, _ = train(build(seed=7), 3)
    first = Checkpointer(tmp_path, KEY, CheckpointPolicy(every_seconds=0))
    train(build(seed=7), 2, first)  # as if killed after epoch 2's checkpoint
    first.close()
    model = build(seed=99)
    loaded = Checkpointer(tmp_path, KEY).load(model)
    assert loaded.resume is not None and loaded.resume.epoch == 2 and loaded.note is None
    resumed, _ = train(model, 3, resume=loaded.resume)
    assert resumed.history[0]["epoch"] == 3
    assert resumed.history[0]["train_loss"] == pytest.approx(full.history[2]["train_loss"], rel=1e-6)
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.best_state.items():
        assert torch.allclose(resumed.best_state[k].float(), v.float(), atol=1e-6)


def test_finish_keeps_only_the_evaluated_weights(tmp_path):
    checkpointer = Checkpointer(tmp_path, KEY, CheckpointPolicy(every_seconds=0))
    result, _ = train(build(), 2, checkpointer)
    assert (tmp_path / CHECKPOINT).exists() or checkpointer._pending is not None
    checkpointer.finish(Best(result.best_val_dice, result.best_epoch, result.best_state), 2)
    checkpointer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS]  # Adam state gone
    again = Checkpointer(tmp_path, KEY).load(build(seed=5))
    assert again.finished is not None and again.resume is None
    assert again.finished.epoch == result.best_epoch
    assert all(torch.equal(again.finished.state[k], v) for k, v in result.best_state.items())
    assert Checkpointer(tmp_path, "another-key").load(build()).finished is None


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "other model"])
def test_a_damaged_checkpoint_is_set_aside_and_the_trial_starts_over(tmp_path, damage):
    writer = Checkpointer(tmp_path, KEY, CheckpointPolicy(every_seconds=0))
    train(build(width=8 if damage == "other model" else 4), 1, writer)
    writer.close()
    path = tmp_path / CHECKPOINT
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    model = build(width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="could not be used"):
        outcome = Checkpointer(tmp_path, KEY).load(model)
    assert outcome.resume is None and outcome.finished is None
    assert f"{CHECKPOINT} could not be used" in outcome.note
    assert "set aside as checkpoint.pt.corrupt" in outcome.note
    assert (tmp_path / f"{CHECKPOINT}.corrupt").exists() and not path.exists()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # untouched model
    # and a second damaged file does not overwrite the first one set aside
    path.write_bytes(b"")
    with pytest.warns(UserWarning):
        Checkpointer(tmp_path, KEY).load(model)
    assert (tmp_path / f"{CHECKPOINT}.corrupt.1").exists()


def test_a_checkpoint_of_another_configuration_is_ignored_not_set_aside(tmp_path):
    writer = Checkpointer(tmp_path, "old-key", CheckpointPolicy(every_seconds=0))
    train(build(), 1, writer)
    writer.close()
    outcome = Checkpointer(tmp_path, KEY).load(build())
    assert outcome.resume is None and outcome.note is None and (tmp_path / CHECKPOINT).exists()


@pytest.mark.slow
def test_a_run_trial_folder_keeps_weights_logs_checkpoint_time_and_heals(tmp_path):
    """Through the real runner (in-process): the finished folder, the ckpt_s column, the record;
    then a damaged checkpoint of an unfinished trial is set aside, recorded and trained again."""
    from covbench.config import PRESETS, build_config
    from covbench.execution.runner import execute

    cfg = build_config(models=["unet"], n_seeds=2, preset=PRESETS["smoke"], epochs=2)
    out = tmp_path / "run"
    outcome = execute(cfg, out, debug=True, checkpoint_every=0)
    assert len(outcome.done) == 2
    trial = out / "trials" / "unet__seed0__fold0"
    assert sorted(p.name for p in trial.iterdir() if p.suffix in (".pt", ".corrupt")) == [WEIGHTS]
    log = pd.read_csv(trial / "epochs.csv")
    assert list(log["epoch"]) == [1, 2] and "ckpt_s" in log and (log["ckpt_s"] > 0).all()
    record = json.loads((trial / "record.json").read_text())
    assert record["weights"] == WEIGHTS and record["checkpoint_epochs"] == [1, 2, 2]  # 2 + the weights
    assert record["checkpoint_every_seconds"] == 0 and record["checkpoint_blocked_seconds"] > 0
    assert record["deterministic"] is True and record["eval_batch_size"] == 2 * cfg.batch_size
    env = json.loads((out / "environment.json").read_text())
    assert env["checkpoint_every_seconds"] == 0 and env["packing"]["trials_per_gpu"] == 0

    # seed 1 becomes an unfinished trial with a truncated checkpoint
    other = out / "trials" / "unet__seed1__fold0"
    (other / "record.json").unlink()
    (other / WEIGHTS).unlink()
    Path(other / CHECKPOINT).write_bytes(b"PK\x03\x04 truncated")
    with pytest.warns(UserWarning, match="checkpoint.pt could not be used"):
        outcome = execute(cfg, out, debug=True)
    assert outcome.done == ["unet__seed1__fold0"] and outcome.skipped == ["unet__seed0__fold0"]
    healed = json.loads((other / "record.json").read_text())
    assert healed["resumed_from_epoch"] == 0 and "set aside" in healed["checkpoint_note"]
    assert (other / f"{CHECKPOINT}.corrupt").exists()
