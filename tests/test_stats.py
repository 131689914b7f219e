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


# --- effect sizes, bootstrap CIs, best model, ties, zero differences --------------------------------
from covbench.reports.stats import (  # noqa: E402
    best_and_ties,
    bootstrap_ci,
    cliques,
    mean_ranks,
    paired_matrix,
    rank_biserial,
)


def test_holm_four_values_hand_computed():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> 0.06 (kept monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_rank_biserial_hand_values_with_ties_and_zeros():
    assert rank_biserial(np.array([1.0, 2.0, -3.0, 0.0])) == pytest.approx(0.0)  # (1 + 2 - 3) / 6
    # |d| = 1, 1, 2, 2 -> ranks 1.5, 1.5, 3.5, 3.5; positive 8.5, negative 1.5 -> 7 / 10
    assert rank_biserial(np.array([1.0, -1.0, 2.0, 2.0])) == pytest.approx(0.7)
    assert rank_biserial(np.array([0.0, 0.0])) == 0.0
    assert rank_biserial(np.array([0.5, 0.2, 0.0])) == 1.0


def test_rank_biserial_matches_scipy_signed_rank_sum():
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.2, 1.0, 30), 1)  # rounding makes ties and zeros
    d[:3] = 0.0
    nz = d[d != 0]
    total = nz.size * (nz.size + 1) / 2
    w_plus = stats.wilcoxon(d, zero_method="wilcox", alternative="greater", method="approx").statistic
    assert rank_biserial(d) == pytest.approx((2 * w_plus - total) / total)


def test_bootstrap_ci_is_seeded_degenerate_for_constants_and_close_to_scipy():
    assert bootstrap_ci(np.full(10, 0.25)) == pytest.approx((0.25, 0.25))
    rng = np.random.default_rng(1)
    d = rng.normal(0.1, 0.2, 200)
    lo, hi = bootstrap_ci(d)
    assert (lo, hi) == bootstrap_ci(d)
    assert lo < d.mean() < hi
    ref = stats.bootstrap((d,), np.mean, method="percentile", n_resamples=4000, random_state=7)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.006)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))


def test_friedman_with_ties_matches_scipy_and_all_ties_give_p_one():
    a = [0.5, 0.6, 0.7, 0.7, 0.9, 0.4]
    b = [0.5, 0.5, 0.6, 0.7, 0.8, 0.4]  # ties with a on some cases
    c = [0.4, 0.5, 0.6, 0.6, 0.8, 0.4]
    result = compare_models(_per_case({"a": a, "b": b, "c": c}), "dice")
    ref = stats.friedmanchisquare(a, b, c)
    assert result.friedman_statistic == pytest.approx(ref.statistic)
    assert result.friedman_p == pytest.approx(ref.pvalue)
    tied = compare_models(_per_case({"a": [0.5, 0.6], "b": [0.5, 0.6], "c": [0.5, 0.6]}), "dice")
    assert (tied.friedman_statistic, tied.friedman_p) == (0.0, 1.0)


def test_wilcoxon_with_zero_differences_matches_scipy_wilcox_method():
    a = np.array([0.8, 0.7, 0.9, 0.6, 0.75, 0.85, 0.65, 0.7])
    b = np.array([0.8, 0.6, 0.8, 0.6, 0.70, 0.80, 0.60, 0.5])  # two zero differences
    pair = compare_models(_per_case({"a": list(a), "b": list(b)}), "dice").pairs[0]
    ref = stats.wilcoxon(a, b, zero_method="wilcox")
    assert pair.statistic == pytest.approx(ref.statistic)
    assert pair.p_value == pytest.approx(ref.pvalue)
    assert pair.n == 8 and pair.rank_biserial == 1.0
    assert pair.ci_low <= pair.mean_difference <= pair.ci_high


def test_two_models_best_and_significance_follow_direction():
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 5, 20)
    per_case = _per_case({"good": list(base), "bad": list(base + rng.uniform(0.5, 1.0, 20))})
    # lower is better (ASSD-like): "good" has the smaller values and differs significantly
    result = compare_models(per_case, "dice", higher_is_better=False)
    assert result.friedman_p is None
    assert result.best == "good" and result.tied_with_best == []
    assert result.mean_ranks == {"bad": 2.0, "good": 1.0}
    result_up = compare_models(per_case, "dice", higher_is_better=True)
    assert result_up.best == "bad"


def test_models_close_to_the_best_are_marked_as_ties():
    rng = np.random.default_rng(5)
    a = rng.uniform(0.6, 0.9, 20)
    symmetric = np.tile([0.01, -0.01], 10)  # as many ups as downs: no evidence of a difference
    per_case = _per_case({"a": list(a), "b": list(a - 0.2), "c": list(a + symmetric)})
    result = compare_models(per_case, "dice", higher_is_better=True)
    best_pair = result.pair(result.best, "b")
    assert best_pair.p_adjusted < 0.05
    assert "b" not in result.tied_with_best
    other = "c" if result.best == "a" else "a"
    assert result.pair(result.best, other).p_adjusted >= 0.05
    assert result.tied_with_best == [other]
    order = sorted(result.mean_ranks, key=result.mean_ranks.get)
    assert order[-1] == "b"
    assert cliques(result, order) == [(0, 1)]  # {a, c} joined, b alone


def test_best_uses_given_means_and_skips_missing_values():
    tests = compare_models(_per_case({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.3, 0.4]}), "dice")
    assert best_and_ties({"a": 0.9, "b": 0.2, "c": math.nan}, tests, True) == ("a", ["b"])
    assert best_and_ties({}, tests, True) == (None, [])


def test_mean_ranks_average_ties_hand_computed():
    wide = paired_matrix(_per_case({"a": [0.9, 0.5], "b": [0.9, 0.7], "c": [0.1, 0.7]}), "dice")
    # case 0: a, b tie for 1-2 (1.5 each), c 3; case 1: b, c tie (1.5), a 3
    assert mean_ranks(wide, higher_is_better=True) == pytest.approx({"a": 2.25, "b": 1.5, "c": 2.25})


def test_bootstrap_cis_of_all_pairs_equal_the_per_pair_reference():
    """The vectorised CIs resample the same case indices as the per-pair bootstrap_ci (same seed,
    same number of cases), so they give the same intervals up to rounding."""
    from covbench.reports.stats import bootstrap_cis

    rng = np.random.default_rng(3)
    diffs = rng.normal(0.02, 0.1, size=(37, 6))
    diffs[:, 2] = 0.25  # a constant column: a degenerate interval
    lo, hi = bootstrap_cis(diffs)
    for k in range(diffs.shape[1]):
        assert (lo[k], hi[k]) == pytest.approx(bootstrap_ci(diffs[:, k]), rel=1e-12, abs=1e-14)
    assert bootstrap_cis(diffs, seed=1)[0][0] != pytest.approx(lo[0], rel=1e-12)
