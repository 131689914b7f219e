"""Significance across models on paired per-case values (Demšar 2006): Friedman over all models,
then pairwise Wilcoxon signed-rank tests with Holm's step-down correction. Each pair also gets an
effect size (matched-pairs rank-biserial correlation, Kerby 2014) and a percentile-bootstrap 95%
confidence interval of the mean difference, because a p-value alone says nothing about how large
a difference is."""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
from scipy import stats

from covbench.reports.inference import holm  # one Holm for the verdicts and these tests

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same run folder always gives the same report


@dataclass
class PairTest:
    a: str
    b: str
    statistic: float  # Wilcoxon W = min(W+, W-), scipy's two-sided statistic
    p_value: float
    p_adjusted: float  # Holm over all pairs of this metric
    n: int  # paired cases, zero differences included
    mean_difference: float  # mean(a - b)
    rank_biserial: float = math.nan  # (W+ - W-) / (W+ + W-) over non-zero differences; > 0: a larger
    ci_low: float = math.nan  # bootstrap 95% CI of mean(a - b)
    ci_high: float = math.nan


@dataclass
class MetricTests:
    metric: str
    n_cases: int
    friedman_statistic: float | None
    friedman_p: float | None
    pairs: list[PairTest]
    mean_ranks: dict[str, float] = field(default_factory=dict)  # 1 = best, ties averaged
    best: str | None = None
    tied_with_best: list[str] = field(default_factory=list)  # not significantly different from best

    def to_dict(self) -> dict:
        return records_dict(self)

    def pair(self, a: str, b: str) -> PairTest | None:
        """The test of a vs b in either order (an index built on first use: a critical-difference
        diagram at 50 models asks for pairs some 10^5 times)."""
        return pair_index(self, self.pairs).get(frozenset((a, b)))


def records_dict(obj: object) -> dict:
    """`dataclasses.asdict` of a metric's result whose `pairs` are flat dataclasses (scalars and
    at most plain dicts of numbers): the same dict, without asdict's recursive deep copy of every
    pair field (it converted the pairs twice and cost seconds at 9800 pairs)."""
    d = {f.name: copy.deepcopy(getattr(obj, f.name)) for f in fields(obj) if f.name != "pairs"}
    names = [f.name for f in fields(obj.pairs[0])] if obj.pairs else []
    d["pairs"] = [
        {n: (v.copy() if isinstance(v := getattr(p, n), dict) else v) for n in names} for p in obj.pairs
    ]
    return d


def pair_index(owner: object, pairs: list) -> dict:
    """{frozenset((a, b)): the first pair of a and b}, cached on `owner` (not a dataclass field,
    so `asdict` and the summary never see it) and rebuilt when the list was replaced or grew."""
    cached = owner.__dict__.get("_pair_index")
    if cached is not None and cached[0] is pairs and cached[1] == len(pairs):
        return cached[2]
    index: dict = {}
    for p in pairs:
        index.setdefault(frozenset((p.a, p.b)), p)
    owner.__dict__["_pair_index"] = (pairs, len(pairs), index)
    return index


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (Kerby 2014).

    Zero differences are dropped (as Wilcoxon's "wilcox" zero method does), |d| is ranked with
    ties averaged, and r = (sum of ranks of positive d - sum of ranks of negative d) / all ranks:
    +1 when every non-zero difference is positive, 0 when none is non-zero.
    """
    d = np.asarray(diff, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def bootstrap_ci(
    diff: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile-bootstrap CI of mean(diff), resampling cases with replacement (seeded)."""
    d = np.asarray(diff, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_cis(
    diffs: np.ndarray, level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """`bootstrap_ci` of every column of `diffs` (cases x pairs) at once.

    The per-pair CI seeds a fresh generator with the same seed and the same number of cases, so
    every pair of a metric resamples the same case indices: draw them once, turn them into counts
    per case and take all resampled means as one matrix product. Equal to the per-pair CIs up to
    floating-point rounding of the sums (about 1e-15)."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[0] == 0:
        width = d.shape[1] if d.ndim == 2 else 0
        return np.full(width, math.nan), np.full(width, math.nan)
    n = d.shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    flat = (np.arange(samples)[:, None] * n + idx).ravel()  # (resample, case) -> one bin
    counts = np.bincount(flat, minlength=samples * n).reshape(samples, n).astype(float)
    means = counts @ d / n
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return lo, hi


def paired_matrix(per_case: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Cases x models, keeping only cases every model has a finite value for."""
    wide = per_case.pivot_table(index=["fold", "case"], columns="model", values=metric, aggfunc="mean")
    return wide.replace([np.inf, -np.inf], np.nan).dropna()


def mean_ranks(wide: pd.DataFrame, higher_is_better: bool) -> dict[str, float]:
    """Average rank of each model over cases (1 = best on a case; ties share the average rank)."""
    if wide.empty:
        return {}
    values = wide.to_numpy(dtype=float)
    ranks = stats.rankdata(-values if higher_is_better else values, axis=1)
    return {str(m): float(r) for m, r in zip(wide.columns, ranks.mean(axis=0), strict=True)}


def _friedman(wide: pd.DataFrame) -> tuple[float, float]:
    values = wide.to_numpy(dtype=float)
    if np.all(values == values[:, :1]):  # every case ties all models: no evidence of a difference
        return 0.0, 1.0
    res = stats.friedmanchisquare(*values.T)
    return float(res.statistic), float(res.pvalue)


def _wilcoxons(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """`_wilcoxon` of every column pair of `x` and `y` (cases x pairs). Above 50 cases scipy's
    vectorised test takes the normal approximation for every column, as the one-column test does,
    so one call gives the same numbers; at 50 cases or fewer scipy picks exact / permutation /
    asymptotic from the ties and zeros of the whole array, so each column is tested alone."""
    n, width = x.shape
    if n <= 50 or width == 0:
        out = [_wilcoxon(x[:, k], y[:, k]) for k in range(width)]
        return [s for s, _ in out], [p for _, p in out]
    diff = x - y
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", UserWarning)  # as in `_wilcoxon`
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero columns, replaced below
        res = stats.wilcoxon(x, y, zero_method="wilcox", axis=0)
    statistic = np.asarray(res.statistic, dtype=float)
    pvalue = np.asarray(res.pvalue, dtype=float)
    flat = np.all(diff == 0, axis=0)  # no difference at all: no test (`_wilcoxon`)
    statistic = np.where(flat, math.nan, statistic)
    pvalue = np.where(flat, 1.0, pvalue)
    return statistic.tolist(), pvalue.tolist()


def rank_biserials(diffs: np.ndarray) -> np.ndarray:
    """`rank_biserial` of every column of `diffs` (cases x pairs), zeros dropped per column by
    ranking them as NaN; the sums of (half-)integer ranks are exact, so the same numbers."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.shape[1] == 0:
        return np.zeros(d.shape[1] if d.ndim == 2 else 0)
    ranks = stats.rankdata(np.where(d == 0, np.nan, np.abs(d)), axis=0, nan_policy="omit")
    pos = np.where(d > 0, ranks, 0.0).sum(axis=0)
    neg = np.where(d < 0, ranks, 0.0).sum(axis=0)
    total = pos + neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos - neg) / np.where(total > 0, total, 1.0), 0.0)


def _wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    diff = x - y
    if diff.size == 0 or np.all(diff == 0):
        return math.nan, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy: "sample size too small" / exact with ties
        res = stats.wilcoxon(x, y, zero_method="wilcox")
    return float(res.statistic), float(res.pvalue)


def compare_models(
    per_case: pd.DataFrame,
    metric: str,
    higher_is_better: bool | None = None,
    means: dict[str, float] | None = None,
    alpha: float = ALPHA,
) -> MetricTests:
    """All tests of one metric. With `higher_is_better` the result also names the best model
    (by `means`, default the paired means) and the models whose Holm-adjusted p vs the best is
    >= `alpha`."""
    wide = paired_matrix(per_case, metric)
    models = [str(m) for m in wide.columns]
    f_stat = f_p = None
    if len(models) >= 3 and len(wide) >= 2:
        f_stat, f_p = _friedman(wide)
    combos = list(itertools.combinations(models, 2))
    values = wide.to_numpy(dtype=float)
    col = {m: i for i, m in enumerate(models)}
    ia = np.array([col[a] for a, _ in combos], dtype=int)
    ib = np.array([col[b] for _, b in combos], dtype=int)
    diffs = values[:, ia] - values[:, ib]  # cases x pairs
    los, his = bootstrap_cis(diffs) if combos else (np.array([]), np.array([]))
    stat, p = _wilcoxons(values[:, ia], values[:, ib])
    n = len(wide)
    # per pair over contiguous rows: the pairwise summation of each pair's own `diff.mean()`
    mean_diff = np.ascontiguousarray(diffs.T).mean(axis=1) if n else np.full(len(combos), math.nan)
    biserial = rank_biserials(diffs) if n else np.full(len(combos), math.nan)
    pairs = [
        PairTest(
            a,
            b,
            stat[k],
            p[k],
            math.nan,
            n,
            float(mean_diff[k]),
            float(biserial[k]),
            float(los[k]),
            float(his[k]),
        )
        for k, (a, b) in enumerate(combos)
    ]
    for pair, adj in zip(pairs, holm([p.p_value for p in pairs]), strict=True):
        pair.p_adjusted = adj
    result = MetricTests(metric, len(wide), f_stat, f_p, pairs)
    if higher_is_better is not None:
        result.mean_ranks = mean_ranks(wide, higher_is_better)
        if means is None:
            means = {m: float(wide[m].mean()) for m in models}
        result.best, result.tied_with_best = best_and_ties(means, result, higher_is_better, alpha)
    return result


def best_and_ties(
    means: dict[str, float], tests: MetricTests, higher_is_better: bool, alpha: float = ALPHA
) -> tuple[str | None, list[str]]:
    """The best model by mean, and the others whose Holm-adjusted Wilcoxon p against it is >= alpha
    (or that could not be tested against it)."""
    finite = {m: v for m, v in means.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:  # nothing to rank
        return None, []
    best = (max if higher_is_better else min)(sorted(finite), key=lambda m: finite[m])
    ties = []
    for model in sorted(finite):
        if model == best:
            continue
        pair = tests.pair(best, model)
        if pair is None or math.isnan(pair.p_adjusted) or pair.p_adjusted >= alpha:
            ties.append(model)
    return best, ties


def cliques(tests: MetricTests, order: list[str], alpha: float = ALPHA) -> list[tuple[int, int]]:
    """Maximal runs order[i..j] (j > i) in which no pair differs significantly (Holm-adjusted
    Wilcoxon), for the bars of a critical-difference diagram; `order` is sorted by mean rank."""

    def same(a: str, b: str) -> bool:
        p = tests.pair(a, b)
        return p is None or math.isnan(p.p_adjusted) or p.p_adjusted >= alpha

    runs: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(same(order[k], order[j + 1]) for k in range(i, j + 1)):
            j += 1
        if j > i and not any(lo <= i and j <= hi for lo, hi in runs):
            runs.append((i, j))
    return runs
