"""summary.json's text, written fast: the same bytes as `covbench.folder.io.write_json`
(`json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\\n"`), without its cost.

With `indent` the standard library encodes in pure Python, one generator frame per nesting level
and item; at 50 models x 10 seeds x 5 folds the summary holds about a million numbers (per-case
values for `compare`, per-seed unit values, every pair's verdict) and that encoder plus
`to_jsonable` took some 15 s of the report. Here one recursive function does both, and a dict
whose values are all plain floats (the per-case maps, most of the bulk) is joined in one
comprehension. Strings go through the standard library's C escaper, floats through `float.__repr__`,
as `json` does; non-finite floats become null, numpy scalars and arrays plain values, paths strings,
as `to_jsonable` does. tests/test_report_scale.py checks the bytes against `write_json`'s.
"""

from __future__ import annotations

import math
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from typing import Any

import numpy as np

from covbench.folder.io import write_text

INDENT = "  "


def _float(x: float) -> str:
    return float.__repr__(x) if math.isfinite(x) else "null"


def _scalar(obj: Any) -> str | None:
    """The JSON of a leaf, or None when `obj` is a container."""
    if isinstance(obj, str):
        return _quote(obj)
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, np.generic):
        return _scalar(obj.item())
    if isinstance(obj, Path):
        return _quote(str(obj))
    return None


def _encode(obj: Any, level: int, out: list[str]) -> None:
    leaf = _scalar(obj)
    if leaf is not None:
        out.append(leaf)
        return
    if isinstance(obj, np.ndarray):
        _encode(obj.tolist(), level, out)
        return
    inner = "\n" + INDENT * (level + 1)
    if isinstance(obj, dict):
        items = sorted({str(k): v for k, v in obj.items()}.items())
        if not items:
            out.append("{}")
            return
        values = [v for _, v in items]
        if all(type(v) is float for v in values) and math.isfinite(sum(values)):  # a per-case map
            keys = map(_quote, [k for k, _ in items])
            out.append("{" + inner + ("," + inner).join(map("{}: {!r}".format, keys, values)))
        else:
            out.append("{")
            sep = inner
            for k, v in items:
                leaf = _scalar(v)
                if leaf is not None:  # most values of a pair's dict: no call of _encode
                    out.append(sep + _quote(k) + ": " + leaf)
                else:
                    out.append(sep + _quote(k) + ": ")
                    _encode(v, level + 1, out)
                sep = "," + inner
        out.append("\n" + INDENT * level + "}")
        return
    if isinstance(obj, list | tuple):
        if not obj:
            out.append("[]")
            return
        out.append("[")
        sep = inner
        for v in obj:
            out.append(sep)
            _encode(v, level + 1, out)
            sep = "," + inner
        out.append("\n" + INDENT * level + "]")
        return
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """`json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\\n"`, the same text."""
    out: list[str] = []
    _encode(obj, 0, out)
    out.append("\n")
    return "".join(out)


def write_summary(path: Path, obj: Any) -> None:
    """`covbench.folder.io.write_json(path, obj)`, atomically as it writes, the same bytes."""
    write_text(path, dumps(obj))
