"""The gate cannot be fooled: a baseline that is not a valid covbench summary exits 2 naming the
first bad field (never "All checks passed"), and a history database that is locked, or a file that
is empty, says so instead of "not a covbench history database" or a silent new database."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from covbench.cli import app
from covbench.errors import CovbenchError
from covbench.reports import history
from covbench.reports.compare import load_summary
from covbench.reports.summary_check import validate_summary

runner = CliRunner()
BASELINE = Path(__file__).resolve().parents[1] / "reports" / "baselines" / "ci.json"


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads(BASELINE.read_text())


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_shipped_baseline_is_a_valid_summary(good):
    validate_summary(good, BASELINE)  # raises if not


def _with(good: dict, path: tuple[str, ...], value) -> dict:
    data = copy.deepcopy(good)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


MEAN = ("models", "resunet", "assd", "mean")  # the first metric entry of the shipped baseline


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (MEAN, float("nan"), "models.resunet.assd.mean is nan, expected a finite number"),
        (MEAN, float("inf"), "models.resunet.assd.mean is inf, expected a finite number"),
        (MEAN, "0.5", "models.resunet.assd.mean is '0.5', expected a number"),
        (MEAN, True, "models.resunet.assd.mean is True, expected a number"),
        (MEAN, 10**400, "models.resunet.assd.mean is an integer too large"),
        (("models", "resunet", "assd", "sd"), -float("inf"), "models.resunet.assd.sd is -inf"),
        (("models", "resunet", "assd", "n"), 2.5, "models.resunet.assd.n is 2.5, expected a whole number"),
        (("models", "resunet", "dice"), 0.9, "models.resunet.dice is a float, expected an object"),
        (("models", "resunet"), [], "models.resunet is a list, expected an object"),
        (("models",), {}, "models is empty"),
        (("unit",), "furlong", "unit is 'furlong', expected one of slice, patient"),
        (("per_case", "unet", "dice", "0/x:0001"), float("nan"), "per_case.unet.dice.0/x:0001 is nan"),
    ],
)
def test_a_bad_field_is_named(good, path, value, message):
    with pytest.raises(CovbenchError, match="not a valid covbench summary") as err:
        validate_summary(_with(good, path, value), "BASELINE b.json")
    assert message in str(err.value)
    assert str(err.value).startswith("BASELINE b.json: ")


def test_a_summary_of_nothing_gates_nothing(good):
    data = copy.deepcopy(good)
    for entry in data["models"].values():
        for stats in entry.values():
            stats["mean"], stats["n"] = None, 0
    with pytest.raises(CovbenchError, match="models hold no metric with a mean"):
        validate_summary(data, "b.json")
    data["models"]["unet"]["dice"]["n"] = 8
    with pytest.raises(CovbenchError, match="models.unet.dice.mean is null although n is 8"):
        validate_summary(data, "b.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"dice": 0.9}', "models is missing"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"models": {"unet": {"dice": {"mean": 1' + "0" * 5000 + "}}}}", "not readable JSON"),
        ("[1, 2]", "the summary is a list, expected an object"),
    ],
)
def test_foreign_json_as_baseline_exits_2_in_one_line(tmp_path, text, message):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(text)
    with pytest.raises(CovbenchError, match=message):
        load_summary(baseline, "BASELINE")
    result = runner.invoke(app, ["compare", str(baseline), str(BASELINE)])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert message in _flat(result.output)


def test_nan_means_in_the_baseline_are_refused_not_passed_as_new(tmp_path, good):
    data = copy.deepcopy(good)
    for entry in data["models"].values():
        for stats in entry.values():
            stats["mean"] = float("nan")
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(data))  # Python writes NaN, as a hand-edited or foreign file may
    result = runner.invoke(app, ["compare", str(baseline), str(BASELINE)])
    assert result.exit_code == 2, result.output
    assert "checks passed" not in result.output
    assert f"BASELINE {baseline}: not a valid covbench summary: models.resunet.assd.mean is nan" in _flat(
        result.output
    )


# --- the history database ------------------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_history_waits_a_bounded_time_then_says_locked(tmp_path, monkeypatch):
    db = tmp_path / "history.sqlite"
    history._connect(db, create=True).close()  # an empty but valid history
    monkeypatch.setattr(history, "LOCK_WAIT_SECONDS", 1.0)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = runner.invoke(app, ["history", str(db)])
        waited = time.monotonic() - started
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert result.exit_code == 2, result.output
    text = _flat(result.output)
    assert f"history {db}: locked by another process for more than 1 s" in text
    assert "not a covbench history database" not in text
    assert 1.0 <= waited < 15
    assert runner.invoke(app, ["history", str(db)]).exit_code == 0  # free again: reads fine


def test_an_empty_file_is_not_a_history_database(tmp_path):
    db = tmp_path / "history.sqlite"
    db.touch()
    result = runner.invoke(app, ["history", str(db)])
    assert result.exit_code == 2, result.output
    assert f"history {db}: an empty file, not a covbench history database" in _flat(result.output)
    with pytest.raises(CovbenchError, match="an empty file"):
        history._connect(db, create=True)  # what `track` opens: it must not turn it into one either
    assert db.stat().st_size == 0
