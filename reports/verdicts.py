"""From a run's per-case rows to the verdicts its report states (`covbench.reports.inference`).

The unit of inference is the patient whenever the data names patients: per-slice values are
averaged within each (model, seed, patient) first. A run folder whose every test patient holds a
single slice (an image folder without a patient column) is analysed per slice, and says so.

Missing values: a unit whose value is undefined for some (model, seed) but defined for others
(precision when a network predicted nothing at all, say) gets the metric's worst value there, as
challengeR's `na.treat = "worst"`: undefinedness that depends on the model must not help it.
The worst value is the bound of a rate (0, or 1 for MAE) and, for a distance, the largest value
the run observed for it. A unit undefined for every model and seed (sensitivity on a patient
without lesions) says nothing about the models and is left out of that metric, counted.

Every pair says why it is undecided when the reason is one a reader can act on (one test unit, one
seed a model, or seeds too few to estimate training noise: `undecided_reason`), and what a decided
pair with a one-seed model assumed.

Multiplicity: the primary metric's verdicts are Holm-adjusted over its pairs; the secondary
metrics' over all their pairs and metrics together (one family), so declaring a secondary
difference is harder than a primary one, as it should be.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.inference import (
    A_BETTER,
    ALPHA,
    B_BETTER,
    EQUIVALENT,
    POWER,
    ROPE,
    UNDECIDED,
    Design,
    Difference,
    estimate_design,
    holm,
    p_equivalences,
    pair_differences,
)
from covbench.reports.inference import verdict as decide
from covbench.reports.stats import pair_index, records_dict

RATE_BOUNDS = {"dice": 1.0, "nsd": 1.0, "sensitivity": 1.0, "specificity": 1.0, "precision": 1.0, "mae": 1.0}
RANK_SAMPLES = 1000
RANK_SEED = 0  # fixed: a run folder always gives the same report


@dataclass
class UnitValues:
    """Per (model, seed, unit) values of every metric, missing-value rule applied."""

    unit: str  # "patient" or "slice"
    grouped: bool  # some unit holds more than one slice: slices were averaged within it
    frame: pd.DataFrame  # columns: model, seed, unit, <metrics>
    imputed: dict[str, dict[str, int]] = field(default_factory=dict)  # model -> metric -> units
    left_out: dict[str, int] = field(default_factory=dict)  # metric -> units undefined everywhere

    @property
    def models(self) -> list[str]:
        return sorted(self.frame["model"].astype(str).unique())

    def units_of(self, metric: str) -> list[str]:
        """Units every model has a value for (failed trials leave their units out)."""
        f = self.frame[["model", "unit", metric]].dropna()
        per_model = [set(g["unit"]) for _, g in f.groupby("model")]
        if len(per_model) < len(self.models):
            return []
        return sorted(set.intersection(*per_model)) if per_model else []

    def matrix(self, model: str, metric: str, units: list[str]) -> np.ndarray:
        """Seeds x units of one model (rows: its seeds in order)."""
        f = self.frame[self.frame["model"] == model]
        wide = f.pivot_table(index="seed", columns="unit", values=metric, aggfunc="mean")
        return wide.reindex(columns=units).to_numpy(dtype=float)

    def matrices(self, metric: str, units: list[str]) -> dict[str, np.ndarray]:
        """`matrix` of every model from one pivot (a report's metric at 50 models: one pivot, not 50)."""
        wide = self.frame.pivot_table(index=["model", "seed"], columns="unit", values=metric, aggfunc="mean")
        wide = wide.reindex(columns=units)
        values = wide.to_numpy(dtype=float)
        names = wide.index.get_level_values("model").astype(str).to_numpy()
        out = {}
        for model in self.models:
            rows = np.flatnonzero(names == model)  # seeds in order: the pivot's index is sorted
            out[model] = values[rows] if rows.size else np.empty((0, len(units)))
        return out

    def to_json(self) -> dict:
        """{"unit", "values": {model: {metric: {seed: {unit: value}}}}}: what `compare` pairs."""
        values: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for model, g in self.frame.groupby("model", sort=True):
            per_metric: dict[str, dict[str, dict[str, float]]] = {}
            for metric in METRICS:
                if metric not in g:
                    continue
                per_seed: dict[str, dict[str, float]] = {}
                for seed, gs in g.groupby("seed", sort=True):
                    column = gs[metric].to_numpy(dtype=float)
                    units = gs["unit"].astype(str).tolist()
                    finite = np.isfinite(column).tolist()
                    per_seed[str(int(seed))] = {
                        u: v for u, v, ok in zip(units, column.tolist(), finite, strict=True) if ok
                    }
                per_metric[metric] = per_seed
            values[str(model)] = per_metric
        return {"unit": self.unit, "grouped": self.grouped, "values": values}


def _unit_column(rows: pd.DataFrame) -> pd.Series:
    return (rows["patient"] if "patient" in rows else rows["case"]).astype(str)


def worst_value(metric: str, observed: np.ndarray) -> float:
    if metric in RATE_BOUNDS:
        return 0.0 if HIGHER_IS_BETTER[metric] else RATE_BOUNDS[metric]
    finite = observed[np.isfinite(observed)]
    return float(finite.max()) if finite.size else math.nan


def unit_values(rows: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> UnitValues:
    """Average each (model, seed) over the slices of each unit, then apply the missing-value rule."""
    present = [m for m in metrics if m in rows.columns]
    frame = rows.assign(unit=_unit_column(rows), seed=rows["seed"].astype(int))
    per_unit = frame.groupby("unit")["case"].nunique() if "case" in frame else pd.Series(dtype=int)
    grouped = bool((per_unit > 1).any())
    values = frame.replace([np.inf, -np.inf], np.nan).groupby(["model", "seed", "unit"], sort=True)[present]
    out = values.mean().reset_index()
    out["model"] = out["model"].astype(str)
    imputed: dict[str, dict[str, int]] = {}
    left_out: dict[str, int] = {}
    for metric in present:
        col = out[metric].to_numpy(dtype=float)
        defined_units = set(out.loc[np.isfinite(col), "unit"])
        undefined_everywhere = set(out["unit"]) - defined_units
        if undefined_everywhere:
            left_out[metric] = len(undefined_everywhere)
        fill = np.isnan(col) & out["unit"].isin(defined_units).to_numpy()
        if fill.any():
            out.loc[fill, metric] = worst_value(metric, col)
            for model, n in out.loc[fill, "model"].value_counts().items():
                imputed.setdefault(str(model), {})[metric] = int(n)
    unit = "patient" if grouped else "slice"
    return UnitValues(unit, grouped, out, imputed, left_out)


@dataclass
class Clustering:
    """How much the slices of one patient move together, for a pair's slice-level differences."""

    icc: float  # one-way ANOVA ICC(1) of the seed-averaged differences, grouped by patient
    design_effect: float  # 1 + (m0 - 1) ICC, m0 = the ANOVA's average group size
    n_slices: int
    n_effective: float  # n_slices / design effect


def clustering(diff: np.ndarray, groups: np.ndarray) -> Clustering | None:
    """ICC(1) of `diff` within `groups` (Shrout & Fleiss 1979; unbalanced m0 of Snedecor &
    Cochran), or None with fewer than 2 groups or no group of 2."""
    diff, groups = np.asarray(diff, float), np.asarray(groups)
    labels, inverse = np.unique(groups, return_inverse=True)
    return _clustering_coded(diff, inverse.ravel(), labels.size)


def _clustering_coded(diff: np.ndarray, inverse: np.ndarray, g: int) -> Clustering | None:
    """`clustering` with the groups already coded 0..g-1 (in sorted label order): what a report
    with many pairs calls once per pair after coding the patients once per metric."""
    n = diff.size
    sizes = np.bincount(inverse, minlength=g)
    if g < 2 or n <= g:
        return None
    means = np.bincount(inverse, weights=diff) / sizes
    ms_between = float((sizes * (means - diff.mean()) ** 2).sum() / (g - 1))
    ms_within = float(((diff - means[inverse]) ** 2).sum() / (n - g))
    m0 = (n - (sizes**2).sum() / n) / (g - 1)
    denom = ms_between + (m0 - 1) * ms_within
    icc = (ms_between - ms_within) / denom if denom > 0 else 0.0
    icc = float(min(max(icc, 0.0), 1.0))  # a negative estimate means no clustering
    design = 1 + (float(sizes.mean()) - 1) * icc
    return Clustering(icc, design, int(n), n / design)


@dataclass
class PairVerdict:
    a: str
    b: str
    estimate: float  # mean(a) - mean(b) on the paired values
    ci_low: float
    ci_high: float
    se: float
    df: float
    p_value: float
    p_adjusted: float
    p_equivalence: float  # TOST within +-rope
    p_equivalence_adjusted: float
    rope: float
    verdict: str  # "<model> better", "practically equivalent" or "undecided"
    p_a_better_seed: float  # P(a seed of a beats a seed of b), in the metric's direction
    detectable: float  # smallest |difference| this design detects with 80 % power
    n_units: int
    n_seeds_a: int
    n_seeds_b: int
    seed_noise_estimable: bool
    clustering: dict | None = None
    seed_df: float = math.nan  # df of the seeds' part of the variance: how well training noise is known
    reason: str | None = None  # why the pair is undecided, or what a decided one assumed (one seed a side)


@dataclass
class MetricVerdicts:
    metric: str
    primary: bool
    unit: str
    n_units: int
    higher_is_better: bool
    means: dict[str, float]  # paired means (common units, all seeds): what "best" is chosen on
    best: str | None
    marks: dict[str, str]  # model -> "best", "equivalent", "undecided", "worse" (against the best)
    family: str  # what the Holm adjustment covered
    pairs: list[PairVerdict]
    ranking: dict | None = None

    def pair(self, a: str, b: str) -> PairVerdict | None:
        return pair_index(self, self.pairs).get(frozenset((a, b)))

    def to_dict(self) -> dict:
        return records_dict(self)


def _word(raw: str, a: str, b: str) -> str:
    return {A_BETTER: f"{a} better", B_BETTER: f"{b} better"}.get(raw, raw)


def _oriented(estimate: float, higher_is_better: bool) -> float:
    """Positive when the first model is better, whatever the metric's direction."""
    return estimate if higher_is_better else -estimate


def verdicts(
    uv: UnitValues,
    slice_rows: pd.DataFrame | None = None,
    primary: str = "dice",
    alpha: float = ALPHA,
    rank_samples: int = RANK_SAMPLES,
) -> dict[str, MetricVerdicts]:
    """Every (pair, metric) verdict of a run; `slice_rows` (the slice-level cases) adds the
    clustering of each pair's slice differences when units hold several slices."""
    metrics = [m for m in METRICS if m in uv.frame.columns]
    models = uv.models
    raw: dict[str, tuple[list[str], dict[str, np.ndarray], list]] = {}
    for metric in metrics:
        units = uv.units_of(metric)
        mats = uv.matrices(metric, units) if units else {}
        complete = {m for m in mats if not np.isnan(mats[m]).any()}
        # a seed without some unit (a failed or partial trial): the pair is not tested
        combos = [(a, b) for a, b in itertools.combinations(models, 2) if a in complete and b in complete]
        raw[metric] = (units, mats, list(zip(combos, _batched_differences(mats, combos), strict=True)))
    secondary = [m for m in metrics if m != primary]
    equivalence = {m: p_equivalences([d for _, d in raw[m][2]], ROPE.get(m, 0.0)).tolist() for m in metrics}
    p_sec = [d.p_value for m in secondary for _, d in raw[m][2]]
    eq_sec = [p for m in secondary for p in equivalence[m]]
    adj_sec, adj_eq_sec = iter(holm(p_sec)), iter(holm(eq_sec))
    n_secondary = len(p_sec)
    out: dict[str, MetricVerdicts] = {}
    slice_tables: dict = {}  # one pivot of the slice rows for every metric (`_slice_table`)
    for metric in metrics:
        units, mats, diffs = raw[metric]
        hib = HIGHER_IS_BETTER[metric]
        rope = ROPE.get(metric, 0.0)
        p_eq = equivalence[metric]
        if metric == primary:
            adj = holm([d.p_value for _, d in diffs])
            adj_eq = holm(p_eq)
            family = f"primary metric: Holm over its {len(diffs)} pair(s)"
        else:
            adj = [next(adj_sec) for _ in diffs]
            adj_eq = [next(adj_eq_sec) for _ in diffs]
            family = f"secondary metric: Holm over all {n_secondary} secondary pair-metric tests"
        slices = _slice_table(slice_rows, metric, slice_tables) if uv.grouped else None
        combos = [pair for pair, _ in diffs]
        clusters = _pair_clusterings(slices, combos)
        seed_wins = _p_superiors(mats, combos, hib)
        detect = [d.detectable(alpha=alpha) for _, d in diffs]
        pairs = []
        for k, ((a, b), d) in enumerate(diffs):
            pa, pe = adj[k], adj_eq[k]
            oriented = _oriented(d.estimate, hib)
            word = _word(decide(oriented, pa, pe, alpha), a, b)
            if not (d.components.unit_estimable and d.components.seed_estimable):
                word = UNDECIDED  # one test unit or one seed a model: nothing generalises beyond them
            why = undecided_reason(d, word, a, b)
            pairs.append(
                PairVerdict(
                    a, b, d.estimate, d.ci_low, d.ci_high, d.se, d.df, d.p_value, pa,
                    p_eq[k], pe, rope, word, seed_wins[k], detect[k],
                    d.n_units, d.n_seeds_a, d.n_seeds_b, d.components.seed_estimable,
                    clusters[k], d.components.seed_df, why,
                )
            )  # fmt: skip
        means = {m: float(np.nanmean(mats[m])) for m in mats if np.isfinite(mats[m]).any()}
        best = None
        if len(means) >= 2:
            best = (max if hib else min)(sorted(means), key=lambda m: means[m])
        marks = {}
        by_pair = {frozenset((p.a, p.b)): p for p in pairs}
        for m in means:
            if m == best:
                marks[m] = "best"
                continue
            p = by_pair.get(frozenset((m, best)))
            if p is None:
                marks[m] = "untested"
            elif p.verdict == EQUIVALENT:
                marks[m] = "equivalent"
            elif p.verdict == UNDECIDED:
                marks[m] = "undecided"
            else:
                marks[m] = "worse"  # the best's mean is the larger, so a decided pair favours it
        ranking = None
        if metric == primary and len(mats) >= 2 and all(np.isfinite(v).all() for v in mats.values()):
            ranking = rank_uncertainty(mats, hib, rank_samples)
        out[metric] = MetricVerdicts(
            metric, metric == primary, uv.unit, len(units), hib, means, best, marks, family, pairs, ranking
        )
    return out


#: Below this many df the seeds' part of the variance is too poorly known to trust a verdict on it
#: (t quantile 4.3 at 2 df, 12.7 at 1): an undecided pair then says the seeds were too few.
FEW_SEED_DF = 3.0


def undecided_reason(d: Difference, word: str, a: str, b: str) -> str | None:
    """Why a pair is undecided (or, when decided with a one-seed side, what it assumed), in words
    the report prints: the reason "too few seeds to estimate training noise" is the one a reader
    can act on (`--seeds`)."""
    comp = d.components
    if not comp.unit_estimable:
        return "one test unit: nothing generalises beyond it"
    if not comp.seed_estimable:
        return "one seed per model: too few seeds to estimate training noise"
    one = [m for m, n in ((a, d.n_seeds_a), (b, d.n_seeds_b)) if n < 2]
    seed_share = (comp.seed_var_a + comp.seed_var_b) / d.se**2 if d.se > 0 else 0.0
    few = comp.seed_df < FEW_SEED_DF and seed_share >= 0.5
    if word == UNDECIDED and (one or few):
        return (
            f"too few seeds to estimate training noise ({d.n_seeds_a} vs {d.n_seeds_b} seeds, seed df "
            f"{comp.seed_df:.1f}; seeds carry {seed_share:.0%} of the variance)"
        )
    if one:
        other = b if one[0] == a else a
        return f"{one[0]} has one seed: its training noise is taken to be {other}'s (same protocol)"
    return None


def _slice_table(
    slice_rows: pd.DataFrame | None, metric: str, cache: dict | None = None
) -> pd.DataFrame | None:
    """Slices x models of one metric (seed-averaged), indexed by (fold, case, patient). With
    `cache`, the first call pivots every metric at once (780k slice rows at 50 models x 10 seeds x
    5 folds) and later calls pick their metric; a slice without a value for some metric keeps an
    all-NaN row there, which each pair drops as the one-metric pivot would have."""
    if slice_rows is None or "patient" not in slice_rows or metric not in slice_rows:
        return None
    if cache is None:
        wide = slice_rows.pivot_table(index=["fold", "case", "patient"], columns="model", values=metric)
        return wide.replace([np.inf, -np.inf], np.nan)
    if "all" not in cache:
        present = [m for m in METRICS if m in slice_rows]
        cache["all"] = slice_rows.pivot_table(
            index=["fold", "case", "patient"], columns="model", values=present
        )
    wide = cache["all"][metric] if metric in cache["all"].columns.get_level_values(0) else None
    return wide.replace([np.inf, -np.inf], np.nan) if wide is not None else None


def _pair_clustering(wide: pd.DataFrame | None, a: str, b: str) -> dict | None:
    if wide is None or a not in wide or b not in wide:
        return None
    pair = wide[[a, b]].dropna()
    c = clustering((pair[a] - pair[b]).to_numpy(), pair.index.get_level_values("patient").astype(str))
    return asdict(c) if c else None


def _pair_clusterings(wide: pd.DataFrame | None, combos: list[tuple[str, str]]) -> list[dict | None]:
    """`_pair_clustering` of every pair, the table turned into arrays and the patients coded once
    (the same numbers: each pair still drops the slices either model lacks)."""
    if wide is None:
        return [None] * len(combos)
    col = {str(m): i for i, m in enumerate(wide.columns)}
    values = wide.to_numpy(dtype=float)
    finite = ~np.isnan(values)
    labels, inverse = np.unique(wide.index.get_level_values("patient").astype(str), return_inverse=True)
    inverse = inverse.ravel()
    out: list[dict | None] = []
    for a, b in combos:
        if a not in col or b not in col:
            out.append(None)
            continue
        i, j = col[a], col[b]
        keep = finite[:, i] & finite[:, j]
        if keep.all():
            c = _clustering_coded(values[:, i] - values[:, j], inverse, labels.size)
        else:
            codes, sub = np.unique(inverse[keep], return_inverse=True)
            c = _clustering_coded(values[keep, i] - values[keep, j], sub.ravel(), codes.size)
        out.append(asdict(c) if c else None)
    return out


def _batched_differences(mats: dict[str, np.ndarray], combos: list[tuple[str, str]]) -> list[Difference]:
    """`difference(mats[a], mats[b])` of every pair, one `pair_differences` call per seed-count
    design (a batch per (S_a, S_b); usually a single one)."""
    out: list[Difference | None] = [None] * len(combos)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (a, b) in enumerate(combos):
        groups.setdefault((mats[a].shape[0], mats[b].shape[0]), []).append(k)
    for ks in groups.values():
        a = np.stack([mats[combos[k][0]] for k in ks])
        b = np.stack([mats[combos[k][1]] for k in ks])
        for k, d in zip(ks, pair_differences(a, b), strict=True):
            out[k] = d
    return out  # type: ignore[return-value]


def _p_superiors(
    mats: dict[str, np.ndarray], combos: list[tuple[str, str]], higher_is_better: bool
) -> list[float]:
    """`p_superior` of every pair in the metric's direction, from each model's seed means once."""
    sign = 1.0 if higher_is_better else -1.0
    means = {m: (sign * v).mean(axis=1) for m, v in mats.items()}
    out = []
    for a, b in combos:
        ra, rb = means[a], means[b]
        wins = (ra[:, None] > rb[None, :]).sum() + 0.5 * (ra[:, None] == rb[None, :]).sum()
        out.append(float(wins / (ra.size * rb.size)))
    return out


def rank_uncertainty(
    mats: dict[str, np.ndarray], higher_is_better: bool, samples: int = RANK_SAMPLES, seed: int = RANK_SEED
) -> dict:
    """Ranking stability by a two-level bootstrap (challengeR's idea, patients and seeds here):
    resample units (the same for every model), then each model's seeds; rank the models' means.
    Per model: P(rank 1), median rank and 95 % rank interval; Kendall's tau of each resampled
    ranking with the full one (mean and 2.5 % quantile)."""
    models = sorted(mats)
    rng = np.random.default_rng(seed)
    n_units = next(iter(mats.values())).shape[1]
    unit_counts = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=samples)  # B x P
    boot = np.empty((samples, len(models)))
    for j, m in enumerate(models):
        s = mats[m].shape[0]
        seed_counts = rng.multinomial(s, np.full(s, 1 / s), size=samples)  # B x S
        boot[:, j] = np.einsum("bs,sp,bp->b", seed_counts, mats[m], unit_counts) / (s * n_units)
    sign = -1.0 if higher_is_better else 1.0
    ranks = stats.rankdata(sign * boot, axis=1)
    full = stats.rankdata(sign * np.array([mats[m].mean() for m in models]))
    taus = kendall_taus(full, ranks)
    taus = np.nan_to_num(taus, nan=1.0)  # a resample where every model ties agrees trivially
    per_model = {
        m: {
            "rank": float(full[j]),
            "p_rank1": float((ranks[:, j] == 1).mean()),
            "median_rank": float(np.median(ranks[:, j])),
            "rank_low": float(np.percentile(ranks[:, j], 2.5)),
            "rank_high": float(np.percentile(ranks[:, j], 97.5)),
            "rank_counts": {str(k): int((ranks[:, j] == k).sum()) for k in range(1, len(models) + 1)},
        }
        for j, m in enumerate(models)
    }
    return {
        "samples": samples,
        "seed": seed,
        "models": per_model,
        "kendall_tau_mean": float(taus.mean()),
        "kendall_tau_low": float(np.percentile(taus, 2.5)),
    }


def kendall_taus(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """`scipy.stats.kendalltau(x, y).statistic` (tau-b) of `x` against every row of `ys` at once,
    without the p-values nobody reads (their exact distribution was most of the cost): concordant
    minus discordant pairs from the signs of all pairwise differences, exact integers, then
    scipy's own `cmd / sqrt(tot - xtie) / sqrt(tot - ytie)`, clipped to [-1, 1]; NaN where one side
    ties everywhere."""
    x, ys = np.asarray(x, dtype=float), np.atleast_2d(np.asarray(ys, dtype=float))
    i, j = np.triu_indices(x.size, 1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(ys[:, i] - ys[:, j])
    tot = i.size
    xtie, ytie = int((sx == 0).sum()), (sy == 0).sum(axis=1)
    cmd = (sy * sx).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = cmd / np.sqrt(tot - xtie) / np.sqrt(tot - ytie)
    tau = np.minimum(1.0, np.maximum(-1.0, tau))
    return np.where((xtie == tot) | (ytie == tot), np.nan, tau)


def run_design(uv: UnitValues, metric: str) -> tuple[Design, int, int] | None:
    """The run's variance components for `metric`, its seeds per model and units (or None)."""
    units = uv.units_of(metric)
    if not units:
        return None
    mats = [uv.matrix(m, metric, units) for m in uv.models]
    mats = [m for m in mats if not np.isnan(m).any()]
    if len(mats) < 2:
        return None
    seeds = min(m.shape[0] for m in mats)
    return estimate_design(mats), seeds, len(units)


def detectable_statement(uv: UnitValues, metric: str, power: float = POWER, alpha: float = ALPHA) -> dict:
    """What the run could have seen: the smallest difference of `metric` a pair of its models
    would show with `power`, from the run's own variance components."""
    found = run_design(uv, metric)
    if found is None:
        return {"metric": metric, "detectable": math.nan, "power": power}
    design, seeds, units = found
    return {
        "metric": metric,
        "power": power,
        "alpha": alpha,
        "seeds": seeds,
        "units": units,
        "unit": uv.unit,
        "detectable": design.detectable(seeds, units, power, alpha),
        "components": asdict(design),
    }


__all__ = [
    "EQUIVALENT",
    "UNDECIDED",
    "UnitValues",
    "MetricVerdicts",
    "PairVerdict",
    "unit_values",
    "verdicts",
    "undecided_reason",
    "clustering",
    "rank_uncertainty",
    "run_design",
    "detectable_statement",
]
