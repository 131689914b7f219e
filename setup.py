"""The package list, derived: the four source rooms map onto `covbench.*`, and every package
inside them (a folder with an `__init__.py`) ships, so a new `plugins/<arch>/` can't be left out of
a built wheel. Everything else about the project is in pyproject.toml.
tests/test_packaging.py builds the wheel and checks every module of the four rooms is inside."""

from setuptools import find_packages, setup

ROOMS = {
    "covbench": "bench",
    "covbench.plugins": "plugins",
    "covbench.datasets": "datasets",
    "covbench.reports": "reports",
}
PACKAGES = [f"{name}.{sub}" for name, folder in ROOMS.items() for sub in find_packages(folder)]

setup(package_dir=ROOMS, packages=[*ROOMS, *PACKAGES])
