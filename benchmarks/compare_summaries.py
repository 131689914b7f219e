"""Every number of two summary.json files, compared (issue 37: an optimisation of the report must
not move a number of the main job's summary).

    python benchmarks/compare_summaries.py BEFORE/summary.json AFTER/summary.json [--tol 1e-12]

Walks both JSON trees together and prints each key path whose numbers differ by more than `tol`
(absolute), whose strings differ, or that only one side has; exit 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def differences(a: object, b: object, tol: float, path: str = "") -> list[str]:
    """Key paths where `a` and `b` differ (numbers: by more than `tol`; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            sub = f"{path}/{key}"
            if key not in a or key not in b:
                out.append(f"{sub}: only in {'after' if key not in a else 'before'}")
            else:
                out += differences(a[key], b[key], tol, sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, tol, f"{path}[{i}]")
        ]
    number = (int, float)
    if (
        isinstance(a, number)
        and isinstance(b, number)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        fa, fb = float(a), float(b)
        if math.isnan(fa) and math.isnan(fb) or fa == fb:
            return []
        if math.isfinite(fa) and math.isfinite(fb) and abs(fa - fb) <= tol:
            return []
        return [f"{path}: {a!r} vs {b!r} (diff {fb - fa:.3g})"]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--tol", type=float, default=1e-12)
    args = parser.parse_args()
    found = differences(json.loads(args.before.read_text()), json.loads(args.after.read_text()), args.tol)
    for line in found:
        print(line)
    print(f"{len(found)} difference(s) beyond {args.tol:g}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
