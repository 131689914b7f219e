"""Per-case rows -> per-model summaries.

Aggregation (stated in every table caption): for each test case, average over seeds; then mean
± SD (ddof=1) over cases. This matches how Salehi et al. report Table 1 (spread over test
slices). The seed view is the mean over seeds of each seed's case-mean, ± the SD between seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from covbench.metrics import METRICS

CASE_KEYS = ["model", "fold", "case"]


def case_means(rows: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """One row per (model, fold, case): each metric averaged over seeds (NaN-aware)."""
    present = [m for m in metrics if m in rows.columns]
    return rows.groupby(CASE_KEYS, sort=True)[present].mean().reset_index()


def _stats(values: pd.Series) -> dict[str, float | int]:
    v = values.to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "sd": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
        "n": n,
        "n_undefined": int(v.size - n),
    }


def summarize(rows: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> dict[str, dict[str, dict]]:
    """{model: {metric: {mean, sd, n, n_undefined, seed_mean, seed_sd, n_seeds}}}."""
    per_case = case_means(rows, metrics)
    per_seed = rows.groupby(["model", "seed"])[[m for m in metrics if m in rows.columns]].mean().reset_index()
    out: dict[str, dict[str, dict]] = {}
    for model, group in per_case.groupby("model", sort=True):
        seeds = per_seed[per_seed["model"] == model]
        entry: dict[str, dict] = {}
        for metric in metrics:
            if metric not in group.columns:
                continue
            s = _stats(group[metric])
            seed_stats = _stats(seeds[metric])
            s.update(seed_mean=seed_stats["mean"], seed_sd=seed_stats["sd"], n_seeds=seed_stats["n"])
            entry[metric] = s
        out[str(model)] = entry
    return out


def empty_case_counts(rows: pd.DataFrame) -> dict[str, dict[str, int]]:
    """How many (seed, case) rows each empty-mask rule touched, per model."""
    if "empty_case" not in rows.columns:
        return {}
    table = rows.groupby(["model", "empty_case"]).size().unstack(fill_value=0)
    return {str(m): {str(k): int(v) for k, v in r.items()} for m, r in table.iterrows()}
