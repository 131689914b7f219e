"""Shared fixtures: one local Ray instance and one data cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real" / "covid_semiseg"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "process: starts, signals, kills or waits on real processes or Ray runs; "
        "what `nox -s stress` repeats idle and under load (docs/contributing.md)",
    )


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep generated phantoms and pre-processing caches out of the user's home."""
    path = tmp_path_factory.mktemp("covbench-cache")
    os.environ["COVBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder on PYTHONPATH from before any Ray start, so Ray workers (which inherit the
    environment, not the driver's sys.path) import a plugin a test installs there with
    `pip install --target`. Empty unless a test installs into it; tests/test_plugins.py does."""
    path = tmp_path_factory.mktemp("plugin-site")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))
    return path


@pytest.fixture(scope="session")
def ray_session():
    """A fixed-size local Ray cluster, started once; executors reuse it instead of starting theirs."""
    from covbench.execution.scheduler import ray_defaults

    ray_defaults(starting_local=True)  # before `import ray`, as covbench does for its own instance
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # "local": a new instance even where another Ray cluster runs on this machine (e.g. the
        # two-node test's), which ray.init() would join otherwise
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, ray_session) -> Path:
    """A finished run on the phantom, through the real command: smoke preset, U-Net and Res-UNet,
    two seeds each, with validation. Read-only for the tests that share it (copy it to change it)."""
    from typer.testing import CliRunner

    from covbench.cli import app

    out = tmp_path_factory.mktemp("tiny") / "run"
    args = ["run", "--preset", "smoke", "--models", "unet,resunet", "--seeds", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def _holdnet_installed(plugin_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `holdnet` test plugin (tests/hold_plugin.py) in the plugin site, once per session: Ray
    workers keep a plugin module once imported, so its control folder never changes."""
    from hold_plugin import install, uninstall

    from covbench import registry

    control = tmp_path_factory.mktemp("holdnet-control")
    before = set(plugin_site.iterdir())
    install(plugin_site, tmp_path_factory.mktemp("holdnet-src"), control)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_site))
        registry.reload()
        yield control
    uninstall(plugin_site, before)
    registry.reload()


@pytest.fixture
def holdnet(_holdnet_installed: Path) -> Path:
    """holdnet's control folder, emptied after the test (see tests/hold_plugin.py)."""
    yield _holdnet_installed
    for path in _holdnet_installed.iterdir():
        path.unlink()


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint for the session (moto's server mode on a free port, tests/s3server.py),
    its credentials and endpoint in os.environ until the session ends; `s3.bucket()` makes a fresh
    bucket, `s3.env` is what a child process or a Ray node needs to reach it."""
    pytest.importorskip("moto.server")
    from s3server import environment, threaded_server

    with threaded_server() as server, environment(server.env):
        yield server
