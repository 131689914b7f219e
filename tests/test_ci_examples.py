"""examples/ci: the GitHub Actions and GitLab CI files are valid YAML, run the covbench commands of
the project's own .ci/run (same order, same arguments) and every one of them parses in the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import typer

from covbench.cli import app

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / "examples" / "ci" / "github-actions.yml"
GITLAB = ROOT / "examples" / "ci" / "gitlab-ci.yml"


def covbench_lines(shell: str) -> list[str]:
    """The covbench command lines of a shell script, without `|| status=$?` tails."""
    lines = [line.strip() for line in shell.splitlines()]
    return [line.split(" || ")[0] for line in lines if line.startswith("covbench ")]


def github_shell(path: Path) -> str:
    workflow = yaml.safe_load(path.read_text())
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return "\n".join(step["run"] for step in steps if "run" in step)


def gitlab_shell(path: Path) -> str:
    jobs = yaml.safe_load(path.read_text())
    return "\n".join(line for job in jobs.values() if isinstance(job, dict) for line in job.get("script", []))


def test_example_workflows_run_the_commands_of_ci_run():
    expected = covbench_lines((ROOT / ".ci" / "run").read_text())
    assert [line.split()[1] for line in expected] == ["run", "compare", "track", "history"]
    assert covbench_lines(github_shell(GITHUB)) == expected
    assert covbench_lines(gitlab_shell(GITLAB)) == expected


@pytest.mark.parametrize("shell", [github_shell(GITHUB), gitlab_shell(GITLAB)], ids=["github", "gitlab"])
def test_every_example_command_parses_in_the_cli(shell):
    group = typer.main.get_command(app)
    for line in covbench_lines(shell):
        _, name, *args = shlex.split(line)
        command = group.commands.get(name)
        assert command is not None, f"{line}: no command {name!r}"
        command.make_context(name, list(args))  # raises on an unknown option or a missing argument
        baselines = [a for a in args if a.endswith(".json")]
        assert all((ROOT / b).is_file() for b in baselines), f"{line}: baseline not committed"


def test_examples_cache_pip_keep_the_history_and_upload_the_run():
    github = yaml.safe_load(GITHUB.read_text())
    steps = github["jobs"]["gate"]["steps"]
    uses = {step.get("uses", "").split("@")[0]: step for step in steps}
    assert uses["actions/setup-python"]["with"]["cache"] == "pip"
    assert {"actions/cache/restore", "actions/cache/save", "actions/upload-artifact"} <= set(uses)
    assert "runs/ci" in uses["actions/upload-artifact"]["with"]["path"]
    gitlab = yaml.safe_load(GITLAB.read_text())["covbench-gate"]
    cached = [path for cache in gitlab["cache"] for path in cache["paths"]]
    assert ".cache/pip" in cached and ".covbench-history/" in cached
    assert gitlab["artifacts"]["when"] == "always" and "runs/ci/" in gitlab["artifacts"]["paths"]
