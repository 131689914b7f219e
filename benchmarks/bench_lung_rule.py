"""Data: agreement of the lung-region rule (for data without lung masks) with known lung masks.

Plain script:

    python benchmarks/bench_lung_rule.py [--patients 8] [--size 128] [--slices 24] [--workdir DIR]

For every volume with a known lung mask (the phantom's, both intensity conventions), the rule
`preprocess.estimate_body_lung` (Otsu threshold, body = tissue with holes filled per slice, lung =
enclosed air opened twice) is applied to the windowed volume and compared with the known mask:
Dice, and the fraction of known-lung slices the rule also finds lung on (what the slice selection
and crop depend on). Prints one line per case and the mean.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from covbench.datasets import covid_ct_seg
from covbench.datasets.phantom import generate_phantom
from covbench.datasets.preprocess import LUNG_WINDOW, estimate_body_lung, to_uint8


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dest = args.workdir or Path(tmp)
        root = generate_phantom(dest, n_patients=args.patients, size=args.size, n_slices=args.slices)
        dices, slice_recall = [], []
        for case in covid_ct_seg.load(root):
            known = case.lung.astype(bool)
            _, lung = estimate_body_lung(to_uint8(case.image, case.intensity, LUNG_WINDOW))
            d = dice(lung, known)
            known_z = known.reshape(known.shape[0], -1).any(axis=1)
            found_z = lung.reshape(lung.shape[0], -1).any(axis=1)
            recall = float((known_z & found_z).sum() / max(known_z.sum(), 1))
            dices.append(d)
            slice_recall.append(recall)
            print(f"{case.case_id:24s} {case.intensity:9s} dice {d:.3f}  lung-slice recall {recall:.3f}")
        print(f"mean over {len(dices)} cases: dice {np.mean(dices):.3f} (min {np.min(dices):.3f}), "
              f"lung-slice recall {np.mean(slice_recall):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
