from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from covbench.reports.aggregate import summarize
from covbench.reports.stats import compare_models, holm


def test_holm_hand_computed():
    # sorted p: 0.01 (x3) -> 0.03, 0.02 (x2) -> 0.04, 0.04 (x1) -> 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def _per_case(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for model, vals in values.items():
        rows += [{"model": model, "fold": 0, "case": f"c{i}", "dice": v} for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_friedman_and_wilcoxon_match_scipy():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.6, 0.9, 20)
    b = a - rng.uniform(0.0, 0.1, 20)
    c = a + rng.normal(0, 0.05, 20)
    result = compare_models(_per_case({"a": list(a), "b": list(b), "c": list(c)}), "dice")
    ref = stats.friedmanchisquare(a, b, c)
    assert result.friedman_p == pytest.approx(ref.pvalue)
    pair = next(p for p in result.pairs if (p.a, p.b) == ("a", "b"))
    assert pair.p_value == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert pair.mean_difference == pytest.approx(float(np.mean(a - b)))
    assert pair.p_adjusted == pytest.approx(holm([p.p_value for p in result.pairs])[result.pairs.index(pair)])


def test_two_models_have_no_friedman_and_identical_models_p_one():
    result = compare_models(_per_case({"a": [0.5, 0.6, 0.7], "b": [0.5, 0.6, 0.7]}), "dice")
    assert result.friedman_p is None
    assert result.pairs[0].p_value == 1.0


def test_summary_averages_seeds_per_case_first():
    rows = pd.DataFrame(
        [
            {"model": "m", "seed": 0, "fold": 0, "case": "x", "dice": 1.0},
            {"model": "m", "seed": 1, "fold": 0, "case": "x", "dice": 0.0},
            {"model": "m", "seed": 0, "fold": 0, "case": "y", "dice": 1.0},
            {"model": "m", "seed": 1, "fold": 0, "case": "y", "dice": 1.0},
            {"model": "m", "seed": 0, "fold": 0, "case": "z", "dice": float("nan")},
            {"model": "m", "seed": 1, "fold": 0, "case": "z", "dice": float("nan")},
        ]
    )
    s = summarize(rows, metrics=("dice",))["m"]["dice"]
    assert s["mean"] == pytest.approx(0.75)  # cases x=0.5, y=1.0
    assert s["sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert (s["n"], s["n_undefined"]) == (2, 1)
    assert s["seed_mean"] == pytest.approx(0.75) and s["seed_sd"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
