"""`holdnet`: a tiny model plugin that tests steer through files, to hold a real trial at a known
point inside a real Ray worker (never "N epochs is long enough").

Files in the control folder (created and removed by the test) decide what a forward pass does:

- `hold`: a training forward in a Ray worker writes its pid to `entered`, then waits while `hold`
  exists (a stalled trial, or one held while the test interrupts the driver);
- `nan`: a training forward in a Ray worker returns NaN logits (a diverging trial);
- `block-check`: any forward pass, the driver's contract check included, waits while it exists.

Every wait is bounded (`LIMIT` seconds), so a test that fails cannot leave a process behind forever.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from plugin_packages import pip_install, write_plugin

NAME = "holdnet"
LIMIT = 600

BODY = """
import os
import sys
import time
from pathlib import Path

import torch
from covbench.registry import ModelSpec

CONTROL = Path({control!r})


def _in_ray_worker():
    ray = sys.modules.get("ray")
    if ray is None:
        return False
    from ray._private import worker

    return worker.global_worker.mode == worker.WORKER_MODE


def _wait_while(path):
    deadline = time.monotonic() + {limit}
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class HoldNet(torch.nn.Module):
    def __init__(self, in_channels=1, classes=1):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, classes, 1)
        )

    def forward(self, x):
        _wait_while(CONTROL / "block-check")
        if self.training and _in_ray_worker():
            if (CONTROL / "hold").exists():
                (CONTROL / "entered").write_text(str(os.getpid()))
                _wait_while(CONTROL / "hold")
            if (CONTROL / "nan").exists():
                return self.body(x) * float("nan")
        return self.body(x)


def build(in_channels=1, classes=1):
    return HoldNet(in_channels, classes)


SPEC = ModelSpec(name="holdnet", build=build, title="HoldNet", reference="covbench tests")
"""


def install(site: Path, root: Path, control: Path) -> None:
    """Install holdnet, steered by `control`, into `site` (a folder on PYTHONPATH)."""
    control.mkdir(parents=True, exist_ok=True)
    body = BODY.format(control=str(control), limit=LIMIT)
    pip_install(write_plugin(root, "covbench-holdnet", "holdnet", NAME, body), site)


def uninstall(site: Path, before: set[Path]) -> None:
    for path in set(site.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sys.modules.pop("holdnet", None)
