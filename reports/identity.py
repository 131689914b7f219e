"""Benchmark identity: which runs measure the same thing, so that their numbers may be compared.

Two runs are the same benchmark when they trained and scored the same way on the same bytes: same
data fingerprint, case unit (slice or patient), distance unit (mm or px) and every `RunConfig`
field except the ones listed in `EXCLUDED`. The rule names what is left out rather than what is
kept, so a field added to `RunConfig` later counts by default (a new knob that changes the numbers
must split a series, not hide inside one).

Left out, because a series is meant to vary them: `seeds` (the seed SD is the noise the gate
measures), `models` (a model added or dropped is reported per model, as `new` or `MISSING`) and
`data_dir` (a path; the data fingerprint says whether the bytes are the same). Code, library
versions and machine are not part of the identity either: finding out what they changed is the point.

A field one side lacks (a run written before the field existed) is read as the field's current
`RunConfig` default: the behaviour the field was introduced to keep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from covbench.config import RunConfig
from covbench.errors import CovbenchError
from covbench.folder.io import read_json
from covbench.folder.key import FINGERPRINT_CHARS
from covbench.folder.layout import RunFolder
from covbench.folder.stored_config import StoredConfig, read_stored_config
from covbench.reports.table import distance_unit_of

#: RunConfig fields that do not make two runs different benchmarks (see the module docstring).
EXCLUDED: frozenset[str] = frozenset({"models", "seeds", "data_dir"})
#: Identity keys that do not come from RunConfig, with the value a record without them had.
EXTRA_DEFAULTS: dict[str, Any] = {"unit": "slice", "distance_unit": "mm"}
#: Named first when two identities differ: what people tell benchmarks apart by.
FIRST = ("dataset", "data_fingerprint", "preset", "unit", "split", "epochs", "image_size")
MAX_NAMED = 6  # differences named in one error line


class Incomparable(CovbenchError):
    """BASELINE and CURRENT are different benchmarks: comparing them would measure the settings,
    not the code. Exit code 2, like any other input the user has to fix."""

    def __init__(self, baseline: Path, current: Path, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"{baseline} and {current} are different benchmarks ({detail}); compare runs of one "
            "benchmark, or replace the baseline on purpose with --update"
        )


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _canonical(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and int vs float 1e-3 spellings) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def identity_from_config(
    config: dict[str, Any] | StoredConfig, data_fingerprint: str | None, unit: str, distance_unit: str = "mm"
) -> dict[str, Any]:
    """The identity of a run from its configuration: config.json's entries as the folder stored
    them (an older folder's lack later fields), or a configuration's `to_dict()`."""
    if isinstance(config, StoredConfig):
        if data_fingerprint is None and config.key is not None:
            data_fingerprint = config.key.data_fingerprint or None
        config = config.settings
    ident = {k: _canonical(v) for k, v in config.items() if k not in EXCLUDED and not k.startswith("_")}
    ident["data_fingerprint"] = data_fingerprint[:FINGERPRINT_CHARS] if data_fingerprint else None
    ident["unit"] = unit
    ident["distance_unit"] = distance_unit  # mm, or px for data without a pixel spacing
    return ident


def run_identity(run_dir: Path, unit: str = "slice", distance_unit: str = "mm") -> dict[str, Any] | None:
    """The identity of a run folder, or None when it holds no config.json (not a covbench run)."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if not folder.config.is_file():
        return None
    config = read_stored_config(run_dir)
    env = read_json(folder.environment) if folder.environment.is_file() else {}
    return identity_from_config(config, env.get("data_fingerprint"), unit, distance_unit)


def summary_identity(summary: dict[str, Any], summary_file: Path) -> dict[str, Any] | None:
    """A summary's identity: stored under "benchmark" (baselines), else from the run folder it is in."""
    stored = summary.get("benchmark")
    if isinstance(stored, dict):
        return stored
    return run_identity(Path(summary_file).parent, summary.get("unit", "slice"), distance_unit_of(summary))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every identity key that differs; [] = same benchmark."""
    defaults = {k: _canonical(v) for k, v in {**_defaults(), **EXTRA_DEFAULTS}.items()}
    out = []
    order = {k: i for i, k in enumerate(FIRST)}
    for key in sorted(set(old) | set(new), key=lambda k: (order.get(k, len(FIRST)), k)):
        a = old.get(key, defaults.get(key))
        b = new.get(key, defaults.get(key))
        if _canonical(a) != _canonical(b):
            out.append((key, a, b))
    return out


def describe_differences(diffs: list[tuple[str, Any, Any]], old: str = "", new: str = "") -> str:
    """One line: 'epochs 2 (baseline) vs 12 (current); preset smoke vs cpu'."""

    def show(v: Any) -> str:
        if v is None:
            return "absent"
        return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else str(v)

    first, *rest = diffs
    tag_old, tag_new = (f" ({old})" if old else ""), (f" ({new})" if new else "")
    parts = [f"{first[0]} {show(first[1])}{tag_old} vs {show(first[2])}{tag_new}"]
    parts += [f"{k} {show(a)} vs {show(b)}" for k, a, b in rest[: MAX_NAMED - 1]]
    more = len(diffs) - MAX_NAMED
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def describe(identity: dict[str, Any], also: tuple[str, ...] = ()) -> str:
    """A short human line for a series header: the keys people tell benchmarks apart by, and `also`
    (the keys that tell this benchmark from the others shown next to it)."""
    usual = ("dataset", "preset", "epochs", "image_size", "split", "unit", "data_fingerprint")
    shown = [f"{k} {identity[k]}" for k in usual if identity.get(k) is not None]
    shown += [f"{k} {json.dumps(identity.get(k), sort_keys=True)}" for k in sorted(set(also) - set(usual))]
    return ", ".join(shown)


def short_hash(identity: dict[str, Any]) -> str:
    """Six hex digits of the identity, to tell apart two benchmarks that share a default name."""
    return hashlib.sha256(json.dumps(_canonical(identity), sort_keys=True).encode()).hexdigest()[:6]


def default_name(identity: dict[str, Any]) -> str:
    """`phantom-smoke`, `covid-ct-seg-paper-patient`: dataset, preset and a non-default unit."""
    name = f"{identity.get('dataset', 'unknown')}-{identity.get('preset', 'unknown')}"
    return name if identity.get("unit", "slice") == "slice" else f"{name}-{identity['unit']}"


def check_comparable(
    base_id: dict[str, Any] | None,
    cur_id: dict[str, Any] | None,
    baseline_file: Path,
    current_file: Path,
    *,
    required: bool = False,
) -> str | None:
    """Refuse (exit 2) a baseline of another benchmark, given both sides' `summary_identity`;
    return a note when a side has no identity.

    A side without an identity (a bare summary.json, a baseline written before identities were
    stored) is still compared: refusing it would break every existing gate at once. `required`
    (`compare --require-identity`, the CI gate) refuses it (exit 2), naming the file.
    """
    if base_id is not None and cur_id is not None:
        diffs = differences(base_id, cur_id)
        if diffs:
            raise Incomparable(
                baseline_file, current_file, describe_differences(diffs, "baseline", "current")
            )
        return None
    missing = [side for side, ident in (("BASELINE", base_id), ("CURRENT", cur_id)) if ident is None]
    if required:
        side, path = ("BASELINE", baseline_file) if base_id is None else ("CURRENT", current_file)
        raise CovbenchError(
            f"{side} {path}: no benchmark identity (no 'benchmark' entry, no config.json beside it), and "
            "--require-identity refuses to compare blind; re-create it with `covbench compare ... --update`"
        )
    return (
        f"note: {' and '.join(missing)} carries no benchmark identity (no 'benchmark' entry, no "
        "config.json beside it), so whether the two runs are comparable was not checked"
    )
