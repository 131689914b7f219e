"""Per-case rows -> per-model summaries.

Aggregation (stated in every table caption): for each test case, average over seeds; then mean
± SD (ddof=1) over cases. This matches how Salehi et al. report Table 1 (spread over test
slices). The seed view is the mean over seeds of each seed's case-mean, ± the SD between seeds.

The case is a test slice (`unit="slice"`, the rows of cases.csv) or a test patient
(`unit="patient"`): every metric recomputed on the volume reassembled from that patient's test
slices, with the slice thickness as third spacing, so ASSD/HD95/NSD are 3D surface distances.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from covbench.errors import CovbenchError, DamagedFile
from covbench.folder.io import done_trials
from covbench.folder.layout import RunFolder, TrialFolder
from covbench.folder.record import TrialRecord
from covbench.folder.state import stored_config
from covbench.metrics import METRICS, empty_case, segmentation_metrics

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
        "sd": float(finite.std(ddof=1)) if n > 1 else math.nan,  # one value has no spread to report
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


UNITS = ("slice", "patient")
SURFACE_METRICS = ("assd", "hd95", "nsd")


def load_test_slices(run_dir: Path) -> dict[str, np.ndarray]:
    """The run's pre-processed test slices (written once by `covbench run`)."""
    path = RunFolder(run_dir).test_slices
    if not path.exists():
        raise CovbenchError(
            f"{path} not found: this run predates saved test slices; re-run it with this covbench "
            "version for patient-level metrics and overlays, or use --unit slice"
        )
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DamagedFile(path, f"{exc}; `covbench run --resume {run_dir}` writes it again") from None


def load_predictions(trial_dir: Path, slices: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A trial's test probabilities in [0, 1] (stored as uint8) and their rows in test_slices.npz."""
    path = TrialFolder(trial_dir).predictions
    if not path.exists():
        raise CovbenchError(f"{path} not found: the trial finished without saving its predictions")
    try:
        with np.load(path) as data:
            prob, index = data["prob"], data["index"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DamagedFile(
            path, f"{exc}; `covbench run --resume {trial_dir.parent.parent}` evaluates the trial again"
        ) from None
    rows = np.searchsorted(slices["index"], index)
    if (rows >= slices["index"].size).any() or not np.array_equal(
        slices["index"][rows.clip(max=slices["index"].size - 1)], index
    ):
        raise CovbenchError(f"{path}: predicts slices that are not in the run's test_slices.npz")
    return prob.astype(np.float32) / 255.0, rows


@dataclass
class Volume:
    """One test patient reassembled from its slices, in slice order."""

    patient: str
    rows: np.ndarray  # positions in the trial's predictions
    spacing: tuple[float, float, float]  # (slice thickness or NaN, row, col) in mm
    gaps: int  # missing slice numbers between the first and last test slice


def volumes(slices: dict[str, np.ndarray], rows: np.ndarray) -> list[Volume]:
    """Group one trial's test slices (`rows` of test_slices.npz) by patient. Slices dropped by
    pre-processing (no lung) leave gaps; the volume stacks the kept slices and counts the gaps."""
    out = []
    patients = slices["patient"][rows]
    for patient in sorted(set(patients.tolist())):
        mine = np.flatnonzero(patients == patient)
        mine = mine[np.argsort(slices["slice_index"][rows[mine]], kind="stable")]
        z = slices["slice_index"][rows[mine]]
        thickness = float(slices["thickness"][rows[mine[0]]]) if "thickness" in slices else math.nan
        row_mm, col_mm = (float(v) for v in slices["spacing"][rows[mine]].mean(axis=0))
        out.append(Volume(str(patient), mine, (thickness, row_mm, col_mm), int(z[-1] - z[0] + 1 - z.size)))
    return out


def patient_rows(
    run_dir: Path, threshold: float = 0.5, trials: list[tuple[Path, TrialRecord]] | None = None
) -> pd.DataFrame:
    """One row per (model, seed, fold, test patient), from the saved 8-bit probabilities of
    `trials` (default: the `done_trials` of config.json's key).

    Dice, sensitivity, specificity, precision and MAE are those of the whole volume (confusion
    counts and absolute errors pooled over the patient's test slices: exact, no spacing needed).
    ASSD, HD95 and NSD need the slice thickness for 3D distances; a run folder without it gets
    NaN for them (reported as n/a), never a 2D stand-in.
    """
    run_dir = Path(run_dir)
    slices = load_test_slices(run_dir)
    target = slices["mask"].astype(bool)
    out = []
    if trials is None:
        stored = stored_config(run_dir)
        key = str(stored.key) if stored is not None and stored.key else None
        trials = done_trials(run_dir, key)
    for trial_dir, record in trials:
        prob, rows = load_predictions(trial_dir, slices)
        for vol in volumes(slices, rows):
            p, t = prob[vol.rows], target[rows[vol.rows]]
            pred = p >= threshold
            has_thickness = math.isfinite(vol.spacing[0]) and vol.spacing[0] > 0
            spacing = vol.spacing if has_thickness else (1.0, *vol.spacing[1:])
            metrics = segmentation_metrics(pred, t, spacing=spacing, prob=p)
            if not has_thickness:
                metrics.update({m: math.nan for m in SURFACE_METRICS})
            out.append(
                {
                    "model": record.model,
                    "seed": int(record.seed),
                    "fold": int(record.fold),
                    "case": vol.patient,
                    "patient": vol.patient,
                    "n_slices": int(vol.rows.size),
                    "slice_gaps": vol.gaps,
                    "surface_3d": has_thickness,
                    "empty_case": empty_case(pred, t),
                    **metrics,
                }
            )
    if not out:
        raise CovbenchError(f"{run_dir}: no finished trial to compute patient-level metrics from")
    return pd.DataFrame(out)
