"""Verdicts on real trained networks with no true difference: one architecture's seeds split in
two pseudo-models ("A" = the first half of the seeds, "B" = the rest), then the old slice-level
test (Wilcoxon over seed-averaged slices, Holm over the pair) and covbench's verdicts are asked
whether A and B differ. Any "different" or "better" is false by construction.

    python benchmarks/bench_null_verdicts.py RUN_DIR [--model unet]
    python benchmarks/bench_null_verdicts.py RUN_DIR --splits
        # every split of each architecture's seeds into two pseudo-models (1 vs 4, 2 vs 3 at 5
        # seeds), primary metric: false 'better' of the rule before 2026-12-06 and of today's
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.aggregate import case_means
from covbench.reports.inference import ALPHA, ROPE, differences
from covbench.reports.report import load_rows
from covbench.reports.stats import compare_models
from covbench.reports.verdicts import unit_values, verdicts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rule_before import differences_before  # noqa: E402


def pseudo_models(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    mine = rows[rows["model"] == model].copy()
    seeds = sorted(mine["seed"].unique())
    half = set(seeds[: (len(seeds) + 1) // 2])
    mine["model"] = ["A" if s in half else "B" for s in mine["seed"]]
    return mine


def split_rates(rows: pd.DataFrame, models: list[str], metric: str = "dice") -> None:
    """Every split of each architecture's seeds into A and B: how many the two rules call 'better'."""
    uv = unit_values(rows)
    units = uv.units_of(metric)
    print("| architecture | split | splits | false 'better' before | false 'better' now |")
    print("|---|---|---|---|---|")
    for model in models:
        m = uv.matrix(model, metric, units)
        seeds = range(m.shape[0])
        for k in range(1, m.shape[0] // 2 + 1):
            splits = [c for c in itertools.combinations(seeds, k)]
            a = np.stack([m[list(c)] for c in splits])
            b = np.stack([m[[s for s in seeds if s not in c]] for c in splits])
            counts = []
            for rule in (differences_before, differences):
                batch = rule(a, b)
                decided = (batch.p_value < ALPHA) & ~(batch.p_equivalence(ROPE[metric]) < ALPHA)
                counts.append(int(decided.sum()))
            print(f"| {model} | {k} vs {m.shape[0] - k} | {len(splits)} | {counts[0]} | {counts[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", default=None, help="architecture whose seeds are split (default: each)")
    parser.add_argument("--splits", action="store_true", help="every seed split, old rule against new")
    args = parser.parse_args()
    rows = load_rows(args.run_dir)
    models = [args.model] if args.model else sorted(rows["model"].unique())
    if args.splits:
        split_rates(rows, models)
        return
    print("| architecture | seeds A / B | metrics the old test calls different | covbench verdicts |")
    print("|---|---|---|---|")
    for model in models:
        null = pseudo_models(rows, model)
        per_case = case_means(null)
        old = [
            m
            for m in METRICS
            if m in null
            and (t := compare_models(per_case, m, HIGHER_IS_BETTER[m])).pairs
            and t.pairs[0].p_adjusted < 0.05
        ]
        found = verdicts(unit_values(null), slice_rows=null)
        words = {m: v.pairs[0].verdict for m, v in found.items() if v.pairs}
        false = [m for m, w in words.items() if w.endswith("better")]
        n_a = null.loc[null["model"] == "A", "seed"].nunique()
        n_b = null.loc[null["model"] == "B", "seed"].nunique()
        summary = ", ".join(f"{m}: {w}" for m, w in words.items())
        print(
            f"| {model} | {n_a} / {n_b} | {len(old)} of {len(METRICS)} ({', '.join(old) or 'none'}) | "
            f"{len(false)} 'better' of {len(words)} ({summary}) |"
        )


if __name__ == "__main__":
    main()
