"""Data: pre-processing throughput and peak memory on real-size phantom volumes, and cache-hit load.

Plain script (also run by `nox -s bench`), single-threaded like the pre-processing itself:

    python benchmarks/bench_data.py [--volumes 4] [--image-size 224] [--workdir DIR]

The measurement (`run`): phantom volumes of the real dataset's geometry - alternating 512 x 512 HU
(Coronacases) and 630 x 630 lung-windowed (Radiopaedia) in-plane, 40 to 300 slices, written as
uncompressed NIfTI - then

- pre-processing alone per case (slice selection, window, CLAHE, crop, resize): input slices/s and
  kept slices/s, and the peak of numpy allocations on top of the loaded case (tracemalloc);
- `prepare_slices` cold (read + pre-process + write the cache) and on a cache hit;
- the process's peak resident memory (getrusage).

`--volumes 20` is the size of COVID-19-CT-Seg (about 3 GB of scratch disk; minutes to generate).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from covbench.datasets import covid_ct_seg  # noqa: E402
from covbench.datasets.phantom import patient_volumes, phantom_names, write_patient  # noqa: E402
from covbench.datasets.prepare import prepare_slices  # noqa: E402
from covbench.datasets.preprocess import PreprocessConfig, preprocess_case  # noqa: E402


def write_real_size(dest: Path, n_volumes: int = 20, seed: int = 0) -> Path:
    """Real-size phantom volumes as `.nii` (uncompressed, to keep writing fast)."""
    depths = np.linspace(40, 300, n_volumes).round().astype(int)
    depths = depths[np.random.default_rng(seed).permutation(n_volumes)]
    for i in range(n_volumes):
        size = 512 if phantom_names(i, n_volumes)[0].startswith("coronacases") else 630
        hu, lesion, lung, spacing = patient_volumes(np.random.default_rng([seed, i]), size, int(depths[i]))
        spacing = (spacing[0], spacing[1] * size / 512, spacing[2] * size / 512)  # ~0.6-0.9 mm at any size
        write_patient(dest, i, n_volumes, (hu, lesion, lung, spacing), compress=False)
    return dest


def run(workdir: Path, n_volumes: int = 20, cfg: PreprocessConfig = PreprocessConfig()) -> dict:
    """Generate (once) and measure; returns the numbers `main` prints."""
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=4, help="phantom volumes (20 = the real dataset)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--workdir", type=Path, help="keep the volumes and cache here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    print(f"{platform.processor() or platform.machine()}, opencv {cv2.__version__}, single thread")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="covbench-bench-data-"))
    try:
        result = run(workdir, args.volumes, PreprocessConfig(image_size=args.image_size))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{result['volumes']} volumes (512 and 630 px, 40-300 slices): {result['slices_in']} slices in, "
        f"{result['slices_kept']} kept at {result['image_size']} px"
    )
    print(
        f"pre-processing: {result['preprocess_slices_per_s_in']:.0f} input slices/s "
        f"({result['preprocess_slices_per_s_kept']:.0f} kept slices/s), peak extra memory "
        f"{result['preprocess_peak_extra_mb']:.0f} MB over the loaded case"
    )
    print(
        f"prepare_slices: cold {result['prepare_cold_s']:.1f} s, "
        f"cache hit {result['prepare_cache_hit_s']:.3f} s "
        f"(cache {result['cache_mb']:.1f} MB); NIfTI reading {result['read_nifti_s']:.1f} s; "
        f"process peak RSS {result['process_peak_rss_mb']:.0f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
