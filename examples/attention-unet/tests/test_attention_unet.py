"""The plugin's own tests: the architecture, and covbench's contract check on its spec."""

from __future__ import annotations

import pytest
import torch
from covbench.checks import check_model
from covbench.registry import count_parameters

from covbench_attention_unet import SPEC, AttentionUNet


def test_output_is_logits_of_the_input_size():
    model = AttentionUNet(width=4).eval()
    assert model(torch.rand(3, 1, 48, 32)).shape == (3, 1, 48, 32)
    assert AttentionUNet(in_channels=3, classes=2, width=4)(torch.rand(2, 3, 32, 32)).shape == (2, 2, 32, 32)


def test_parameter_counts_match_the_docstring_and_the_plain_unet():
    assert count_parameters(AttentionUNet()) == SPEC.paper_params == 32_081_925
    plain = AttentionUNet(attention=False)
    assert count_parameters(plain) == 31_036_481  # covbench's `unet` at width 64, BatchNorm
    assert not any("gate" in name for name, _ in plain.named_parameters())


def test_attention_coefficients_are_per_pixel_weights_in_0_1():
    model = AttentionUNet(width=4).eval()
    maps = model.attention_maps(torch.rand(2, 1, 64, 64))
    assert [m.shape[-1] for m in maps] == [8, 16, 32, 64]  # deepest gate first
    for m in maps:
        assert m.shape[:2] == (2, 1)
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0


def test_gates_change_the_output_and_receive_gradients():
    torch.manual_seed(0)
    model = AttentionUNet(width=4)
    model(torch.rand(2, 1, 32, 32)).mean().backward()
    gates = [p for n, p in model.named_parameters() if ".gate." in n]
    assert gates and all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates)


def test_bad_input_size_and_width_are_refused():
    with pytest.raises(ValueError, match="divisible by 16, got 30x32"):
        AttentionUNet(width=4)(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match="width must be a positive int"):
        AttentionUNet(width=0)


def test_covbench_contract_check_passes_at_the_smoke_size():
    # The same check as `covbench models check attention-unet` once the package is installed;
    # handing the spec object in lets it run from a source checkout too.
    result = check_model(SPEC, image_size=32, batch_size=8, run_width=4).to_dict()
    assert result["parameters"] == count_parameters(AttentionUNet(width=4))
    assert result["output_shapes"] == [[2, 1, 32, 32]]
    assert result["flops_per_image"] > 0 and result["activation_bytes_per_image"] > 0
    assert result["width"] == 4  # run width 4 of 64 -> 4 first-level channels, like covbench's unet


def test_contract_check_catches_a_wrong_number_of_classes():
    from dataclasses import replace

    from covbench.errors import CovbenchError

    def two_classes(in_channels=1, classes=1, width=64, **options):
        return AttentionUNet(in_channels, 2, width)

    wrong = replace(SPEC, build=two_classes)
    with pytest.raises(CovbenchError, match=r"shape \(2, 2, 32, 32\), expected \(2, 1, 32, 32\)"):
        check_model(wrong, image_size=32, batch_size=8, run_width=4)
