"""The driver of `covbench run`: the runner, the Ray scheduler behind the executor contract,
GPU packing, signals, execution options, the dry run, rounds of seeds and experiment tracking.

Rule: the only package that imports Ray (execution.scheduler) and MLflow (execution.tracking);
it imports torch only through covbench.training, inside the functions that need it.
tests/test_house.py checks it.
"""
