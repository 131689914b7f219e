"""A damaged file in a run folder never reaches the user as a traceback.

Each test copies one finished run, damages one kind of file the way a crash or a full disk does
(zero-length, cut short), then runs `covbench report` and the same `covbench run` again: the
report either works or says in one line what to do (exit 2), and the run heals the folder (the
damaged file is set aside as NAME.corrupt with a one-line warning, the trial that owned it runs
again where its results are affected) and exits 0. checkpoint.pt is covered with the checkpointer.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from covbench.cli import app

runner = CliRunner()
ARGS = ["run", "--preset", "smoke", "--models", "unet", "--seeds", "2", "--epochs", "1"]
TRIAL = "trials/unet__seed0__fold0"
KEY = ["model", "seed", "fold", "case"]


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged") / "run"
    result = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def _flat(text: str) -> str:
    return " ".join(text.split())


def _healthy(out: Path) -> None:
    """Both trials done, every file readable again, one row per case."""
    for t in ("unet__seed0__fold0", "unet__seed1__fold0"):
        record = json.loads((out / "trials" / t / "record.json").read_text())
        assert record["status"] == "done"
        rows = pd.read_csv(out / "trials" / t / "cases.csv")
        assert len(rows) == record["n_test"]
        with np.load(out / "trials" / t / "predictions.npz") as data:
            assert data["prob"].shape[0] == record["n_test"]
    json.loads((out / "config.json").read_text())
    json.loads((out / "environment.json").read_text())
    rows = pd.read_csv(out / "cases.csv")
    assert not rows.duplicated(KEY).any() and rows.groupby(["model", "seed"]).ngroups == 2


# file, damage; what `report` says first (exit code, text; None: no report first); what the run
# says; how many trials it trains; whether the file ends up set aside as NAME.corrupt
CASES: list[tuple[str, Callable[[Path], None], int | None, str, str, int, bool]] = [
    ("config.json", _empty, 0, "config.json is damaged (empty)",
     "its trials match this configuration, so this run writes it again", 0, True),
    ("environment.json", _empty, 0, "",
     "environment.json is damaged (empty): this run writes a new one", 0, True),
    (f"{TRIAL}/record.json", _empty, None, "",
     "record.json is damaged (empty): the trial counts as not done and is run again", 1, True),
    (f"{TRIAL}/record.json", _cut_in_half, 0, "record.json is damaged (not valid JSON", "", 1, True),
    (f"{TRIAL}/cases.csv", _cut_in_half, 0, "",
     "cases.csv is damaged (4 rows for 8 test cases): the trial runs again", 1, True),
    (f"{TRIAL}/predictions.npz", _cut_in_half, 0, "qualitative overlays skipped",
     "predictions.npz is damaged (not a readable .npz", 1, True),
    ("cases.csv", _empty, 2, "`covbench run --resume", "", 0, False),  # the run's table: rebuilt
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "damage", "report_exit", "report_says", "run_says", "rerun", "set_aside"),
    CASES,
    ids=[f"{c[0].replace(TRIAL, 'trial')}-{c[1].__name__[1:]}" for c in CASES],
)
def test_damaged_file_is_healed(
    finished, tmp_path, name, damage, report_exit, report_says, run_says, rerun, set_aside
):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    damage(out / name)

    if report_exit is not None:
        report = runner.invoke(app, ["report", str(out)])
        _no_traceback(report)
        assert report.exit_code == report_exit, report.output
        assert report_says in _flat(report.output)
        if report_exit == 2:
            assert "error:" in report.output and str(out / name) in _flat(report.output)

    result = runner.invoke(app, [*ARGS, "--out", str(out)])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    assert run_says in _flat(result.output)
    assert f"{rerun} trials run, {2 - rerun} already done" in result.output
    assert (out / (name + ".corrupt")).exists() == set_aside  # set aside, not deleted
    _healthy(out)


@pytest.mark.slow
def test_damaged_epoch_log_of_an_unfinished_trial_is_replaced_whole(finished, tmp_path):
    """The driver writes a trial's log whole, from what the trial returns (its checkpoints carry
    the epochs of earlier attempts): a log cut mid-row by a crash is simply written anew."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    log = out / TRIAL / "epochs.csv"
    whole = log.read_text()
    (out / TRIAL / "record.json").unlink()  # killed before the record: not done
    log.write_bytes(log.read_bytes()[:-7])  # the last row cut short

    result = runner.invoke(app, [*ARGS, "--out", str(out)])
    _no_traceback(result)
    assert result.exit_code == 0, result.output
    assert "1 trials run, 1 already done" in result.output
    rewritten = log.read_text()
    assert [ln.split(",")[0] for ln in rewritten.splitlines()] == [
        ln.split(",")[0] for ln in whole.splitlines()
    ]
    _healthy(out)


@pytest.mark.slow
def test_damaged_config_blocks_resume_with_one_line(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    _empty(out / "config.json")
    result = runner.invoke(app, ["run", "--resume", str(out)])
    _no_traceback(result)
    assert result.exit_code == 2
    assert "config.json is damaged (empty); run the original `covbench run` command" in _flat(result.output)


@pytest.mark.slow
def test_damaged_config_with_trials_of_another_configuration_is_refused(finished, tmp_path):
    """Nothing then says what the folder holds: setting config.json aside could mix two runs."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    _empty(out / "config.json")
    result = runner.invoke(app, [*ARGS[:-1], "2", "--out", str(out)])  # --epochs 2
    _no_traceback(result)
    assert result.exit_code == 2, result.output
    assert "holds trials of another configuration" in _flat(result.output)
    assert (out / "config.json").read_bytes() == b""  # left as it was


@pytest.mark.slow
def test_rows_of_another_configuration_never_enter_the_table(finished, tmp_path):
    """collect_cases takes only trials whose record carries the run's own key."""
    from covbench.folder.state import collect_cases

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    assert collect_cases(out).groupby(["model", "seed"]).ngroups == 2
    path = out / TRIAL / "record.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "config_key": "0000000000000000-aaaaaaaaaaaa"}))
    rows = collect_cases(out)
    assert sorted(rows["seed"].unique()) == [1]  # seed 0's trial belongs to another configuration
