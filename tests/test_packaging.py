"""The built wheel holds every module of the four source rooms (bench, plugins, datasets, reports),
so a new folder can't go missing from an install while editable installs and tests keep working."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import RUN_BOUND_S

REPO = Path(__file__).resolve().parents[1]
ROOMS = {"bench": "covbench", "plugins": "covbench/plugins", "datasets": "covbench/datasets"}
ROOMS["reports"] = "covbench/reports"


def _modules_in_tree() -> set[str]:
    """Every .py file of the rooms, named by its path inside the installed `covbench` package."""
    return {
        f"{prefix}/{path.relative_to(REPO / room).as_posix()}"
        for room, prefix in ROOMS.items()
        for path in (REPO / room).rglob("*.py")
        if "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    """Build the wheel from a copy of the project (no build/ or egg-info left in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for room in ROOMS:
        shutil.copytree(REPO / room, src / room, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("covbench-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_holds_every_module_of_the_four_rooms(wheel_names):
    expected = _modules_in_tree()
    assert "covbench/plugins/unet/model.py" in expected and "covbench/cli/__init__.py" in expected
    missing = sorted(expected - wheel_names)
    assert not missing, f"modules missing from the wheel (is a folder without __init__.py?): {missing}"


def test_wheel_holds_nothing_outside_the_package(wheel_names):
    stray = sorted(
        n for n in wheel_names if n.endswith(".py") and not n.startswith("covbench/") and "dist-info" not in n
    )
    assert not stray, f"unexpected top-level modules in the wheel: {stray}"
