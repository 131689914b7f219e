"""Significance across models on paired per-case values (Demšar 2006): Friedman over all models,
then pairwise Wilcoxon signed-rank tests with Holm's step-down correction."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class PairTest:
    a: str
    b: str
    statistic: float
    p_value: float
    p_adjusted: float
    n: int
    mean_difference: float  # mean(a - b)


@dataclass
class MetricTests:
    metric: str
    n_cases: int
    friedman_statistic: float | None
    friedman_p: float | None
    pairs: list[PairTest]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pairs"] = [asdict(p) for p in self.pairs]
        return d


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, monotone and capped at 1, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        p = p_values[i]
        if math.isnan(p):
            continue
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def paired_matrix(per_case: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Cases x models, keeping only cases every model has a finite value for."""
    wide = per_case.pivot_table(index=["fold", "case"], columns="model", values=metric, aggfunc="mean")
    return wide.replace([np.inf, -np.inf], np.nan).dropna()


def compare_models(per_case: pd.DataFrame, metric: str) -> MetricTests:
    wide = paired_matrix(per_case, metric)
    models = list(wide.columns)
    f_stat = f_p = None
    if len(models) >= 3 and len(wide) >= 2:
        res = stats.friedmanchisquare(*[wide[m].to_numpy() for m in models])
        f_stat, f_p = float(res.statistic), float(res.pvalue)
    pairs: list[PairTest] = []
    for a, b in itertools.combinations(models, 2):
        diff = wide[a].to_numpy() - wide[b].to_numpy()
        if len(diff) == 0 or np.all(diff == 0):
            stat, p = math.nan, 1.0
        else:
            res = stats.wilcoxon(wide[a], wide[b], zero_method="wilcox")
            stat, p = float(res.statistic), float(res.pvalue)
        pairs.append(
            PairTest(a, b, stat, p, math.nan, len(diff), float(diff.mean()) if len(diff) else math.nan)
        )
    for pair, adj in zip(pairs, holm([p.p_value for p in pairs]), strict=True):
        pair.p_adjusted = adj
    return MetricTests(metric, len(wide), f_stat, f_p, pairs)
