"""From per-case rows to verdicts: the unit of inference, the missing-value rule, the verdict
words and marks, the clustering statistics and the ranking's stability."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from covbench.reports.verdicts import clustering, rank_uncertainty, unit_values, verdicts


def _rows(effects: dict[str, float], patients=20, seeds=5, slices=4, seed_sd=0.005, noise=0.03, rng_seed=0):
    """Slice rows of a run: Dice = 0.7 + model effect + patient x model + seed + slice noise."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for model, effect in effects.items():
        v = rng.normal(0, 0.02, patients)
        for s in range(seeds):
            w = rng.normal(0, seed_sd)
            for p in range(patients):
                for k in range(slices):
                    dice = 0.7 + effect + v[p] + w + rng.normal(0, noise)
                    out.append(
                        {"model": model, "seed": s, "fold": 0, "case": f"P{p}#{k}", "patient": f"P{p}",
                         "dice": dice, "precision": dice, "sensitivity": dice}
                    )  # fmt: skip
    return pd.DataFrame(out)


def test_slices_are_averaged_within_patients():
    rows = _rows({"a": 0.0, "b": 0.0}, patients=3, seeds=2, slices=4)
    uv = unit_values(rows)
    assert uv.unit == "patient" and uv.grouped
    one = uv.frame[(uv.frame["model"] == "a") & (uv.frame["seed"] == 1) & (uv.frame["unit"] == "P2")]
    expected = rows[(rows["model"] == "a") & (rows["seed"] == 1) & (rows["patient"] == "P2")]["dice"].mean()
    assert one["dice"].item() == pytest.approx(expected)
    assert uv.matrix("a", "dice", uv.units_of("dice")).shape == (2, 3)


def test_model_dependent_undefined_values_get_the_worst_value():
    rows = _rows({"a": 0.0, "b": 0.0}, patients=3, seeds=2, slices=1)
    # precision undefined for every slice of P0 for model a only (a predicted nothing there)
    rows.loc[(rows["model"] == "a") & (rows["patient"] == "P0"), "precision"] = np.nan
    # sensitivity undefined for P1 everywhere (no lesion): says nothing about the models
    rows.loc[rows["patient"] == "P1", "sensitivity"] = np.nan
    uv = unit_values(rows)
    f = uv.frame
    assert (f[(f["model"] == "a") & (f["unit"] == "P0")]["precision"] == 0.0).all()
    assert uv.imputed == {"a": {"precision": 2}}
    assert uv.left_out == {"sensitivity": 1}
    assert uv.units_of("sensitivity") == ["P0", "P2"]


def test_a_clear_difference_is_declared_and_marked():
    v = verdicts(unit_values(_rows({"good": 0.05, "bad": 0.0})), primary="dice")
    dice = v["dice"]
    assert dice.primary and dice.best == "good" and dice.marks == {"good": "best", "bad": "worse"}
    (pair,) = dice.pairs
    assert pair.verdict == "good better" and pair.p_adjusted < 0.05
    assert pair.ci_low <= pair.estimate <= pair.ci_high
    assert dice.ranking["models"]["good"]["p_rank1"] > 0.99
    assert not v["precision"].primary and "secondary" in v["precision"].family


def test_direction_of_lower_is_better_metrics():
    rows = _rows({"low": -0.05, "high": 0.0})
    rows["mae"] = rows["dice"]  # lower is better for MAE
    v = verdicts(unit_values(rows), primary="mae")["mae"]
    assert v.best == "low" and v.pairs[0].verdict == "low better"


def test_no_difference_with_much_data_is_practically_equivalent():
    rows = _rows({"a": 0.0, "b": 0.0}, patients=60, seeds=10, slices=2, seed_sd=0.001, noise=0.005)
    (pair,) = verdicts(unit_values(rows))["dice"].pairs
    assert pair.verdict == "practically equivalent" and pair.p_equivalence_adjusted < 0.05


def test_three_patients_decide_nothing():
    v = verdicts(unit_values(_rows({"a": 0.01, "b": 0.0}, patients=3, seeds=5)))["dice"]
    assert v.pairs[0].verdict == "undecided"
    assert v.marks[[m for m in v.marks if v.marks[m] != "best"][0]] == "undecided"


def test_one_seed_per_model_is_never_an_architecture_verdict():
    (pair,) = verdicts(unit_values(_rows({"a": 0.05, "b": 0.0}, seeds=1)))["dice"].pairs
    assert pair.p_value < 0.05 and pair.verdict == "undecided" and not pair.seed_noise_estimable


def test_ungrouped_slices_are_their_own_units():
    rows = _rows({"a": 0.0, "b": 0.0}, patients=12, seeds=2, slices=1)
    uv = unit_values(rows)
    assert uv.unit == "slice" and not uv.grouped


def test_clustering_icc_equals_statsmodels_random_intercept():
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(15), 6)
    diff = rng.normal(0, 0.04, 15)[groups] + rng.normal(0, 0.05, groups.size)
    c = clustering(diff, groups)
    frame = pd.DataFrame({"d": diff, "g": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm("d ~ 1", frame, groups="g").fit(reml=True)
    icc = float(fit.cov_re.iloc[0, 0] / (fit.cov_re.iloc[0, 0] + fit.scale))
    assert c.icc == pytest.approx(icc, rel=1e-3)
    assert c.design_effect == pytest.approx(1 + 5 * c.icc)
    assert c.n_effective == pytest.approx(90 / c.design_effect)


def test_rank_uncertainty_of_indistinguishable_models_is_spread():
    rng = np.random.default_rng(4)
    mats = {m: rng.normal(0.7, 0.05, (3, 8)) for m in ("a", "b", "c")}
    r = rank_uncertainty(mats, higher_is_better=True, samples=500)
    p1 = [r["models"][m]["p_rank1"] for m in mats]
    assert sum(p1) == pytest.approx(1.0)
    assert max(p1) < 0.9 and r["kendall_tau_mean"] < 0.9
    assert all(
        r["models"][m]["rank_low"] <= r["models"][m]["median_rank"] <= r["models"][m]["rank_high"]
        for m in mats
    )


def test_plan_command_on_a_run_folder(tmp_path):
    """`covbench plan` reads cases.csv; its numbers are the Design's (checked by simulation in
    test_inference.py), its table is monotone: more seeds never need more patients."""
    from typer.testing import CliRunner

    from covbench.cli import app
    from covbench.reports.plan import plan

    _rows({"a": 0.0, "b": 0.01, "c": 0.02}, patients=12, seeds=3).to_csv(tmp_path / "cases.csv", index=False)
    result = CliRunner().invoke(app, ["plan", str(tmp_path), "--delta", "0.02", "--power", "0.8"])
    assert result.exit_code == 0, result.output
    assert "test patients needed for 0.02 at 80% power" in result.output
    p = plan(tmp_path, delta=0.02)
    assert (p.run_seeds, p.run_units, p.unit) == (3, 12, "patient")
    needed = [r.units_needed for r in p.rows if r.units_needed is not None]
    assert needed == sorted(needed, reverse=True)
    assert p.design.power(p.detectable_now, 3, 12) == pytest.approx(0.8, abs=1e-6)


def test_undecided_for_too_few_seeds_says_why():
    """Issue 33: two seeds a model with real seed noise: the report says the seeds were too few to
    estimate training noise, not just 'undecided'."""
    v = verdicts(unit_values(_rows({"a": 0.01, "b": 0.0}, patients=20, seeds=2, seed_sd=0.03, rng_seed=3)))
    pair = v["dice"].pairs[0]
    assert pair.verdict == "undecided"
    assert pair.reason is not None and "too few seeds to estimate training noise" in pair.reason
    assert pair.seed_df < 3


def test_one_seed_a_side_is_undecided_with_the_reason():
    v = verdicts(unit_values(_rows({"a": 0.05, "b": 0.0}, patients=10, seeds=1)))
    pair = v["dice"].pairs[0]
    assert pair.verdict == "undecided" and "one seed per model" in pair.reason


def test_a_clear_verdict_has_no_reason():
    v = verdicts(unit_values(_rows({"good": 0.05, "bad": 0.0})))
    assert v["dice"].pairs[0].reason is None


def test_compare_explain_computes_the_gates_figures_from_the_baseline():
    """docs/reports.md quotes `covbench compare --explain`: the seed-mean SD it prints is the SD of
    each seed's mean Dice over the patients of the committed baseline."""
    import json
    from pathlib import Path

    from covbench.reports.compare import compare, explain

    ci = json.loads((Path(__file__).resolve().parents[1] / "reports" / "baselines" / "ci.json").read_text())
    text = explain(compare(ci, ci))
    per_seed = ci["unit_values"]["values"]["unet"]["dice"]
    sd = np.std([np.mean(list(v.values())) for v in per_seed.values()], ddof=1)
    row = next(line for line in text.splitlines() if line.startswith("| unet |"))
    assert f"{sd:.4f} / {sd:.4f}" in row
    assert float(row.rstrip(" |").split("|")[-1]) > 0
