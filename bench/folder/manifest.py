"""What a run records about where it ran, so a number can always be traced back."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "covbench",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "ray",
    "nibabel",
    "opencv-python-headless",
    "segmentation-models-pytorch",
    "timm",
    "typer",
    "rich",
    "matplotlib",
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def code_versions(models: Iterable[str]) -> dict[str, str]:
    """covbench's version and that of every distribution providing one of `models` (the one
    whose entry point declared it; a family member's is its family's).

    Part of what a run is: `config.json` keeps it as `_versions`, and resuming a run with other
    versions is refused (covbench.folder.state.check_versions). Not part of the config hash, so adding it
    changed no existing `_key` and nothing that `covbench compare` matches runs by."""
    from covbench import registry

    found = {"covbench": package_versions(("covbench",))["covbench"] or "unknown"}
    for name in models:
        origin = registry.model_origin(name)
        if origin.distribution and not origin.distribution.startswith("<"):
            found[origin.distribution] = origin.version or "unknown"
    return found


def git_commit(start: Path | None = None) -> dict[str, Any] | None:
    """Commit of the covbench source tree (and whether it had local changes), if it is a checkout."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def devices() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cpu_count": __import__("os").cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def environment_manifest(data_fingerprint: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "created": now_iso(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "packages": package_versions(),
        "git": git_commit(),
        "devices": devices(),
        "data_fingerprint": data_fingerprint,
        "command": sys.argv,
        **(extra or {}),
    }
