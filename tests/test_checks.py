"""The model contract check (covbench.checks): what it measures and what it refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from covbench import registry
from covbench.checks import PROBE_BATCH, ContractError, check_model, check_models, models_record
from covbench.errors import CovbenchError
from covbench.registry import ModelSpec


def _spec(build, name: str = "probe", **kwargs) -> ModelSpec:
    return ModelSpec(name=name, build=build, title="probe", reference="none", paper_width=1, **kwargs)


def _conv(in_channels: int = 1, classes: int = 1, width: int = 1) -> nn.Module:
    return nn.Conv2d(in_channels, classes, 3, padding=1)


def test_flops_and_activation_memory_of_a_known_layer():
    c = check_model(_spec(_conv), image_size=32, batch_size=8)
    assert c.parameters == 10
    # one 3x3 conv, 1 -> 1 channel, 32x32 output: 9 multiply-adds per pixel, 2 FLOPs each
    assert c.flops_per_image == 2 * 9 * 32 * 32
    # backward of the first layer computes only the weight gradient: as much again
    assert c.train_flops_per_image == 2 * c.flops_per_image
    # autograd keeps the float32 input for the weight gradient (the weight itself is excluded)
    assert c.activation_bytes_per_image == 32 * 32 * 4
    assert c.activation_bytes_per_batch == 8 * 32 * 32 * 4
    assert c.flops_per_batch == 8 * c.flops_per_image
    assert c.output_shapes == [[PROBE_BATCH, 1, 32, 32]]
    assert c.distribution == "<not installed>"


@pytest.mark.parametrize("name", ["unet", "unetpp", "resunet"])
def test_reference_models_pass_and_are_built_as_a_run_builds_them(name):
    spec = registry.get_model(name)
    c = check_model(name, image_size=32, batch_size=8, run_width=4)
    assert c.width == spec.scaled_width(4)
    assert c.parameters == registry.count_parameters(spec.create(width=c.width))
    assert c.entry_point == f"covbench.plugins.{name}:SPEC" and c.distribution == "covbench"
    assert c.flops_per_image > 0 and c.activation_bytes_per_image > 0
    assert c.unused_parameters == 0
    assert c.deep_supervision == spec.deep_supervision


def test_deep_supervised_outputs_are_checked_head_by_head():
    c = check_model("unetpp", image_size=32, batch_size=8, run_width=4)
    assert c.output_shapes == [[PROBE_BATCH, 1, 32, 32]] * 4
    single = check_model(
        "unetpp", image_size=32, batch_size=8, run_width=4, options={"deep_supervision": False}
    )
    assert single.output_shapes == [[PROBE_BATCH, 1, 32, 32]] and not single.deep_supervision
    assert single.parameters < c.parameters  # three heads fewer


def test_width_option_overrides_the_run_width():
    c = check_model("unet", image_size=32, batch_size=8, run_width=4, options={"width": 8})
    assert c.width == 8
    assert c.parameters == registry.count_parameters(registry.get_model("unet").create(width=8))


class _TwoClasses(nn.Module):
    def __init__(self, **_):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.conv(x)


class _Heads(nn.Module):
    """Returns a list of heads in every mode (training-mode lists are for deep supervision only)."""

    def __init__(self, **_):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return [self.conv(x), self.conv(x)]


class _Detached(_TwoClasses):
    def forward(self, x):
        return torch.zeros_like(x)


class _NaN(_TwoClasses):
    def forward(self, x):
        return self.conv(x)[:, :1] * float("nan")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            _spec(_TwoClasses),
            r"at training forward: output has shape \(2, 2, 32, 32\), expected \(2, 1, 32, 32\)",
        ),
        (_spec(_Heads), "at training forward: returned a list of 2 outputs; only a deep-supervised model"),
        (_spec(_Heads, deep_supervision=True), "at eval forward: returned a list of 2 outputs"),
        (_spec(_Detached), "at backward: the output does not depend on any parameter"),
        (_spec(_NaN), "output holds NaN or infinite values"),
        (_spec(lambda **_: "not a module"), "at build: build returned str, expected a torch.nn.Module"),
        (_spec(_conv, options={"nope": 1}), "at build: TypeError: .*unexpected keyword argument 'nope'"),
    ],
)
def test_contract_violations_name_the_stage_and_the_plugin(spec, message):
    with pytest.raises(ContractError, match=message) as err:
        check_model(spec, image_size=32, batch_size=8)
    text = str(err.value)
    assert text.startswith("model 'probe' (entry point ") and "from <not installed>)" in text
    assert "\n" not in text


def test_registered_model_errors_name_entry_point_and_distribution():
    with pytest.raises(ContractError) as err:
        check_model("unet", image_size=32, batch_size=8, options={"nope": 1})
    assert str(err.value).startswith(
        "model 'unet' (entry point covbench.plugins.unet:SPEC, from covbench "
    ) and "failed the contract check at build" in str(err.value)


def test_unknown_model_keeps_the_registry_message():
    with pytest.raises(CovbenchError, match="unknown model 'nosuchnet'; available:"):
        check_model("nosuchnet", image_size=32, batch_size=8)


def test_check_models_reports_every_failure_at_once():
    with pytest.raises(ContractError) as err:
        check_models(
            ["unet", "resunet"],
            image_size=32,
            batch_size=8,
            run_width=4,
            model_options={"unet": {"nope": 1}, "resunet": {"bad": 2}},
        )
    assert "model 'unet'" in str(err.value) and "model 'resunet'" in str(err.value)


def test_models_record_is_what_runs_write_to_models_json():
    checks = check_models(["unet", "smp:Unet:resnet18"], image_size=32, batch_size=8, run_width=4)
    record = models_record(checks)
    assert record["image_size"] == 32 and record["batch_size"] == 8 and record["device"] == "cpu"
    assert (
        "FlopCounterMode" in record["flops_method"] and "saved_tensors_hooks" in record["activation_method"]
    )
    smp = record["models"]["smp:Unet:resnet18"]
    assert smp["parameters"] == 14_321_937  # smp Unet with a resnet18 encoder, 1 in / 1 out channel
    assert smp["width"] == 0 and smp["entry_point"].endswith("[smp:Unet:resnet18]")
    for entry in record["models"].values():
        assert entry["flops_per_batch"] == 8 * entry["flops_per_image"]
        assert entry["train_flops_per_batch"] > entry["flops_per_batch"]


def test_a_spec_that_changes_its_name_is_refused_by_the_family_resolver(monkeypatch):
    family = registry.get_family("smp")
    renamed = replace(family, resolve=lambda member: replace(family.resolve(member), name="other"))
    monkeypatch.setitem(registry._families()[0], "smp", renamed)
    monkeypatch.setattr(registry, "_members", {})
    with pytest.raises(CovbenchError, match="resolved 'smp:Unet:resnet18' to a spec named 'other'"):
        registry.get_model("smp:Unet:resnet18")
