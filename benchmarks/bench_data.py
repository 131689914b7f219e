"""Data: pre-processing throughput and peak memory on real-size phantom volumes, and cache-hit load.

Plain script (also run by `nox -s bench`), single-threaded like the pre-processing itself:

    python benchmarks/bench_data.py [--volumes 4] [--image-size 224] [--workdir DIR]

The measurement is `covbench.datasets.benchmark.run` (the data engineers' benchmark; this script
only picks the size, a scratch folder and the printout): phantom volumes of the real dataset's
geometry - alternating 512 x 512 HU (Coronacases) and 630 x 630 lung-windowed (Radiopaedia)
in-plane, 40 to 300 slices, written as uncompressed NIfTI - then

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
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from covbench.datasets.benchmark import run  # noqa: E402
from covbench.datasets.preprocess import PreprocessConfig  # noqa: E402


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
