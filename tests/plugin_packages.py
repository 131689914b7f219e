"""Throwaway plugin packages for tests: write a tiny project, pip-install it into a folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def write_plugin(
    root: Path, dist: str, module: str, entry: str, body: str, group: str = "covbench.models"
) -> Path:
    """A one-module project `dist` declaring `entry` in `group`, with `body` as its module."""
    project = root / dist
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(textwrap.dedent(body))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.0.1"
        [project.entry-points."{group}"]
        {entry} = "{module}:SPEC"
        [tool.setuptools]
        packages = ["{module}"]
    """)
    )
    return project


def pip_install(project: Path, target: Path) -> None:
    """Install `project` into the folder `target` (added to sys.path / PYTHONPATH by the caller)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--target", str(target), str(project)],
        check=True,
    )
