"""covbench's own architectures, one folder each (`unet`, `unetpp`, `resunet`).

Each folder holds `model.py` (the public class, its wiring and the `ModelSpec` at the bottom),
`blocks.py` (the building blocks) and an `__init__.py` that exports both. They are registered through
the `covbench.models` entry-point group in pyproject.toml, exactly as a third-party package would
register its own, and import nothing from each other so that any one can be copied out as a template.
"""
