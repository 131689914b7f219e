"""`covbench run --config FILE.yaml`: a run's options kept in a file, and the resolved file back out.

A file sets any option of `covbench run` by its name without the dashes (`image-size: 128`;
`image_size` is the same key). It becomes the command's defaults (click's `default_map`), so an
option given on the command line wins, and the options then go through the same parsing and the
same checks (`covbench.config.build_config`, `covbench.execution.runner`) as typed ones: there is no second
schema. Types come from `covbench run`'s own signature; a YAML list is accepted where an option
takes a comma list (`models`, `spacing`) or is repeatable (`model-option`); `~` in a path option is
expanded as a shell would. An unknown key, a wrong type or a value out of range ends as one line
naming the file and the key, exit 2; so does a key that is a list or a mapping, nesting deeper
than `MAX_DEPTH` and aliases that expand to more than `MAX_VALUES` values (a "billion laughs"
bomb is refused before its value is built), and a rejected value is quoted by its first characters.

`--config`, `--dry-run` and `--resume` are command-line only: a file describes a run, `--resume`
takes the run from a folder. Relative paths in a file (`data-dir`, `out`) are relative to the
directory the command runs in, as on the command line.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from covbench import registry
from covbench.cli.common import fail
from covbench.config import RunConfig
from covbench.errors import CovbenchError, quote

#: Values (scalars, lists, mappings; each alias counted as what it expands to) a file may hold, and
#: its deepest nesting: a run's options are a few dozen values, two levels deep.
MAX_VALUES, MAX_DEPTH = 10_000, 20
COMMAND_LINE_ONLY = ("config", "dry_run", "resume")
_META = "covbench.config_file"  # ctx.meta entry: (path, {option name: key as written in the file})


def run_options(command: Callable[..., Any]) -> dict[str, tuple[type, bool]]:
    """{option name: (base type, accepts None)} of `command`'s options that a file may set."""
    hints = typing.get_type_hints(command)
    out = {}
    for name in inspect.signature(command).parameters:
        hint = hints.get(name)
        if name in COMMAND_LINE_ONLY or hint is typer.Context or hint is None:
            continue
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        args = typing.get_args(hint) if union else (hint,)
        nullable = type(None) in args
        base = next(a for a in args if a is not type(None))
        out[name] = (typing.get_origin(base) or base, nullable)
    return out


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_value(key: str, value: Any, base: type, nullable: bool, where: str) -> Any:
    """The file's value as the option takes it, or a CovbenchError naming the key."""

    def wrong(expected: str) -> CovbenchError:
        return CovbenchError(f"{where}: key '{key}': expected {expected}, got {quote(value, as_json=True)}")

    scalar = (str, int, float)
    if value is None:
        if nullable:
            return None
        raise wrong("a value (this option has no 'unset')")
    if base is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(value, bool):  # a YAML `yes`/`on` where a number or text belongs
        raise wrong("a number" if base in (int, float) else "text")
    if base in (int, float):  # a number, or its text as the command line takes it (PyYAML reads 1e-3 as text)
        try:
            number = base(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if base is int and not isinstance(number, int):
            raise wrong("a whole number")
        if not isinstance(number, int | float):
            raise wrong("a number")
        return base(number)
    if base is list:  # a repeatable option: a list of texts (or one text)
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, scalar) and not isinstance(v, bool) for v in items):
            raise wrong("a list of texts")
        return [str(v) for v in items]
    # text (str, Path): a YAML list is a comma list, a number is its text
    if isinstance(value, list):
        if not value or not all(isinstance(v, scalar) and not isinstance(v, bool) for v in value):
            raise wrong("text or a list of texts")
        return ",".join(str(v) for v in value)
    if not isinstance(value, scalar):
        raise wrong("text")
    return os.path.expanduser(value) if base is Path else str(value)  # `~/data`, as a shell would


def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """PyYAML's SafeLoader, refusing a key given twice (it would keep the last silently), a key
        that is not a scalar, and a document that expands beyond MAX_VALUES or MAX_DEPTH."""

        def construct_document(self, node):
            stack, count = [(node, 0)], 0  # walked as it would be built: an alias once per use
            while stack:
                item, depth = stack.pop()
                count += 1
                if count > MAX_VALUES or depth > MAX_DEPTH:
                    problem = (
                        f"more than {MAX_VALUES} values, aliases expanded"
                        if count > MAX_VALUES
                        else f"nested more than {MAX_DEPTH} levels deep"
                    )
                    raise yaml.constructor.ConstructorError(None, None, problem, item.start_mark)
                if isinstance(item, yaml.SequenceNode):
                    stack += [(child, depth + 1) for child in item.value]
                elif isinstance(item, yaml.MappingNode):
                    stack += [(child, depth + 1) for pair in item.value for child in pair]
            return super().construct_document(node)

        def construct_mapping(self, node, deep=False):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: PyYAML would fail unhashable
                    kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"a key is a {kind}, expected an option name", key_node.start_mark
                    )
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {quote(key)} given twice", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def read_options(path: Path, options: dict[str, tuple[type, bool]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The options set in the YAML file `path`: ({option name: value}, {option name: key as written})."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CovbenchError(
            f"--config {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except RecursionError:  # PyYAML's parser recurses once per level, before MAX_DEPTH is checked
        raise CovbenchError(f"{path}: not valid YAML (nested more than {MAX_DEPTH} levels deep)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CovbenchError(f"{path}: not valid YAML ({problem}{where})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CovbenchError(
            f"{path}: expected a mapping of run options (key: value), got {type(data).__name__}"
        )
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        name = key.replace("-", "_")
        if name in COMMAND_LINE_ONLY:
            raise CovbenchError(
                f"{path}: key {quote(key)}: give {option_flag(name)} on the command line, not in a file"
            )
        if name not in options:
            close = difflib.get_close_matches(name, list(options), n=1) if len(name) < 100 else []
            hint = f" (did you mean '{close[0].replace('_', '-')}'?)" if close else ""
            raise CovbenchError(
                f"{path}: unknown key {quote(key)}{hint}; keys are the options of `covbench run`"
            )
        if name in written:
            raise CovbenchError(f"{path}: key '{key}' given twice (also as '{written[name]}')")
        values[name] = _check_value(key, value, *options[name], where=str(path))
        written[name] = key
    return values, written


def load_config(ctx: typer.Context, path: Path | None, command: Callable[..., Any]) -> Path | None:
    """The eager `--config` callback of `command`: the file's options become the command's
    defaults, so the command line wins over them."""
    if path is None:
        return None
    try:
        values, written = read_options(path, run_options(command))
    except CovbenchError as exc:
        raise fail(exc) from None
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta[_META] = (path, written)
    return path


def from_file(ctx: typer.Context, name: str) -> bool:
    """Whether option `name`'s value came from the `--config` file."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "DEFAULT_MAP"


def file_keys(ctx: typer.Context, names: typing.Iterable[str]) -> list[str]:
    """Of the options `names`, those set by the `--config` file, as written there."""
    _path, written = ctx.meta.get(_META, (None, {}))
    return [written.get(n, n) for n in names if from_file(ctx, n)]


# Messages that are about one option without starting with its flag.
_SUBJECTS = {"unknown preset": "preset", "unknown model": "models", "unknown dataset": "dataset",
             "unknown split": "split"}  # fmt: skip
_FLAG = re.compile(r"^(--[a-z][a-z0-9-]*)")


def blame_file(ctx: typer.Context, exc: CovbenchError) -> CovbenchError:
    """`exc` with the config file and key in front when the option it is about came from the file
    (a range check in build_config, an unknown model name, ...); otherwise `exc` itself."""
    path, written = ctx.meta.get(_META, (None, {}))
    if path is None:
        return exc
    message = str(exc)
    match = _FLAG.match(message)
    name = match.group(1)[2:].replace("-", "_") if match else None
    if name is None:
        name = next((opt for prefix, opt in _SUBJECTS.items() if message.startswith(prefix)), None)
    if name is None or name not in written or not from_file(ctx, name):
        return exc
    blamed = CovbenchError(f"{path}: key '{written[name]}': {message}")
    blamed.exit_code = exc.exit_code
    return blamed


def resolved_options(cfg: RunConfig, given: dict[str, Any]) -> dict[str, Any]:
    """Every run option as this run resolves it, keyed as in a config file: loading the result
    with `--config` gives the same configuration (key) on the same kind of machine. `given` holds
    the values of the options that are not part of the configuration (`out`, `address`, ...)."""
    config_values: dict[str, Any] = {
        "models": list(cfg.models),
        "seeds": len(cfg.seeds),
        "model_option": [
            f"{model}.{key}={json.dumps(value)}"
            for model, options in cfg.model_options.items()
            for key, value in options.items()
        ],
        "spacing": None if cfg.spacing is None else ",".join(repr(float(v)) for v in cfg.spacing),
        # implicit (the preset's) where a model has no width knob: it refuses an explicit --width
        "width": cfg.width if all(registry.get_model(m).has_width for m in cfg.models) else None,
        # configurations written before the affine mode stored a bool (True = flip)
        "augment": (
            {True: "flip", False: "none"}[cfg.augment] if isinstance(cfg.augment, bool) else cfg.augment
        ),
    }
    fields = cfg.to_dict()
    out: dict[str, Any] = {}
    for name, value in given.items():
        if name in COMMAND_LINE_ONLY:
            continue
        if name in config_values:
            value = config_values[name]
        elif name in fields:
            value = fields[name]
        out[name.replace("_", "-")] = str(value) if isinstance(value, Path) else value
    return out


def to_yaml(options: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(options, sort_keys=False, default_flow_style=None, width=100)
