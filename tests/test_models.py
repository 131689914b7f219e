"""Model plugins: generic checks for every registered architecture (as timm's tests do), then the
few facts that only hold for one of the three reference networks."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from covbench.registry import broken_models, count_parameters, get_model, list_models

MODELS = list_models()
REFERENCE_MODELS = ("resunet", "unet", "unetpp")


def _logits(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_reference_models_registered():
    # Guards the parametrized tests below against silently running over an empty registry.
    assert set(REFERENCE_MODELS) <= set(MODELS)
    assert not {name: b for name, b in broken_models().items() if name in REFERENCE_MODELS}


@pytest.mark.parametrize("width", [4, 8])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", MODELS)
def test_output_shape(name, size, width):
    model = get_model(name).create(width=width).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert isinstance(out, torch.Tensor), "eval mode must return one tensor"
    assert out.shape == (2, 1, size, size)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", MODELS)
def test_channels_classes_and_rectangular_input(name):
    model = get_model(name).create(in_channels=3, classes=2, width=4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 64))
    assert out.shape == (1, 2, 32, 64)


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    spec = get_model(name)
    model = spec.create(width=4).train()
    out = model(torch.randn(2, 1, 32, 32))
    logits = _logits(out)
    assert isinstance(out, list) == spec.deep_supervision
    assert all(t.shape == (2, 1, 32, 32) for t in logits)
    torch.stack([t.mean() for t in logits]).mean().backward()
    # Biases right before a BatchNorm get an (analytically) zero gradient, so test presence, not size.
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing, f"no finite gradient for {missing}"


@pytest.mark.parametrize("name", MODELS)
def test_paper_width_parameter_count(name):
    spec = get_model(name)
    if spec.paper_params is None:
        pytest.skip(f"{name} declares no paper parameter count")
    with torch.device("meta"):
        default = spec.create(width=None)
        explicit = spec.create(width=spec.paper_width)
    assert count_parameters(default) == count_parameters(explicit) == spec.paper_params
    assert getattr(default, "width", spec.paper_width) == spec.paper_width


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("unet", {"batch_norm": True}, 31_036_481),
        ("unet", {"batch_norm": False}, 31_030_593),  # the paper's network
        ("unetpp", {"batch_norm": False, "deep_supervision": False}, 9_041_601),  # paper: one head, no BN
        ("unetpp", {"batch_norm": False, "deep_supervision": True}, 9_041_601 + 3 * 33),
        ("unetpp", {"batch_norm": True, "deep_supervision": True}, 9_045_348),
        ("resunet", {}, 8_222_529),
    ],
)
def test_documented_parameter_counts(name, options, expected):
    with torch.device("meta"):
        model = get_model(name).create(**options)
    assert count_parameters(model) == expected


@pytest.mark.parametrize(
    ("name", "size", "hint"),
    [
        ("unet", (33, 40), "resize to 32x48 or pad to 48x48"),
        ("unetpp", (8, 64), "resize or pad to 16x64"),
        ("resunet", (30, 70), "resize or pad to 32x72"),
    ],
)
def test_invalid_input_size_names_valid_sizes(name, size, hint):
    model = get_model(name).create(width=2)
    divisor = 8 if name == "resunet" else 16
    with pytest.raises(ValueError, match=f"divisible by {divisor}, got {size[0]}x{size[1]}") as err:
        model(torch.randn(1, 1, *size))
    assert hint in str(err.value)


def test_unetpp_deep_supervision_heads():
    model = get_model("unetpp").create(width=4)
    x = torch.randn(2, 1, 32, 32)
    heads = model.train()(x)
    assert isinstance(heads, list) and len(heads) == 4
    assert all(h.shape == (2, 1, 32, 32) for h in heads)

    model.eval()
    with torch.no_grad():
        heads = model.forward_heads(x)
        average = model(x)
        model.inference = "prune"
        pruned = model(x)
    assert not torch.allclose(heads[0], heads[-1])  # the heads differ, so the checks below mean something
    torch.testing.assert_close(average, torch.stack(heads).mean(0))
    torch.testing.assert_close(pruned, heads[-1])


def test_unetpp_without_deep_supervision_returns_one_tensor():
    model = get_model("unetpp").create(width=4, deep_supervision=False)
    assert len(model.heads) == 1
    out = model.train()(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("unet", {"width": 0.5}, "width must be a positive int"),
        ("unetpp", {"inference": "vote"}, "inference must be one of"),
        ("resunet", {"decoder_interpolation": "bicubic"}, "decoder_interpolation must be one of"),
    ],
)
def test_bad_options_are_rejected(name, options, message):
    with pytest.raises(ValueError, match=message):
        get_model(name).create(**options)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_docstring_example_runs(name):
    module = importlib.import_module(f"covbench.plugins.{name}.model")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
