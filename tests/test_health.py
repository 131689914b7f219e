"""Training health: the signals of one epoch log (covbench.training.health) and what the report makes of
them (covbench.reports.health): flagged seeds named, verdicts re-derived without them, marked."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd

from covbench.folder.record import TrialRecord
from covbench.reports import curves as training
from covbench.reports import health
from covbench.reports.table import verdict_table
from covbench.reports.verdicts import UnitValues, verdicts
from covbench.training.health import COLLAPSE_DROP, Health, assess

# The main job's Res-UNet seeds 4 and 1 (`covbench run --models all --seeds 5`, cpu preset, before
# the recipe evaluated the final weights): seed 4's best validation Dice was epoch 7's, and those
# weights scored 0.594 test Dice against 0.704 for its final ones; seed 1 trained as the others.
SEED4_LOSS = [0.9197, 0.6528, 0.3455, 0.2912, 0.2773, 0.2287, 0.2264, 0.2736, 0.2215, 0.2419, 0.1887,
              0.1882, 0.1626, 0.1672, 0.2091, 0.1679, 0.1555, 0.147, 0.1395, 0.1364, 0.1344, 0.1316,
              0.1318, 0.1407]  # fmt: skip
SEED4_VAL = [0.1535, 0.2248, 0.5681, 0.5697, 0.6189, 0.6227, 0.741, 0.5915, 0.6892, 0.7217, 0.7052,
             0.6755, 0.6838, 0.6873, 0.7212, 0.7081, 0.7182, 0.6969, 0.7216, 0.7199, 0.6937, 0.6937,
             0.6948, 0.693]  # fmt: skip
SEED1_LOSS = [0.8466, 0.4971, 0.334, 0.2958, 0.3109, 0.2285, 0.2367, 0.2134, 0.1661, 0.1948, 0.1864,
              0.1571, 0.1673, 0.1545, 0.1581, 0.1487, 0.168, 0.1553, 0.1441, 0.137, 0.1364, 0.1421,
              0.1397, 0.1428]  # fmt: skip
SEED1_VAL = [0.2357, 0.3585, 0.6685, 0.6446, 0.6664, 0.7303, 0.6823, 0.7035, 0.707, 0.7429, 0.7232,
             0.7613, 0.7225, 0.7435, 0.7566, 0.7365, 0.7161, 0.7293, 0.7423, 0.7306, 0.7301, 0.7332,
             0.7335, 0.7306]  # fmt: skip


def log(loss: list[float], val: list[float] | None = None) -> list[dict]:
    val = val if val is not None else [math.nan] * len(loss)
    rows, best, best_epoch = [], -1.0, 0
    for i, (loss_i, v) in enumerate(zip(loss, val, strict=True), start=1):
        if math.isfinite(v) and v > best:
            best, best_epoch = v, i
        rows.append({"epoch": i, "train_loss": loss_i, "val_dice": v, "best_epoch": best_epoch or i})
    return rows


def test_the_main_jobs_diverging_seed_is_flagged_and_a_healthy_one_is_not():
    bad = assess(log(SEED4_LOSS, SEED4_VAL), epochs=24)
    assert bad.selected_epoch == 7 and bad.flags == [
        "evaluated the weights of epoch 7 of 24 (best validation Dice)"
    ]
    good = assess(log(SEED1_LOSS, SEED1_VAL), epochs=24)
    assert good.selected_epoch == 12 and good.flags == [] and not good.flagged
    assert good.val_peak == max(SEED1_VAL) and math.isclose(good.val_tail, np.mean(SEED1_VAL[-6:]))


def test_final_weights_are_never_an_early_selection():
    """The same log with the final weights evaluated (the cpu preset now), or without validation."""
    assert assess(log(SEED4_LOSS, SEED4_VAL), epochs=24, selected_epoch=24).flags == []
    unvalidated = assess(log(SEED4_LOSS), epochs=24, selected_epoch=3)
    assert not unvalidated.validated and unvalidated.flags == []


def test_validation_collapse_loss_spike_and_non_finite_loss():
    val = [0.3, 0.6, 0.8, 0.8, 0.75, 0.7, 0.65, 0.6]  # peak 0.8, last quarter 0.625
    collapsed = assess(log([1, 0.5, 0.3, 0.25, 0.24, 0.23, 0.22, 0.21], val), selected_epoch=8)
    assert collapsed.flags == [
        "validation Dice collapsed from 0.800 (epoch 3) to 0.625 over the last 2 epoch(s)"
    ]
    just_inside = [0.3, 0.6, 0.8, 0.8, 0.75, 0.7, 0.8 - COLLAPSE_DROP + 0.01, 0.8 - COLLAPSE_DROP + 0.01]
    assert assess(log([1, 0.5, 0.3, 0.25, 0.24, 0.23, 0.22, 0.21], just_inside), selected_epoch=8).flags == []
    spiky = assess(log([1, 0.5, 0.3, 0.2, 0.31, 0.19, 0.18, 0.5]))  # 0.31 > 1.5 x 0.2; 0.5 > 1.5 x 0.18
    assert spiky.spike_epochs == [5, 8] and "epoch(s) 5, 8" in spiky.flags[0]
    assert assess(log([1, 0.5, 0.3, 0.2, 0.29, 0.19])).spike_epochs == []  # 0.29 < 1.5 x 0.2
    assert assess(log([1, 0.5, 0.4])).spike_epochs == []  # the steep start never counts
    broken = assess(log([1, 0.5, math.nan, math.inf]))
    assert broken.nonfinite_epoch == 3 and broken.flags[0] == "training loss not finite from epoch 3"


def test_health_survives_record_json_and_old_records_have_none():
    h = assess(log(SEED4_LOSS, SEED4_VAL), epochs=24)
    record = TrialRecord.from_dict(json.loads(json.dumps({"model": "resunet", "health": h.to_dict()})))
    assert Health.from_dict(record.health) == h and record.to_dict()["health"] == h.to_dict()
    old = TrialRecord.from_dict({"model": "resunet", "seed": 4, "status": "done"})
    assert old.health is None and "health" not in old.extra


def _trial(root, name: str, model: str, seed: int, loss, val, best_epoch: int, with_health: bool):
    folder = root / "trials" / name
    folder.mkdir(parents=True)
    rows = log(loss, val)
    with (folder / "epochs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    record = {
        "model": model,
        "seed": seed,
        "fold": 0,
        "status": "done",
        "epochs": len(loss),
        "best_epoch": best_epoch,
    }
    if with_health:
        record["health"] = assess(rows, len(loss), best_epoch).to_dict()
    return folder, record


def test_seed_flags_read_the_record_or_derive_from_an_old_folders_epoch_log(tmp_path):
    trials = [
        _trial(tmp_path, "resunet__seed4__fold0", "resunet", 4, SEED4_LOSS, SEED4_VAL, 7, with_health=False),
        _trial(tmp_path, "resunet__seed1__fold0", "resunet", 1, SEED1_LOSS, SEED1_VAL, 12, with_health=True),
        _trial(tmp_path, "unet__seed0__fold0", "unet", 0, SEED1_LOSS, SEED1_VAL, 12, with_health=False),
    ]
    # a trial whose record says it is flagged though its log would not: the record is what counts
    folder, record = _trial(tmp_path, "unet__seed1__fold0", "unet", 1, SEED1_LOSS, SEED1_VAL, 12, True)
    record["health"]["flags"] = ["validation Dice collapsed (recorded)"]
    trials.append((folder, record))
    trials = [(folder, TrialRecord.from_dict(record)) for folder, record in trials]
    curves = training.load_curves(trials)
    flags = health.seed_flags(trials, curves, training.divergences(curves))
    assert [(f.model, f.seed, f.reasons) for f in flags] == [
        ("resunet", 4, ["evaluated the weights of epoch 7 of 24 (best validation Dice)"]),
        ("unet", 1, ["validation Dice collapsed (recorded)"]),
    ]
    assert flags[0].line() == "resunet, seed 4: evaluated the weights of epoch 7 of 24 (best validation Dice)"


def _values(bad_seed_value: float) -> UnitValues:
    """Model a: 4 seeds, seed 3 far below the other three; model b: 4 steady seeds, 0.05 below
    a's good seeds. 20 units, small unit-by-seed noise."""
    rng = np.random.default_rng(1)
    unit_effect = rng.normal(0, 0.05, 20)
    rows = []
    for model, levels in (("a", [0.80, 0.80, 0.80, bad_seed_value]), ("b", [0.75] * 4)):
        for seed, level in enumerate(levels):
            for u in range(20):
                rows.append((model, seed, f"p{u:02d}", level + unit_effect[u] + rng.normal(0, 0.01)))
    frame = pd.DataFrame(rows, columns=["model", "seed", "unit", "dice"])
    return UnitValues("patient", True, frame)


def test_a_verdict_that_depends_on_a_flagged_seed_is_marked_with_both_readings():
    uv = _values(bad_seed_value=0.40)
    stated = {m: v.to_dict() for m, v in verdicts(uv, None, "dice").items()}
    assert stated["dice"]["pairs"][0]["verdict"] == "undecided"  # the diverged seed's variance
    flags = [health.SeedFlag("a", 3, 0, ["evaluated the weights of epoch 7 of 24 (best validation Dice)"])]
    found = health.dependence(uv, "dice", stated, flags)
    assert [(d.a, d.b, d.verdict, d.without, d.left_out, d.changed) for d in found] == [
        ("a", "b", "undecided", "a better", {"a": [3]}, True)
    ]
    # the seed stays in: the stated verdict and every mean are the ones with all seeds
    assert stated["dice"]["means"]["a"] < stated["dice"]["means"]["b"]
    health.mark_verdicts(stated, found)
    pair = stated["dice"]["pairs"][0]
    assert (
        pair["health_dependent"]
        and pair["verdict"] == "undecided"
        and pair["verdict_without_flagged"] == "a better"
    )
    table = verdict_table(stated)
    assert table.rows[0][1][-1].text == "undecided ‡" and "‡" in table.caption
    assert '"undecided" with every seed, "a better" without a seed(s) 3' in found[0].line()
    lines = health.markdown(flags, found)
    assert lines[2].startswith("- a, seed 3: evaluated the weights of epoch 7") and "‡ a vs b" in lines[4]


def test_a_verdict_that_holds_without_the_flagged_seed_is_not_marked():
    uv = _values(bad_seed_value=0.79)  # flagged, but it trained like the others
    stated = {m: v.to_dict() for m, v in verdicts(uv, None, "dice").items()}
    flags = [health.SeedFlag("a", 3, 0, ["training loss spiked"])]
    found = health.dependence(uv, "dice", stated, flags)
    assert [d.changed for d in found] == [False] and found[0].verdict == found[0].without == "a better"
    health.mark_verdicts(stated, found)
    assert stated["dice"]["pairs"][0]["health_dependent"] is False
    assert (
        verdict_table(stated).rows[0][1][-1].text == "a better" and "‡" not in verdict_table(stated).caption
    )
    assert health.dependence(uv, "dice", stated, []) == []  # nothing flagged: nothing re-derived
    assert health.markdown([], [])[0].startswith("Training health: no seed was flagged")


def test_a_real_runs_report_names_a_flagged_seed_of_an_older_folder(tiny_run, tmp_path):
    """Through the real command (tiny_run): every record carries its health, nothing is flagged;
    then one trial is made to look like the main job's seed 4 in a folder written before the
    `health` field (its record loses it): the report derives the flag from epochs.csv, names the
    seed in the seed view and the HTML, and keeps the stated verdicts those of every seed."""
    import shutil

    from covbench.reports.report import write_report

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    records = sorted((run / "trials").glob("*/record.json"))
    assert records and all(json.loads(p.read_text())["health"]["flags"] == [] for p in records)
    clean = write_report(run, figures=False)
    assert clean.summary["health"] == {"flagged_seeds": [], "dependent_pairs": []}
    assert "Training health: no seed was flagged" in clean.markdown
    trial = run / "trials" / "unet__seed1__fold0"
    rows = log(SEED4_LOSS, SEED4_VAL)
    with (trial / "epochs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    record = json.loads((trial / "record.json").read_text())
    del record["health"]
    record.update(epochs=24, best_epoch=7)
    (trial / "record.json").write_text(json.dumps(record))
    report = write_report(run, figures=False)
    line = "unet, seed 1: evaluated the weights of epoch 7 of 24 (best validation Dice)"
    assert f"- {line}" in report.markdown and line in (run / "report.html").read_text()
    assert report.summary["health"]["flagged_seeds"] == [
        {"model": "unet", "seed": 1, "fold": 0, "reasons": [line.split(": ", 1)[1]]}
    ]
    (pair,) = report.summary["health"]["dependent_pairs"]
    stated = report.summary["verdicts"]["dice"]["pairs"][0]
    assert pair["verdict"] == stated["verdict"] == clean.summary["verdicts"]["dice"]["pairs"][0]["verdict"]
    assert pair["left_out"] == {"unet": [1]} and stated["health_dependent"] == pair["changed"]
    assert report.summary["verdicts"]["dice"]["means"] == clean.summary["verdicts"]["dice"]["means"]


def test_the_run_progress_prints_a_trials_health_flags_under_its_line():
    import io

    from rich.console import Console

    from covbench.cli.progress import RunProgress

    out = io.StringIO()
    spike = "training loss spiked above 1.5 x its running minimum in epoch(s) 8"
    record = TrialRecord(
        best_val_dice=0.741, best_epoch=24, selection="final", wall_seconds=160.0, device="cpu (vm)",
        health={"flags": [spike]},
    )  # fmt: skip
    with RunProgress(Console(file=out, width=200)) as progress:
        progress.event("done", {"trial": "resunet__seed4__fold0", "record": record, "test_dice": 0.704})
        progress.event(
            "done",
            {
                "trial": "unet__seed0__fold0",
                "record": replace(record, health=None, selection=None),
                "test_dice": 0.7,
            },
        )
    text = out.getvalue()
    assert "resunet__seed4__fold0: test Dice 0.704, final weights (epoch 24, val Dice 0.741), 160 s" in text
    assert "    ⚠ training health: training loss spiked above 1.5 x its running minimum in epoch(s) 8" in text
    assert (
        "unet__seed0__fold0: test Dice 0.700, best val Dice 0.741 (epoch 24)" in text and text.count("⚠") == 1
    )
