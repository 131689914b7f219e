"""Is this JSON a covbench summary? The gate's question before it trusts a baseline.

`compare` treats a metric without a usable baseline mean as "new" and lets it pass, so a baseline
whose means are NaN, Infinity, strings or missing would pass every check. `validate_summary` holds
a loaded summary to the shape `covbench report` writes (reports/report.py, reports/aggregate.py)
and names the first field that breaks it:

- the top level is an object with a non-empty `models` object; `unit` and `distance_unit`, when
  present, are values covbench writes;
- each model is an object of metric entries; each entry's `mean`, `sd`, `seed_mean` and `seed_sd`
  are finite numbers, or null where covbench writes null (no defined value: `mean` null only with
  `n` 0); `n`, `n_undefined` and `n_seeds` are whole numbers of 0 or more;
- `per_case`, when present, maps model -> metric -> case -> a finite number;
- at least one metric has a mean (a summary of nothing gates nothing).

Booleans are not numbers here, and an integer too large for a float is refused (Python's json reads
one happily; arithmetic on it would fail later).

`check_schema` asks the question before those: can this covbench interpret the file at all? A
`schema` newer than `SUMMARY_SCHEMA` is refused (its fields may mean something this code does not
know), and so is a summary without `schema` that holds fields of a later schema (`ADDED_IN`): a file
without one is read as schema 1, the oldest this covbench reads, and schema 1 never held them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from covbench.errors import CovbenchError, quote

UNITS = ("slice", "patient")
DISTANCE_UNITS = ("mm", "px")
FLOAT_FIELDS = ("mean", "sd", "seed_mean", "seed_sd")
COUNT_FIELDS = ("n", "n_undefined", "n_seeds")
#: The summary schema `covbench report` writes (reports/report.py); 1 is a summary without `schema`.
SUMMARY_SCHEMA = 2
#: Top-level fields each schema added; a summary of an older schema holds none of them.
ADDED_IN: dict[int, tuple[str, ...]] = {2: ("primary", "inference", "verdicts", "unit_values")}


class _Bad(Exception):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field} {why}")


def _describe(value: Any) -> str:
    return quote(value, 40)


def _number(value: Any, field: str, *, null: bool) -> float | None:
    """A finite float, or None where null is allowed; raise _Bad otherwise."""
    if value is None:
        if null:
            return None
        raise _Bad(field, "is null, expected a number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(field, f"is {_describe(value)}, expected a number")
    try:
        number = float(value)
    except OverflowError:
        raise _Bad(field, "is an integer too large for a number") from None
    if not math.isfinite(number):
        raise _Bad(field, f"is {value}, expected a finite number")
    return number


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 2**53:
        raise _Bad(field, f"is {_describe(value)}, expected a whole number of 0 or more")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(field, f"is a {type(value).__name__}, expected an object")
    return value


def _metric_entry(entry: Any, field: str) -> bool:
    """Check one {mean, sd, n, ...} entry; True when it holds a mean."""
    entry = _object(entry, field)
    if "mean" not in entry:
        raise _Bad(field, "has no 'mean'")
    counts = {k: _count(entry[k], f"{field}.{k}") for k in COUNT_FIELDS if k in entry}
    values = {k: _number(entry[k], f"{field}.{k}", null=True) for k in FLOAT_FIELDS if k in entry}
    if values["mean"] is None and counts.get("n", 0) != 0:
        raise _Bad(f"{field}.mean", f"is null although n is {counts['n']}")
    return values["mean"] is not None


def _check(data: Any) -> None:
    top = _object(data, "the summary")
    if "models" not in top:
        raise _Bad("models", "is missing (a covbench summary lists its models there)")
    models = _object(top["models"], "models")
    if not models:
        raise _Bad("models", "is empty")
    for key, allowed in (("unit", UNITS), ("distance_unit", DISTANCE_UNITS)):
        if key in top and top[key] not in allowed:
            raise _Bad(key, f"is {_describe(top[key])}, expected one of {', '.join(allowed)}")
    any_mean = False
    for model, metrics in models.items():
        metrics = _object(metrics, f"models.{model}")
        for metric, entry in metrics.items():
            any_mean |= _metric_entry(entry, f"models.{model}.{metric}")
    if not any_mean:
        raise _Bad("models", "hold no metric with a mean")
    if "per_case" in top:
        for model, metrics in _object(top["per_case"], "per_case").items():
            for metric, cases in _object(metrics, f"per_case.{model}").items():
                for case, value in _object(cases, f"per_case.{model}.{metric}").items():
                    _number(value, f"per_case.{model}.{metric}.{case}", null=False)


def check_schema(data: Any, path: str | Path) -> int:
    """The schema of a summary this covbench can interpret; raise CovbenchError (exit 2) naming
    `path` and the schema otherwise."""
    if not isinstance(data, dict):
        return SUMMARY_SCHEMA  # validate_summary names what is wrong with it
    schema = data.get("schema", 1)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise CovbenchError(f"{path}: summary schema {quote(schema)} is not a schema covbench writes")
    if schema > SUMMARY_SCHEMA:
        raise CovbenchError(
            f"{path}: summary schema {schema} is newer than this covbench reads (1 to {SUMMARY_SCHEMA}); "
            "upgrade covbench, or re-create the file with this version"
        )
    later = [k for v, keys in sorted(ADDED_IN.items()) if v > schema for k in keys if k in data]
    if later:
        said = "no 'schema', so it reads as schema 1" if "schema" not in data else f"schema {schema}"
        raise CovbenchError(
            f"{path}: {said}, but holds {', '.join(later)} of a later schema; restore its 'schema' "
            "or re-create it (covbench report, or compare --update)"
        )
    return schema


def validate_summary(data: Any, path: str | Path) -> None:
    """Raise CovbenchError (exit 2) naming `path` and the first field of `data` that a summary
    written by `covbench report` could not hold."""
    try:
        _check(data)
    except _Bad as exc:
        raise CovbenchError(f"{path}: not a valid covbench summary: {exc}") from None
