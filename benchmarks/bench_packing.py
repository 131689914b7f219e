"""The packing decision's inputs and outcome at the paper preset (docs/performance.md).

    python benchmarks/bench_packing.py [--gpu-gib 140] [--trials 15] [--gpus 1]

Per reference model: parameters, the float32 activation memory of a training batch measured by
the contract check on this CPU, covbench's per-trial GPU memory estimate (covbench.execution.packing), and
the peak measured on one H200 at the paper preset (issue 13; bf16 autocast). Then the decision
`plan_packing` takes for the paper protocol on the given GPUs.
"""

from __future__ import annotations

import argparse

from covbench.checks import check_config
from covbench.config import PRESETS, build_config
from covbench.execution.packing import H200_PEAK_GIB, plan_packing, trial_memory_bytes

PAPER_RESIDENT_SLICES = 413 + 137  # train + validation slices of the paper preset's phantom
GIB = 2**30


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu-gib", type=float, default=140.0, help="free memory of one GPU")
    ap.add_argument("--trials", type=int, default=15, help="trials to place (paper protocol: 3 x 5)")
    ap.add_argument("--gpus", type=int, default=1)
    args = ap.parse_args(argv)
    cfg = build_config(models=list(H200_PEAK_GIB), n_seeds=1, preset=PRESETS["paper"])
    checks = check_config(cfg)
    estimates = {}
    print(f"{'model':8} {'params':>11} {'activations GiB':>15} {'estimate GiB':>12} {'H200 peak GiB':>13}")
    for name, c in checks.items():
        est = trial_memory_bytes(c.parameters, c.activation_bytes_per_batch, PAPER_RESIDENT_SLICES, 224)
        estimates[name] = est / GIB
        print(
            f"{name:8} {c.parameters:11,d} {c.activation_bytes_per_batch / GIB:15.2f} {est / GIB:12.1f} "
            f"{H200_PEAK_GIB[name]:13.1f}"
        )
    packing = plan_packing(
        None, args.gpus, n_trials=args.trials, trial_memory=max(estimates.values()) * GIB,
        gpu_memory=args.gpu_gib * GIB,
    )  # fmt: skip
    print(f"packing on {args.gpus} GPU(s) of {args.gpu_gib:g} GiB free: {packing.reason}")
    return estimates


if __name__ == "__main__":
    main()
