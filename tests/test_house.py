"""The engine's sub-packages keep the rules their docstrings state (docs/contributing.md, "The house").

Each rule is what lets a reader, or a light process, use one part without the others: the report
and the CI gate read run folders without torch or Ray, the kernel that plugin authors import pulls
in no engine, and only two modules talk to Ray and MLflow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "bench"
KERNEL = ("errors", "config", "registry", "checks", "metrics", "paths", "faults")
PACKAGES = ("folder", "training", "execution", "cli")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module load?) for every import statement in a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
    return found


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _offenders(paths: list[Path], banned: tuple[str, ...], at_load_only: bool = False) -> list[str]:
    return [
        f"{p.relative_to(REPO)} imports {name}"
        for p in paths
        for name, at_load in _imports(p)
        if name.startswith(banned) and (at_load or not at_load_only)
    ]


def test_the_engine_is_the_kernel_and_four_packages():
    top = {p.stem for p in ENGINE.glob("*.py")} - {"__init__"}
    packages = {p.name for p in ENGINE.iterdir() if (p / "__init__.py").is_file()}
    assert top == set(KERNEL) and packages == set(PACKAGES)
    for name in PACKAGES:  # each package says its rule where a reader opens it
        assert len(ast.get_docstring(ast.parse((ENGINE / name / "__init__.py").read_text())) or "") > 100


def test_folder_never_imports_training_or_execution():
    offenders = _offenders(
        _modules(ENGINE / "folder"), ("covbench.training", "covbench.execution", "ray", "mlflow")
    )
    offenders += _offenders(_modules(ENGINE / "folder"), ("torch",), at_load_only=True)
    assert offenders == []


def test_the_kernel_imports_no_engine_package():
    kernel = [ENGINE / f"{name}.py" for name in KERNEL]
    assert _offenders(kernel, tuple(f"covbench.{p}" for p in PACKAGES) + ("ray", "mlflow")) == []
    assert _offenders(kernel, ("torch",), at_load_only=True) == []


def test_torch_at_load_only_in_training():
    outside = [p for p in _modules(ENGINE) if "training" not in p.relative_to(ENGINE).parts]
    assert _offenders(outside, ("torch",), at_load_only=True) == []
    assert _offenders(_modules(ENGINE / "training"), ("covbench.execution", "ray", "mlflow")) == []


def test_ray_only_in_the_scheduler():
    rooms = [p for room in ("bench", "reports", "datasets", "plugins") for p in _modules(REPO / room)]
    importers = {p.split(" imports ")[0] for p in _offenders(rooms, ("ray",))}
    assert importers == {"bench/execution/scheduler.py"}


def test_reading_a_run_folder_loads_no_torch_ray_or_mlflow():
    """What the report, `compare` and the CI gate import, the `covbench` command included (its run
    command imports the engine when it runs): a reader without a GPU stack pays for none."""
    code = (
        "import sys, covbench.reports.report, covbench.reports.compare, covbench.folder.state, "
        "covbench.folder.lock, covbench.cli; print(sorted({'torch', 'ray', 'mlflow'} & set(sys.modules)))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "[]"


MAX_FUNCTION_LINES = 80  # issue 35: a function a reader would split is split


def _long_functions(paths: list[Path]) -> list[str]:
    """Functions whose body (docstring included) runs over MAX_FUNCTION_LINES lines."""
    found = []
    for p in paths:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{p.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_body_runs_over_80_lines():
    rooms = [ENGINE, REPO / "datasets", REPO / "reports"]
    assert _long_functions([p for room in rooms for p in _modules(room)]) == []


def test_the_length_rule_sees_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES + 1))
    short = tmp_path / "short.py"
    short.write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert _long_functions([short]) == [] and len(_long_functions([long])) == 1


def _layout_rows() -> dict[str, str]:
    """README's layout table: {folder cell: what-it-holds cell}."""
    rows = {}
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n\n", 2)[1]
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[2]
    return rows


def test_the_readme_layout_table_names_every_module():
    """A newcomer finds every module of the engine, datasets and reports in README's table."""
    rows = _layout_rows()
    folders = {
        "`bench/*.py`": ENGINE,
        "`bench/folder/`": ENGINE / "folder",
        "`bench/training/`": ENGINE / "training",
        "`bench/execution/`": ENGINE / "execution",
        "`bench/cli/`": ENGINE / "cli",
        "`datasets/`": REPO / "datasets",
        "`reports/`": REPO / "reports",
    }
    missing = [
        f"{cell}: {p.stem}"
        for cell, folder in folders.items()
        for p in folder.glob("*.py")
        if p.stem != "__init__" and f"`{p.stem}`" not in rows[cell] and f"`{p.name}`" not in rows[cell]
    ]
    assert missing == []
    assert (REPO / "docs" / "architecture.md").is_file()
