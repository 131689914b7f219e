"""Milliseconds per case: covbench's eight metrics vs MedPy and MONAI computing ASSD + HD95 alone.

Plain script, single-threaded (BLAS/OpenMP/torch pinned to one thread before they load):

    python benchmarks/bench_metrics.py [--cases 60] [--repeats 5] [--seed 0]

Masks are lesion-like: 1-4 elliptical blobs per slice with ragged edges, predictions perturbed
(shifted, dilated or eroded, a false-positive speck now and then), sizes scaled with the slice.
Every timing is the best of ``--repeats`` passes over all cases, divided by the number of cases.
MedPy and MONAI are optional (``pip install covbench[dev]``); missing ones are skipped.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from covbench.metrics import batch_metrics, segmentation_metrics  # noqa: E402


def lesion_case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred, target, prob) for one slice of side ``size``."""
    yy, xx = np.mgrid[:size, :size]
    target = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.02, 0.09) * size
        ang = rng.uniform(0, np.pi)
        a, b = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.5, 1.0)
        dy, dx = yy - cy, xx - cx
        u = dy * np.cos(ang) + dx * np.sin(ang)
        v = -dy * np.sin(ang) + dx * np.cos(ang)
        target |= (u / a) ** 2 + (v / b) ** 2 <= 1
    # ragged edge: drop rim pixels where smooth noise is low
    rim = target & ~ndi.binary_erosion(target, iterations=2)
    noise = ndi.gaussian_filter(rng.standard_normal((size, size)), size / 100)
    target &= ~(rim & (noise < -0.05))
    pred = ndi.shift(target.astype(float), rng.uniform(-2, 2, 2), order=1) > 0.5
    pred = ndi.binary_dilation(pred) if rng.random() < 0.5 else ndi.binary_erosion(pred)
    if rng.random() < 0.3:
        cy, cx = rng.integers(10, size - 10, 2)
        pred[cy - 2 : cy + 2, cx - 2 : cx + 3] = True
    prob = np.clip(pred * 0.8 + 0.15 * rng.random((size, size)), 0, 1).astype(np.float32)
    return pred, target, prob


def best_ms(fn, cases, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(cases)
        best = min(best, time.perf_counter() - t0)
    return best / len(cases) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    try:
        from medpy.metric import binary as medpy_binary
    except ImportError:
        medpy_binary = None
    try:
        import torch
        from monai.metrics import (
            compute_average_surface_distance,
            compute_hausdorff_distance,
            compute_surface_dice,
        )
        from monai.metrics.utils import get_edge_surface_distance

        torch.set_num_threads(1)
    except ImportError:
        torch = None

    cpu = platform.processor() or platform.machine()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {cpu}")
    print("single thread; best of", args.repeats, "passes; ms per case")
    rng = np.random.default_rng(args.seed)
    for size in args.sizes:
        cases = []
        for _ in range(args.cases):
            p, t, prob = lesion_case(rng, size)
            sp = tuple(float(v) for v in rng.uniform(0.6, 0.9) * np.array([1.0, rng.uniform(0.9, 1.1)]))
            cases.append((p, t, prob, sp))
        P = np.stack([c[0] for c in cases])
        T = np.stack([c[1] for c in cases])
        PR = np.stack([c[2] for c in cases])
        S = np.array([c[3] for c in cases])

        def ours(cs):
            for p, t, prob, sp in cs:
                segmentation_metrics(p, t, spacing=sp, prob=prob)

        rows = [("covbench segmentation_metrics (all 8)", best_ms(ours, cases, args.repeats))]

        def ours_batch(_cs, P=P, T=T, S=S, PR=PR):
            batch_metrics(P, T, S, probs=PR)

        rows.append(("covbench batch_metrics (all 8)", best_ms(ours_batch, cases, args.repeats)))
        ref_times = {}
        diffs = {}
        mine = [segmentation_metrics(p, t, spacing=sp) for p, t, _, sp in cases]
        mine_dir = [segmentation_metrics(p, t, spacing=sp, hd95_mode="max_directed") for p, t, _, sp in cases]
        if medpy_binary is not None:

            def medpy(cs):
                for p, t, _, sp in cs:
                    medpy_binary.assd(p, t, voxelspacing=sp)
                    medpy_binary.hd95(p, t, voxelspacing=sp)

            ref_times["MedPy assd + hd95"] = best_ms(medpy, cases, args.repeats)
            for key, fn, ref in (("assd", medpy_binary.assd, mine), ("hd95", medpy_binary.hd95, mine)):
                diffs[f"{key} vs MedPy"] = max(
                    abs(m[key] - fn(p, t, voxelspacing=sp)) / fn(p, t, voxelspacing=sp)
                    for m, (p, t, _, sp) in zip(ref, cases, strict=True)
                )
        if torch is not None:
            tens = [
                (torch.from_numpy(p)[None, None], torch.from_numpy(t)[None, None], sp)
                for p, t, _, sp in cases
            ]

            def monai(cs):
                for p, t, sp in cs:
                    compute_average_surface_distance(
                        p, t, include_background=True, symmetric=True, spacing=sp
                    )
                    compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp)

            def monai_nsd(cs):
                for p, t, sp in cs:
                    compute_surface_dice(p, t, [3.0], include_background=True, spacing=sp, use_subvoxels=True)

            ref_times["MONAI assd + hd95"] = best_ms(monai, tens, args.repeats)
            rows.append(
                ("MONAI surface dice (NSD) alone", best_ms(monai_nsd, tens, max(1, args.repeats // 2)))
            )
            worst = {
                "assd vs MONAI": 0.0,
                "hd95 (max_directed) vs MONAI": 0.0,
                "hd95 vs MONAI's distances, float64 quantile": 0.0,
                "nsd vs MONAI": 0.0,
            }
            for m, md, (p, t, sp) in zip(mine, mine_dir, tens, strict=True):
                a = compute_average_surface_distance(
                    p, t, include_background=True, symmetric=True, spacing=sp
                ).item()
                h = compute_hausdorff_distance(
                    p, t, include_background=True, percentile=95, spacing=sp
                ).item()
                n = compute_surface_dice(
                    p, t, [3.0], include_background=True, spacing=sp, use_subvoxels=True
                ).item()
                worst["assd vs MONAI"] = max(worst["assd vs MONAI"], abs(m["assd"] - a) / a)
                worst["hd95 (max_directed) vs MONAI"] = max(
                    worst["hd95 (max_directed) vs MONAI"], abs(md["hd95"] - h) / h
                )
                worst["nsd vs MONAI"] = max(worst["nsd vs MONAI"], abs(m["nsd"] - n) / n)
                # MONAI's HD95 interpolates in float32 (torch.quantile on float32 distances); the
                # same distances interpolated in float64 show the definitions agree
                _, dist, _ = get_edge_surface_distance(p[0, 0], t[0, 0], spacing=sp, symmetric=True)
                h64 = max(torch.quantile(d.double(), 0.95).item() for d in dist)
                key = "hd95 vs MONAI's distances, float64 quantile"
                worst[key] = max(worst[key], abs(md["hd95"] - h64) / h64)
            diffs.update(worst)

        fg = float(T.mean())
        print(f"\n{size}x{size}: {args.cases} cases, lesion fraction {fg:.3f}")
        ours_ms = rows[0][1]
        for name, ms in rows + list(ref_times.items()):
            print(f"  {name:40s} {ms:8.3f} ms")
        for name, ms in ref_times.items():
            print(f"  {name} / covbench all-8: {ms / ours_ms:6.1f}x")
        for name, d in diffs.items():
            print(f"  largest relative difference, {name:44s} {d:.2e}")


if __name__ == "__main__":
    main()
