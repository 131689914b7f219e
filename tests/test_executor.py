"""Both executors meet the `Executor` protocol, member by member and signature by signature."""

from __future__ import annotations

import inspect

import pytest

from covbench.execution.executor import Executor
from covbench.execution.scheduler import InProcessExecutor, RayExecutor

VERBS = (
    "resources", "gpu_memory", "nodes", "unseen_by_nodes", "put", "submit", "pending", "as_completed",
    "drain_ready", "cancel_all", "shutdown",
)  # fmt: skip


def _shape(fn) -> list[tuple[str, object, bool]]:
    """Parameter names, kinds and whether each has a default: what a caller relies on."""
    return [(p.name, p.kind, p.default is p.empty) for p in inspect.signature(fn).parameters.values()]


def test_the_protocol_lists_exactly_the_runner_verbs():
    declared = {n for n, v in vars(Executor).items() if callable(v) and not n.startswith("_")}
    assert declared == set(VERBS)
    assert "address" in Executor.__annotations__


@pytest.mark.parametrize("cls", [RayExecutor, InProcessExecutor])
@pytest.mark.parametrize("verb", VERBS)
def test_executor_methods_match_the_protocol(cls, verb):
    assert _shape(getattr(cls, verb)) == _shape(getattr(Executor, verb))


def test_instances_are_executors():
    assert isinstance(InProcessExecutor(), Executor)
    ray_executor = RayExecutor.__new__(RayExecutor)  # without starting Ray: only members are checked
    ray_executor.address = None
    assert isinstance(ray_executor, Executor)
    assert not isinstance(object(), Executor)
