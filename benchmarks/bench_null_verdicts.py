"""Verdicts on real trained networks with no true difference: one architecture's seeds split in
two pseudo-models ("A" = the first half of the seeds, "B" = the rest), then the old slice-level
test (Wilcoxon over seed-averaged slices, Holm over the pair) and covbench's verdicts are asked
whether A and B differ. Any "different" or "better" is false by construction.

    python benchmarks/bench_null_verdicts.py RUN_DIR [--model unet]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from covbench.metrics import HIGHER_IS_BETTER, METRICS
from covbench.reports.aggregate import case_means
from covbench.reports.report import load_rows
from covbench.reports.stats import compare_models
from covbench.reports.verdicts import unit_values, verdicts


def pseudo_models(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    mine = rows[rows["model"] == model].copy()
    seeds = sorted(mine["seed"].unique())
    half = set(seeds[: (len(seeds) + 1) // 2])
    mine["model"] = ["A" if s in half else "B" for s in mine["seed"]]
    return mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", default=None, help="architecture whose seeds are split (default: each)")
    args = parser.parse_args()
    rows = load_rows(args.run_dir)
    models = [args.model] if args.model else sorted(rows["model"].unique())
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
