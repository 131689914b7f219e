"""Pre-processing benchmark on real-size phantom volumes (issue 3, "done when" 2).

    python -m covbench.datasets.benchmark --workdir /tmp/covbench-bench [--volumes 20]

Writes `volumes` phantom cases as uncompressed NIfTI (alternating 512 x 512 HU and 630 x 630
"window255" volumes, 40-300 slices, like COVID-19-CT-Seg) into `workdir`, then measures through
`prepare_slices`: the first (cold) run - reading, pre-processing and writing the cache - and a
second run, which is a cache hit. Pre-processing alone is timed per case, with its peak memory
(numpy allocations on top of the case itself, via tracemalloc). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np

from covbench.datasets import covid_ct_seg
from covbench.datasets.phantom import WINDOW, _patient, _to_storage, phantom_names
from covbench.datasets.prepare import prepare_slices
from covbench.datasets.preprocess import PreprocessConfig, preprocess_case


def write_real_size(dest: Path, n_volumes: int = 20, seed: int = 0) -> Path:
    """Real-size phantom volumes as `.nii` (uncompressed, to keep writing fast)."""
    for sub in (covid_ct_seg.IMAGE_DIR, covid_ct_seg.LESION_DIR, covid_ct_seg.LUNG_DIR):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    depths = np.linspace(40, 300, n_volumes).round().astype(int)
    depths = depths[np.random.default_rng(seed).permutation(n_volumes)]
    for i in range(n_volumes):
        image_name, mask_name = phantom_names(i, n_volumes)
        corona = image_name.startswith("coronacases")
        size = 512 if corona else 630
        hu, lesion, lung, spacing = _patient(np.random.default_rng([seed, i]), size, int(depths[i]))
        spacing = (spacing[0], spacing[1] * size / 512, spacing[2] * size / 512)  # ~0.6-0.9 mm at any size
        if corona:
            stored = np.rint(hu).clip(-1024, 3071).astype(np.int16)
        else:
            lo, hi = WINDOW
            stored = np.rint((hu.clip(lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        for sub, name, vol in (
            (covid_ct_seg.IMAGE_DIR, image_name, stored),
            (covid_ct_seg.LESION_DIR, mask_name, lesion),
            (covid_ct_seg.LUNG_DIR, mask_name, lung),
        ):
            data, affine = _to_storage(vol, spacing, lps=corona)
            nib.save(nib.Nifti1Image(data, affine), dest / sub / f"{name}.nii")
    return dest


def run(workdir: Path, n_volumes: int = 20, cfg: PreprocessConfig = PreprocessConfig()) -> dict:
    data = workdir / "data"
    t0 = time.perf_counter()
    if not (data / covid_ct_seg.IMAGE_DIR).is_dir():
        write_real_size(data, n_volumes)
    generate_s = time.perf_counter() - t0
    old = time.time() - 3600  # as if downloaded an hour ago: the fingerprint memo may trust mtimes
    for p in data.rglob("*.nii"):
        os.utime(p, (old, old))

    # pre-processing alone, per case, with its peak memory on top of the case
    read_s = pre_s = 0.0
    n_slices_in = n_slices_out = 0
    peak_extra = 0
    files, _ = covid_ct_seg.find_cases(data)
    for f in files:
        t = time.perf_counter()
        case = covid_ct_seg.read_case(f)
        read_s += time.perf_counter() - t
        tracemalloc.start()
        t = time.perf_counter()
        s = preprocess_case(case, cfg)
        pre_s += time.perf_counter() - t
        peak_extra = max(peak_extra, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        n_slices_in += case.image.shape[0]
        n_slices_out += len(s)
        del case, s

    cache = workdir / "cache"
    t = time.perf_counter()
    cold = prepare_slices("covid-ct-seg", data, cfg, cache_dir=cache, use_cache=True)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    hit = prepare_slices("covid-ct-seg", data, cfg, cache_dir=cache)
    hit_s = time.perf_counter() - t
    assert hit.cache_hit and not cold.cache_hit
    return {
        "volumes": n_volumes,
        "slices_in": n_slices_in,
        "slices_kept": n_slices_out,
        "image_size": cfg.image_size,
        "generate_and_write_s": round(generate_s, 1),
        "read_nifti_s": round(read_s, 2),
        "preprocess_s": round(pre_s, 2),
        "preprocess_slices_per_s_in": round(n_slices_in / pre_s, 1),
        "preprocess_slices_per_s_kept": round(n_slices_out / pre_s, 1),
        "preprocess_peak_extra_mb": round(peak_extra / 2**20, 1),
        "prepare_cold_s": round(cold_s, 2),
        "prepare_cache_hit_s": round(hit_s, 3),
        "cache_mb": round(sum(p.stat().st_size for p in cold.cache_path.iterdir()) / 2**20, 1),
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--image-size", type=int, default=224)
    args = ap.parse_args()
    result = run(args.workdir, args.volumes, PreprocessConfig(image_size=args.image_size))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
