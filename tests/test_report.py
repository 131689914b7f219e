"""`covbench report` on a real 3-model x 3-seed smoke run: every file renders, the numbers agree
with the run folder, patient-level metrics match an independent computation, warnings fire."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from covbench.cli import app
from covbench.reports.report import write_report

runner = CliRunner()
MODELS = ("resunet", "unet", "unetpp")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("report") / "smoke3"
    result = runner.invoke(
        app, ["run", "--preset", "smoke", "--models", "paper", "--seeds", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_writes_every_report_file(smoke_run):
    out, output = smoke_run
    for name in (
        "summary.json",
        "table.md",
        "table.tex",
        "table.csv",
        "table-seeds.csv",
        "report.md",
        "report.html",
        "test_slices.npz",
    ):
        assert (out / name).stat().st_size > 100, name
    for stem in ("boxplots", "ranking_dice", "cd_dice", "qualitative"):
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / "figures" / f"{stem}.svg").read_bytes()[:2000]
    assert "## Verdicts" in output and "## Table 1" in output and "Friedman" in output


def test_table_formats_agree_with_summary(smoke_run):
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    csv = pd.read_csv(out / "table.csv").set_index("model")
    for model in MODELS:
        dice = summary["models"][model]["dice"]
        assert csv.loc[model, "dice_mean"] == pytest.approx(dice["mean"])
        assert csv.loc[model, "dice_n"] == dice["n"]
        assert f"{dice['mean']:.2f} ± {dice['sd']:.2f}" in (out / "table.md").read_text()
    seeds = pd.read_csv(out / "table-seeds.csv").set_index("model")
    assert seeds.loc["unet", "dice_mean"] == pytest.approx(summary["models"]["unet"]["dice"]["seed_mean"])
    tex = (out / "table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex and "±" not in tex
    assert tex.count(r"\\") == 1 + len(MODELS)
    header = (out / "table.md").read_text().splitlines()[0]
    for title in (
        "Dice",
        "ASSD (mm)",
        "MAE",
        "Sensitivity",
        "Specificity",
        "Precision",
        "HD95 (mm)",
        "NSD",
        "Params (M)",
        "Train time (s)",
    ):
        assert title in header


def test_best_model_is_marked_by_direction(smoke_run):
    """Bold goes to the best mean over the values the verdicts use: per (model, seed, patient)
    slice means, recomputed here from cases.csv."""
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    table = (out / "table.md").read_text()
    rows = pd.read_csv(out / "cases.csv")
    for metric, higher in (("dice", True), ("assd", False)):
        per_unit = rows.groupby(["model", "seed", "patient"])[metric].mean().groupby("model").mean()
        best = (per_unit.idxmax if higher else per_unit.idxmin)()
        assert summary["verdicts"][metric]["best"] == best
        assert summary["verdicts"][metric]["means"][best] == pytest.approx(per_unit[best])
        row = next(line for line in table.splitlines() if line.startswith(f"| {best} |"))
        column = 1 + ["dice", "assd"].index(metric)
        assert row.split(" | ")[column].startswith("**")


def test_one_test_patient_decides_nothing_and_says_what_it_could_detect(smoke_run):
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["primary"] == "dice" and summary["schema"] == 2
    assert summary["inference"]["unit"] == "patient"
    for pair in summary["verdicts"]["dice"]["pairs"]:
        assert pair["verdict"] == "undecided"
    marks = summary["verdicts"]["dice"]["marks"]
    assert sorted(marks.values()) == ["best", "undecided", "undecided"]
    table = (out / "table.md").read_text()
    assert table.count("†") >= 2  # undecided against the best, on Dice at least
    report = (out / "report.md").read_text()
    assert "This run can detect differences of at least" in report
    values = summary["unit_values"]["values"]
    assert set(values) == set(MODELS) and set(values["unet"]["dice"]) == {"0", "1", "2"}


def test_plan_and_primary_options(smoke_run):
    out, _ = smoke_run
    one = runner.invoke(app, ["plan", str(out), "--metric", "dice", "--delta", "0.05"])
    assert one.exit_code == 2 and "only 1 test patient" in one.output
    bad = runner.invoke(app, ["plan", str(out), "--delta", "-1"])
    assert bad.exit_code == 2 and "--delta" in bad.output
    wrong = runner.invoke(app, ["report", str(out), "--primary", "volume", "--no-figures"])
    assert wrong.exit_code == 2 and "--primary must be one of" in wrong.output
    nsd = runner.invoke(app, ["report", str(out), "--primary", "nsd", "--no-figures"])
    assert nsd.exit_code == 0, nsd.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["primary"] == "nsd" and summary["verdicts"]["nsd"]["primary"]
    again = runner.invoke(app, ["report", str(out), "--no-figures"])  # remembers the primary
    assert again.exit_code == 0 and json.loads((out / "summary.json").read_text())["primary"] == "nsd"
    assert runner.invoke(app, ["report", str(out), "--primary", "dice"]).exit_code == 0


def test_summary_holds_tests_effect_sizes_and_cis(smoke_run):
    out, _ = smoke_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "slice" and summary["seeds"] == [0, 1, 2]
    for model in MODELS:
        assert {"mean", "sd", "n", "seed_mean", "seed_sd", "n_seeds"} <= set(summary["models"][model]["dice"])
    dice = summary["tests"]["dice"]
    assert dice["friedman_p"] is not None and len(dice["pairs"]) == 3
    for pair in dice["pairs"]:
        assert {"statistic", "p_value", "p_adjusted", "rank_biserial", "ci_low", "ci_high"} <= set(pair)
        assert -1 <= pair["rank_biserial"] <= 1
        assert pair["ci_low"] <= pair["mean_difference"] <= pair["ci_high"]
        assert pair["p_adjusted"] >= pair["p_value"]
    # the smoke phantom has one test patient: the report must say the tests overstate the evidence
    assert any("test patient" in w for w in summary["warnings"])


def test_html_is_self_contained(smoke_run):
    out, _ = smoke_run
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<caption>" in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # verdict matrix, boxplots, ranking blob plot, CD diagram, overlays, training curves
    assert html.count("<figure>") == 6 and "<h2>Verdicts</h2>" in html
    assert "Warning" in (out / "report.md").read_text() and 'class="warn"' in html


def test_patient_unit_matches_an_independent_volume_dice(smoke_run):
    out, _ = smoke_run
    result = runner.invoke(app, ["report", str(out), "--unit", "patient", "--no-figures"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary-patient.json").read_text())
    assert summary["unit"] == "patient"
    split = json.loads((out / "split.json").read_text())
    assert summary["n_cases"] == len(split["test"])
    with np.load(out / "test_slices.npz") as s:
        mask, index, patient = s["mask"].astype(bool), s["index"], s["patient"]
    dice = []
    for seed in range(3):
        with np.load(out / "trials" / f"unet__seed{seed}__fold0" / "predictions.npz") as p:
            assert np.array_equal(p["index"], index)
            pred = p["prob"] >= 128  # 8-bit probability >= 0.5
        per_patient = []
        for pid in sorted(set(patient)):
            sel = patient == pid
            tp = np.sum(pred[sel] & mask[sel])
            per_patient.append(2 * tp / (pred[sel].sum() + mask[sel].sum()))
        dice.append(per_patient)
    expected = np.mean(np.mean(dice, axis=0))  # per patient over seeds, then over patients
    assert summary["models"]["unet"]["dice"]["mean"] == pytest.approx(expected)
    for name in ("table-patient.md", "table-patient.tex", "table-patient.csv", "report-patient.html"):
        assert (out / name).is_file()


def test_leaked_split_is_warned(smoke_run, tmp_path):
    out, _ = smoke_run
    copy = tmp_path / "leaky"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "figures*"))
    split = json.loads((copy / "split.json").read_text())
    leak = f"{split['test'][0]}#3"  # a slice key of a test patient
    split["train"] = [*split["train"], leak]
    split["folds"][0]["train"] = [*split["folds"][0]["train"], leak]  # each fold's manifest is the truth
    (copy / "split.json").write_text(json.dumps(split))
    report = write_report(copy, figures=False)
    assert any("also in training" in w for w in report.summary["warnings"])
    assert not any("also in training" in w for w in write_report(out, figures=False).summary["warnings"])


def test_bad_unit_and_missing_folder_exit_2(smoke_run, tmp_path):
    out, _ = smoke_run
    result = runner.invoke(app, ["report", str(out), "--unit", "voxel"])
    assert result.exit_code == 2 and "--unit must be one of slice, patient" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "cases.csv" in result.output


def test_compare_run_with_itself_passes(smoke_run):
    out, _ = smoke_run
    result = runner.invoke(app, ["compare", str(out), str(out / "summary.json")])
    assert result.exit_code == 0, result.output
    assert "All 24 checks passed." in result.output


def _fake_run(tmp_path, thickness: bool):
    """A run folder with one trial: 3 test slices of one patient stored out of slice order; the
    lesion (a 4x4 square) is on slice 11, the prediction on slice 12."""
    run = tmp_path / ("thick" if thickness else "thin")
    order = np.array([12, 10, 11])  # storage order != slice order
    mask = np.zeros((3, 16, 16), np.uint8)
    mask[order == 11, 4:8, 4:8] = 1
    prob = np.zeros((3, 16, 16), np.uint8)
    prob[order == 12, 4:8, 4:8] = 255
    arrays = {
        "index": np.array([3, 4, 5], np.int32),
        "image": np.zeros((3, 16, 16), np.uint8),
        "mask": mask,
        "spacing": np.full((3, 2), 0.5, np.float32),
        "patient": np.array(["p1"] * 3),
        "slice_index": order.astype(np.int32),
    }
    if thickness:
        arrays["thickness"] = np.full(3, 5.0, np.float32)
    tdir = run / "trials" / "m__seed0__fold0"
    tdir.mkdir(parents=True)
    np.savez(run / "test_slices.npz", **arrays)
    np.savez(tdir / "predictions.npz", prob=prob, index=arrays["index"])
    (tdir / "record.json").write_text(json.dumps({"model": "m", "seed": 0, "fold": 0, "status": "done"}))
    return run


def test_patient_volume_uses_slice_order_and_thickness(tmp_path):
    from covbench.reports.aggregate import patient_rows

    row = patient_rows(_fake_run(tmp_path, thickness=True)).iloc[0]
    # the prediction sits exactly one slice (5 mm) above the lesion: every surface distance is 5 mm
    assert row["dice"] == 0.0 and row["sensitivity"] == 0.0
    assert row["assd"] == pytest.approx(5.0) and row["hd95"] == pytest.approx(5.0)
    assert row["specificity"] == pytest.approx(1 - 16 / (3 * 256 - 16))
    assert (row["n_slices"], row["slice_gaps"], row["empty_case"]) == (3, 0, "normal")


def test_patient_volume_without_thickness_reports_no_surface_metrics(tmp_path):
    from covbench.reports.aggregate import patient_rows

    row = patient_rows(_fake_run(tmp_path, thickness=False)).iloc[0]
    assert row["dice"] == 0.0 and row["mae"] == pytest.approx(32 / (3 * 256))
    assert all(np.isnan(row[m]) for m in ("assd", "hd95", "nsd"))
    assert not row["surface_3d"]
