"""Runs that survive: a killed worker is retried, a failing trial is reported, Ctrl-C keeps what
finished, and a rerun (same command or `--resume DIR`) continues without re-training anything.

Every run here goes through real Ray workers (the session's `ray_session`) on the smoke preset.
Kills are real: the `COVBENCH_TEST_KILL_ONCE` hook (covbench.training.trial) SIGKILLs the worker process
right after it saved an epoch checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import Hold
from typer.testing import CliRunner

from covbench.cli import app
from covbench.config import PRESETS, build_config
from covbench.errors import CovbenchError
from covbench.execution.runner import execute
from covbench.folder.key import RunKey
from covbench.folder.state import check_data_key, check_run_dir

runner = CliRunner()
KEY = ["model", "seed", "fold", "case"]


def _records(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("trials/*/record.json"))}


def _epochs(out: Path, trial: str) -> list[int]:
    return pd.read_csv(out / "trials" / trial / "epochs.csv")["epoch"].tolist()


def _one_row_per_case(out: Path, n_trials: int) -> pd.DataFrame:
    rows = pd.read_csv(out / "cases.csv")
    assert not rows.duplicated(KEY).any()
    assert rows.groupby(["model", "seed", "fold"]).ngroups == n_trials
    per_trial = pd.concat(pd.read_csv(p) for p in out.glob("trials/*/cases.csv"))
    assert len(rows) == len(per_trial)  # every finished trial's rows, each once
    return rows


@pytest.mark.process
@pytest.mark.slow
def test_killed_worker_is_retried_and_resumes_from_its_checkpoint(ray_session, tmp_path, monkeypatch):
    """Also: --split kfold --folds 2 gives one trial per fold, and split.json lists each fold."""
    marker = tmp_path / "killed"
    monkeypatch.setenv("COVBENCH_TEST_KILL_ONCE", str(marker))
    out = tmp_path / "run"
    args = [
        "run",
        "--preset",
        "smoke",
        "--models",
        "unet",
        "--seeds",
        "1",
        "--split",
        "kfold",
        "--folds",
        "2",
    ]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert marker.exists()  # a worker really was killed
    records = _records(out)
    assert sorted(records) == ["unet__seed0__fold0", "unet__seed0__fold1"]
    retried = [name for name, r in records.items() if r["attempts"] == 2]
    assert len(retried) == 1, records
    (name,) = retried
    assert records[name]["resumed_from_epoch"] == 1  # the retry trained epoch 2 only
    assert _epochs(out, name) == [1, 2]
    other = next(r for n, r in records.items() if n != name)
    assert other["attempts"] == 1 and other["resumed_from_epoch"] == 0
    assert "attempt 2" in result.output

    split = json.loads((out / "split.json").read_text())
    assert split["strategy"] == "kfold" and split["n_folds"] == 2 and len(split["folds"]) == 2
    tested = [p for f in split["folds"] for p in f["test"]]
    assert len(tested) == len(set(tested))  # every patient tested in exactly one fold
    rows = _one_row_per_case(out, 2)
    for f in split["folds"]:
        assert set(rows[rows.fold == f["fold"]]["patient"]) <= set(f["test"])
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "complete" and env["trials"][name]["attempts"] == 2
    assert env["resources_per_trial"]["gpus"] == 0  # CPU-only: no GPU requested


@pytest.mark.process
@pytest.mark.slow
def test_failing_trial_is_reported_and_a_rerun_trains_only_it(ray_session, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "--preset", "smoke", "--models", "unet,resunet", "--seeds", "1", "--out", str(out)]
    monkeypatch.setenv("COVBENCH_TEST_FAIL", "unet__*")
    result = runner.invoke(app, [*args, "--cpus-per-trial", "2"])
    assert result.exit_code == 1, result.output
    assert "1 trial(s) failed: unet__seed0__fold0: RuntimeError" in " ".join(result.output.split())
    failure = json.loads((out / "trials/unet__seed0__fold0/failure.json").read_text())
    assert "fails on purpose" in failure["error"] and failure["status"] == "failed"
    assert not (out / "trials/unet__seed0__fold0/record.json").exists()
    assert (out / "summary.json").is_file() and (out / "table.md").is_file()  # report of the rest
    rows = _one_row_per_case(out, 1)
    assert set(rows.model) == {"resunet"}
    before = _records(out)
    assert all(r["threads"] == 2 for r in before.values())  # torch threads follow --cpus-per-trial
    assert json.loads((out / "environment.json").read_text())["failed"] == ["unet__seed0__fold0"]

    monkeypatch.delenv("COVBENCH_TEST_FAIL")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 trials run, 1 already done" in result.output
    after = _records(out)
    for name, record in before.items():  # nothing finished was trained again
        assert (after[name]["started"], after[name]["finished"]) == (record["started"], record["finished"])
    assert not (out / "trials/unet__seed0__fold0/failure.json").exists()
    _one_row_per_case(out, 2)
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "complete" and env["previous_sessions"][-1]["status"] == "failed"


@pytest.mark.process
@pytest.mark.slow
def test_half_trained_trial_continues_with_resume_dir(ray_session, tmp_path, monkeypatch):
    """With no retries, the killed trial fails after its epoch-1 checkpoint; `--resume DIR` then
    trains epoch 2 only, reading the configuration from DIR/config.json."""
    out = tmp_path / "run"
    monkeypatch.setenv("COVBENCH_TEST_KILL_ONCE", str(tmp_path / "killed"))
    args = ["run", "--preset", "smoke", "--models", "resunet", "--seeds", "2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--max-retries", "0"])
    assert result.exit_code == 1, result.output
    failed = [p.parent.name for p in out.glob("trials/*/failure.json")]
    assert len(failed) == 1, result.output
    (name,) = failed
    assert (
        name in result.output
        and "Worker" in json.loads((out / "trials" / name / "failure.json").read_text())["error"]
    )
    # its epoch log travels in its checkpoint; epochs.csv is the driver's, written once it finishes
    checkpoint = torch.load(out / "trials" / name / "checkpoint.pt", weights_only=True)
    assert [row["epoch"] for row in checkpoint["epoch_log"]] == [1]
    assert not (out / "trials" / name / "epochs.csv").exists()
    done_before = _records(out)
    assert list(done_before) != [name] and len(done_before) == 1

    monkeypatch.delenv("COVBENCH_TEST_KILL_ONCE")
    refused = runner.invoke(app, ["run", "--resume", str(out), "--epochs", "3"])
    assert refused.exit_code == 2 and "drop --epochs" in refused.output
    result = runner.invoke(app, ["run", "--resume", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 trials run, 1 already done" in result.output
    records = _records(out)
    assert records[name]["resumed_from_epoch"] == 1 and records[name]["epochs"] == 2
    assert _epochs(out, name) == [1, 2]
    (kept,) = done_before
    assert records[kept]["finished"] == done_before[kept]["finished"]
    _one_row_per_case(out, 2)


@pytest.mark.process
@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_the_same_command_resumes(ray_session, tmp_path, monkeypatch):
    """Every trial holds after its epoch (COVBENCH_TEST_HOLD); the first to hold is let go, and
    Ctrl-C comes when it is done: exactly one trial finished, whatever the machine's speed."""
    cfg = build_config(models=["unet", "resunet"], n_seeds=2, preset=PRESETS["smoke"], epochs=1)
    out = tmp_path / "run"
    hold = Hold(tmp_path / "hold").arm(monkeypatch)
    fired = []

    def interrupt_after_first(kind: str, info: dict) -> None:
        if kind == "start":  # all submitted; the workers train while the driver waits here
            hold.release(next(iter(hold.wait_held())))  # one trial that holds may finish
        if kind == "done" and not fired:
            fired.append(info["trial"])
            raise KeyboardInterrupt  # what Ctrl-C raises in the driver

    with pytest.raises(KeyboardInterrupt):
        execute(cfg, out, on_event=interrupt_after_first)
    first = _records(out)
    assert list(first) == fired  # the one released trial; the held ones were stopped unfinished
    env = json.loads((out / "environment.json").read_text())
    assert env["status"] == "interrupted"
    _one_row_per_case(out, len(first))

    monkeypatch.delenv("COVBENCH_TEST_HOLD")
    outcome = execute(cfg, out)
    assert sorted(outcome.skipped) == sorted(first) and len(outcome.done) == 4 - len(first)
    after = _records(out)
    assert len(after) == 4
    for name, record in first.items():
        assert after[name]["finished"] == record["finished"]
    _one_row_per_case(out, 4)

    changed = build_config(models=["unet"], n_seeds=2, preset=PRESETS["smoke"], epochs=2)
    with pytest.raises(Exception, match=r"different configuration \(changed: epochs\)"):
        execute(changed, out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "3"], "--folds 3 needs --split kfold"),
        (["--split", "kfold", "--folds", "1"], "--split kfold needs --folds 2 or more"),
        (["--split", "nosuch"], "unknown split 'nosuch'"),
        (["--gpus-per-trial", "1"], "--gpus-per-trial 1 but the Ray cluster has no GPUs"),
    ],
)
def test_bad_run_options_exit_2(ray_session, tmp_path, args, message):
    result = runner.invoke(app, ["run", "--preset", "smoke", "--models", "unet", "--seeds", "1", *args,
                                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_resume_needs_a_run_folder(tmp_path):
    result = runner.invoke(app, ["run", "--resume", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "no config.json there" in result.output


def test_same_config_on_different_data_is_refused(tmp_path):
    cfg = build_config(models=["unet"], n_seeds=1, preset=PRESETS["smoke"])
    (tmp_path / "config.json").write_text(json.dumps({**cfg.to_dict(), "_key": f"{cfg.key()}-aaaaaaaaaaaa"}))
    stored = check_run_dir(tmp_path, cfg)  # same configuration: fine
    check_data_key(tmp_path, RunKey.parse(f"{cfg.key()}-aaaaaaaaaaaa"), stored)
    with pytest.raises(CovbenchError, match="different data .fingerprint aaaaaaaaaaaa, now bbbbbbbbbbbb"):
        check_data_key(tmp_path, RunKey.parse(f"{cfg.key()}-bbbbbbbbbbbb"), stored)
