"""What runs inside a worker: one trial (build, train, evaluate, score), its training loop,
checkpoints, augmentation, heartbeats and health signals, and `predict` with a finished run.

Rule: the only package of the engine that imports torch when loaded (plugins build torch models
too); it never imports Ray or the driver (covbench.execution). tests/test_house.py checks it.
"""
