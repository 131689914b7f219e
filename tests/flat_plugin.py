"""`flatnet`: a model plugin that cannot learn (its logits ignore the image and get no gradient),
and `twinnet-a` / `twinnet-b`: two copies of one tiny architecture (their initial weights
differ, as two seeds do). For the rounds-of-seeds tests."""

from __future__ import annotations

from pathlib import Path

from plugin_packages import pip_install, write_plugin

FLAT = """
import torch
from covbench.registry import ModelSpec


class FlatNet(torch.nn.Module):
    def __init__(self, in_channels=1, classes=1, width=64):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        # every pixel lesion, whatever the weights: the gradient through `* 0` is zero
        return x[:, :1] * 0.0 + self.bias * 0.0 + 10.0


SPEC = ModelSpec(name="flatnet", build=FlatNet, title="FlatNet", reference="covbench tests", paper_width=64)
"""

TWIN = """
import torch
from covbench.registry import ModelSpec


def build(in_channels=1, classes=1, width=64):
    torch.rand({draws})  # the copies differ only in their initial weights (the same seed drawn apart)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(width, classes, 1)
    )


SPEC = ModelSpec(name="{name}", build=build, title="TwinNet", reference="covbench tests", paper_width=64)
"""


def install(site: Path, root: Path) -> None:
    """Install flatnet, twinnet-a and twinnet-b into `site` (a folder on PYTHONPATH)."""
    pip_install(write_plugin(root, "covbench-flatnet", "covbench_flatnet", "flatnet", FLAT), site)
    for name in ("twinnet-a", "twinnet-b"):
        module = "covbench_" + name.replace("-", "_")
        body = TWIN.replace("{name}", name).replace("{draws}", str(int(name.endswith("b"))))
        pip_install(write_plugin(root, "covbench-" + name, module, name, body), site)
