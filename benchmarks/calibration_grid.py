"""The extended calibration grid (issue 33): unequal and small seed counts, skewed and diverging
seed effects, and seed x patient structures resampled from real run folders, each simulated with
no true difference (and with 0.02 / 0.05 Dice for power). `bench_calibration.py --grid extended`
prints it; tests/test_inference.py runs a few rows of it fast.

Each scenario draws per-patient values (n, seeds, patients) of two models,

    y[m, s, p] = delta [m = A] + u[p] + v[m, p] + w[m, s] + e[m, s, p]

with e the seed x patient (network x patient) noise; `seed_law` shapes w: "normal", "skewed" (a
left-skewed gamma, skewness -2, as a model that is sometimes much worse), "heavy" (Student t with
3 df: symmetric, heavy-tailed) or "diverging" (with
probability `diverge` a seed loses `drop`, centred so that the mean is unchanged: the null is
equal expected Dice). A "resampled" scenario takes u, w and e from a real seeds x patients matrix:
its patient means, its seed effects and its residual cells, drawn with replacement."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Scenario:
    name: str
    seeds_a: int
    seeds_b: int
    patients: int = 27
    sigma_v: float = 0.02  # patient x model
    sigma_w: float = 0.01  # seed (both sides, unless sigma_w_a is set)
    sigma_e: float = 0.045  # network x patient: ci.json's residual SD of Dice
    seed_law: str = "normal"  # of side A's seeds: normal | heavy | skewed | diverging
    diverge: float = 0.0
    drop: float = 0.0
    sigma_w_a: float | None = None
    source: str | None = None  # a key of `reals`: resample that real structure

    def simulate(self, rng, n: int, delta: float = 0.0, reals: dict | None = None):
        if self.source is not None:
            return resample(rng, n, (reals or {})[self.source], self.seeds_a, self.seeds_b, delta)
        p = self.patients
        u = rng.normal(0.0, 0.1, (n, 1, p))
        out = []
        for side, (s, shift) in enumerate(((self.seeds_a, delta), (self.seeds_b, 0.0))):
            sw = self.sigma_w_a if side == 0 and self.sigma_w_a is not None else self.sigma_w
            w = rng.normal(0.0, sw, (n, s, 1))
            if side == 0 and self.seed_law == "heavy":  # Student t with 3 df, scaled to SD sw
                w = rng.standard_t(3, (n, s, 1)) * sw / np.sqrt(3.0)
            elif side == 0 and self.seed_law == "skewed":
                g = rng.gamma(1.0, 1.0, (n, s, 1))  # skewness 2, mean 1, SD 1
                w = -(g - 1.0) * sw
            elif side == 0 and self.seed_law == "diverging":
                w = w - self.drop * ((rng.random((n, s, 1)) < self.diverge) - self.diverge)
            v = rng.normal(0.0, self.sigma_v, (n, 1, p))
            e = rng.normal(0.0, self.sigma_e, (n, s, p))
            out.append(shift + u + v + w + e)
        return out


def decompose(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient means, centred seed effects and residual cells (rescaled to their unbiased size)."""
    s, p = m.shape
    rows, cols, grand = m.mean(axis=1), m.mean(axis=0), m.mean()
    resid = (m - rows[:, None] - cols[None, :] + grand) * np.sqrt(s * p / ((s - 1) * (p - 1)))
    return cols, rows - rows.mean(), resid


def resample(rng, n: int, real: dict, seeds_a: int, seeds_b: int, delta: float = 0.0):
    """Two models with the structures of real["a"] and real["b"] (seeds x patients matrices of one
    metric, the same patients): patient means of b for both (no true difference), each side's own
    seed effects and residual cells drawn with replacement."""
    base, _, _ = decompose(real["b"])
    out = []
    for key, s, shift in (("a", seeds_a, delta), ("b", seeds_b, 0.0)):
        _, w, e = decompose(real[key])
        p = base.size
        ws = w[rng.integers(0, w.size, (n, s))][:, :, None]
        cells = e.ravel()[rng.integers(0, e.size, (n, s, p))]
        out.append(shift + base[None, None, :] + ws + cells)
    return out


def matrices_of(path: Path, metric: str = "dice") -> dict[str, np.ndarray]:
    """Seeds x patients matrix per model from a summary.json with `unit_values` (or a run folder
    holding one): what the resampled scenarios draw from."""
    summary = path / "summary.json" if path.is_dir() else path
    values = json.loads(summary.read_text())["unit_values"]["values"]
    out = {}
    for model, per_metric in values.items():
        per_seed = per_metric[metric]
        units = sorted(set.intersection(*(set(v) for v in per_seed.values())))
        out[model] = np.array([[per_seed[s][u] for u in units] for s in sorted(per_seed, key=int)])
    return out


#: The main job of 2026-12-06 (issue 33): Res-UNet's five seed means of test Dice, one half-diverged.
MAIN_JOB_RESUNET_SEEDS = (0.734, 0.696, 0.728, 0.740, 0.594)


def main_job_like(ci: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Res-UNet-like (the main job's five seed means on ci.json's Res-UNet residuals) against
    U-Net-like (ci.json's U-Net): the structure of the issue's 0.12 false 'better'."""
    cols, _, resid = decompose(ci["resunet"])
    seeds = np.array(MAIN_JOB_RESUNET_SEEDS) - np.mean(MAIN_JOB_RESUNET_SEEDS)
    rng = np.random.default_rng(0)
    cells = resid.ravel()[rng.integers(0, resid.size, (seeds.size, cols.size))]
    return {"a": cols[None, :] + seeds[:, None] + cells, "b": ci["unet"]}


def reals_of(ci_json: Path, runs: list[Path] = ()) -> tuple[dict[str, dict], list[Scenario]]:
    """The real structures to resample (ci.json, the main job's, any run folder given) and one
    scenario per ordered pair of a given run's models at its own seed count."""
    ci = matrices_of(ci_json)
    reals = {"ci.json": {"a": ci["resunet"], "b": ci["unet"]}, "main job": main_job_like(ci)}
    extra = []
    for run in runs:
        mats = matrices_of(run)
        for a in sorted(mats):
            for b in sorted(mats):
                if a != b:
                    key = f"{run.name}: {a} vs {b}"
                    reals[key] = {"a": mats[a], "b": mats[b]}
                    s = mats[a].shape[0]
                    extra.append(Scenario(f"resampled {key} {s} vs {s}", s, mats[b].shape[0], source=key))
    return reals, extra


def grid(quick: bool = False) -> list[Scenario]:
    scen = []
    for sa, sb in ((1, 3), (2, 2), (2, 10), (3, 5)):
        for sw in (0.0, 0.01, 0.02):
            scen.append(Scenario(f"{sa} vs {sb} seeds, seed SD {sw}", sa, sb, sigma_w=sw))
        scen.append(
            Scenario(f"{sa} vs {sb} seeds, 3 patients", sa, sb, patients=3, sigma_v=0.05, sigma_w=0.02)
        )
    for s in (3, 5, 10):
        scen.append(Scenario(f"heavy-tailed seeds (t3) {s} vs {s}", s, s, seed_law="heavy", sigma_w_a=0.02))
        scen.append(Scenario(f"skewed seeds (gamma) {s} vs {s}", s, s, seed_law="skewed", sigma_w_a=0.02))
        for pi, drop in ((0.15, 0.05), (0.15, 0.1), (0.2, 0.13)):
            scen.append(
                Scenario(f"diverging {pi:.0%} by {drop} {s} vs {s}", s, s, seed_law="diverging",
                         diverge=pi, drop=drop)
            )  # fmt: skip
    for s in (3, 5):
        scen.append(Scenario(f"resampled ci.json resunet vs unet {s} vs {s}", s, s, source="ci.json"))
        scen.append(
            Scenario(f"resampled main job (Res-UNet-like vs U-Net) {s} vs {s}", s, s, source="main job")
        )
    if quick:
        keep = ("1 vs 3 seeds, seed SD 0.02", "2 vs 10 seeds, seed SD 0.02", "2 vs 2 seeds, seed SD 0.02")
        scen = [x for x in scen if x.name in keep]
    return scen


def write_fixture(run: Path, out: Path, metric: str = "dice") -> Path:
    """A run's per-(seed, patient) values of one metric, rounded to 4 decimals, in the shape of
    summary.json's `unit_values`: the small real structure the tests resample (never the run folder)."""
    mats = matrices_of(run, metric)
    values = {
        model: {metric: {str(s): {f"p{u:02d}": round(float(m[s, u]), 4) for u in range(m.shape[1])}
                         for s in range(m.shape[0])}}
        for model, m in mats.items()
    }  # fmt: skip
    out.write_text(json.dumps({"unit_values": {"unit": "patient", "values": values}}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="write a real run's seeds x patients values as a test fixture"
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(write_fixture(args.run, args.out))
