"""Entry-point discovery, including a model registered by a package installed during the test."""

from __future__ import annotations

import pytest
from plugin_packages import pip_install, write_plugin

from covbench import registry
from covbench.errors import CovbenchError


def test_reference_models_are_registered_through_entry_points():
    assert {"unet", "unetpp", "resunet"} <= set(registry.list_models())
    assert registry.get_model("unetpp").deep_supervision
    assert not registry.get_model("unet").deep_supervision


def test_list_models_filters():
    assert registry.list_models("res*") == ["resunet"]
    assert "unet" not in registry.list_models("unet*", exclude=["unet"])


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(CovbenchError, match="unknown model 'nope'.*resunet.*unet"):
        registry.get_model("nope")


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    def install(dist: str, module: str, body: str) -> None:
        site = tmp_path / f"site-{dist}"
        pip_install(write_plugin(tmp_path, dist, module, "tiny-toy", body), site)
        monkeypatch.syspath_prepend(str(site))
        registry.reload()

    yield install
    registry.reload()


def test_model_from_a_freshly_installed_package_is_discovered(installed_plugin):
    installed_plugin(
        "covbench-toy-plugin",
        "toy_plugin",
        """
        import torch
        from covbench.registry import ModelSpec

        def build(in_channels=1, classes=1, width=2):
            return torch.nn.Conv2d(in_channels, classes, 3, padding=1)

        SPEC = ModelSpec(name="tiny-toy", build=build, title="Toy", reference="none", paper_width=2)
    """,
    )
    assert "tiny-toy" in registry.list_models()
    model = registry.get_model("tiny-toy").create()
    assert registry.count_parameters(model) == 1 * 1 * 9 + 1


def test_broken_plugin_is_reported_with_its_distribution(installed_plugin):
    installed_plugin(
        "covbench-broken-plugin", "broken_plugin", "raise ImportError('missing dependency xyz')\n"
    )
    assert "tiny-toy" not in registry.list_models()
    broken = registry.broken_models()["tiny-toy"]
    assert broken.distribution == "covbench-broken-plugin"
    with pytest.raises(CovbenchError, match="covbench-broken-plugin.*missing dependency xyz"):
        registry.get_model("tiny-toy")
    assert "unet" in registry.list_models()  # the others still load
