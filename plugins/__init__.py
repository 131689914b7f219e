"""covbench's own architectures, one folder each (`unet`, `unetpp`, `resunet`).

Each folder holds `model.py` (the public class, its wiring and the `ModelSpec` at the bottom),
`blocks.py` (its own building blocks; U-Net++ needs none) and an `__init__.py` that exports the
class and the spec. They are registered through the `covbench.models` entry-point group in
pyproject.toml, exactly as a third-party package would register its own. All three import
`common.py` (the double 3x3 convolution, the input-size check and the weight init) and nothing from
each other, so one folder plus `common.py` is a complete template.
"""
