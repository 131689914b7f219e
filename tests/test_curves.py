"""Training curves in the report: the tidy table read from a real run's epoch logs, the figure,
and the divergence rule (reports/curves.py) with curves on both sides of each of its bounds."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest

from covbench.folder.io import done_trials
from covbench.reports.curves import divergence, divergences, load_curves
from covbench.reports.report import write_report


def test_curves_of_a_real_run_follow_its_epoch_logs_and_records(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    trials = done_trials(tiny_run, config["_key"])
    curves = load_curves(trials)
    frame = curves.frame
    assert curves.missing == []
    assert sorted(frame["model"].unique()) == ["resunet", "unet"]
    assert len(frame) == sum(r.epochs for _, r in trials)  # one row per trial and epoch
    for tdir, record in trials:
        rows = frame[(frame["model"] == record.model) & (frame["seed"] == record.seed)]
        with (tdir / "epochs.csv").open() as f:
            logged = list(csv.DictReader(f))
        assert rows["epoch"].tolist() == [int(r["epoch"]) for r in logged]
        assert np.allclose(rows["train_loss"], [float(r["train_loss"]) for r in logged])
        assert np.allclose(rows["val_dice"], [float(r["val_dice"]) for r in logged])
        assert set(rows["selected_epoch"]) == {record.best_epoch}
        best = rows.loc[rows["epoch"] == record.best_epoch, "val_dice"].item()
        assert best == pytest.approx(record.best_val_dice)  # the selected epoch is the best one
    assert divergences(curves) == []


def test_report_shows_the_curves_and_warns_about_a_diverged_seed(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    report = write_report(run)
    assert (run / "figures" / "training_curves.png").stat().st_size > 0
    assert (run / "figures" / "training_curves.svg").exists()
    assert "![Training loss (solid) and validation Dice (dashed)" in report.markdown
    assert "figures/training_curves.png" in report.markdown
    assert not any("diverged" in w for w in report.summary["warnings"])
    # one seed's loss turns NaN at epoch 2: the report says which, in every warning list
    log = run / "trials" / "unet__seed1__fold0" / "epochs.csv"
    with log.open() as f:
        rows = list(csv.DictReader(f))
    rows[1]["train_loss"] = "nan"
    with log.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = write_report(run)
    expected = "model unet, seed 1: training diverged (training loss not finite from epoch 2)"
    assert [w for w in report.summary["warnings"] if "diverged" in w] == [
        expected + "; its test scores are in the table all the same."
    ]
    assert expected in (run / "report.md").read_text()
    assert expected in (run / "report.html").read_text()


def test_a_trial_without_an_epoch_log_is_named_in_the_caption(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "trials" / "resunet__seed0__fold0" / "epochs.csv").unlink()
    report = write_report(run)
    assert "No epoch log for: resunet__seed0__fold0." in report.markdown


DESCENT = [1.0, 0.2, 0.3, 0.3, 0.3, 0.3]  # minimum 0.2 at epoch 2: a descent of 0.8


@pytest.mark.parametrize(
    ("loss", "diverged"),
    [
        # the last quarter (2 of 8 epochs) climbed back more than half the descent (0.41 > 0.4) ...
        (DESCENT + [0.61, 0.61], True),
        # ... or just less (0.39): noise around a plateau, not divergence
        (DESCENT + [0.59, 0.59], False),
        ([1.0, 0.6, 0.4, 0.3, 0.28, 0.27, 0.29, 0.26], False),  # converged, noisy
        ([1.0, 0.5, 0.3, 0.35, 0.5, 0.7, 0.8, 0.9], True),  # rose for good
        ([1.0, 0.5, 0.3, 0.9, 0.9, 0.3, 0.28, 0.27], False),  # a spike it recovered from
        ([0.9, 0.91, 0.89, 0.9, 0.92, 0.9, 0.91, 0.93], False),  # flat, never learned: under the floor
        ([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2], True),  # only ever rose
        ([1.0, 0.9, 1.5], False),  # too few epochs to judge a trend
        ([1.0, 0.5, math.nan, math.nan], True),  # NaN at once
        ([1.0, math.inf], True),
    ],
)
def test_divergence_rule(loss, diverged):
    assert (divergence(np.array(loss)) is not None) is diverged


def test_divergence_names_the_epoch():
    assert divergence(np.array([1.0, 0.5, math.nan])) == "training loss not finite from epoch 3"
    reason = divergence(np.array([1.0, 0.5, 0.3, 0.35, 0.5, 0.7, 0.8, 0.9]), np.arange(11, 19))
    assert reason is not None and "minimum 0.3 at epoch 13" in reason and "last 2 epoch(s)" in reason
