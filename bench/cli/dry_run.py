"""`covbench run --dry-run`: the resolved configuration as a config file, the plan as its comments.

Everything printed is one YAML document: the plan lines are comments, so the output saved to a
file loads again with `--config` (`covbench run ... --dry-run > run.yaml`).
"""

from __future__ import annotations

from collections.abc import Iterable

from covbench.cli.common import say
from covbench.execution.dry_run import RunPlan, _duration


def _span(values: Iterable[int]) -> str:
    """0,1,2,3,5 -> '0-3,5'."""
    runs: list[list[int]] = []
    for v in sorted(set(values)):
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def plan_lines(plan: RunPlan) -> list[str]:
    trials, pending = plan.trials, plan.pending
    models = list(dict.fromkeys(t.model for t in trials))
    seeds = sorted({t.seed for t in trials})
    lines = [
        f"run folder: {plan.folder}",
        f"data: {plan.data}",
        f"trials: {len(trials)} = {len(models)} model(s) x {len(seeds)} seed(s) x {plan.n_folds} fold(s); "
        f"{len(pending)} to run, {len(trials) - len(pending)} finished",
    ]
    width = max(len(m) for m in models)
    for model in models:
        mine = [t for t in trials if t.model == model]
        todo = [t for t in mine if not t.done]
        lines.append(
            f"  {model:<{width}}  seeds {_span(t.seed for t in mine)}  folds {_span(t.fold for t in mine)}  "
            f"{len(todo)} to run" + (f", {len(mine) - len(todo)} finished" if len(todo) < len(mine) else "")
        )
    if plan.packing is None:
        lines.append(
            f"resources per trial: {plan.cpus_per_trial:g} CPU(s); GPUs and packing are decided when the run "
            "joins the cluster (its resources are asked then)"
        )
    else:
        r = plan.resources or {}
        lines.append(
            f"resources per trial: {plan.cpus_per_trial:g} CPU(s), {plan.packing.gpus_per_trial:g} GPU(s) "
            f"(this machine: {r.get('cpus', 0):g} CPUs, {r.get('gpus', 0):g} GPUs; "
            f"{plan.slots} trial(s) at a time)"
        )
        lines.append(f"packing: {plan.packing.reason}")
    lines += [f"note: {n}" for n in plan.notes]
    if not pending:
        lines.append("time estimate: nothing left to run")
    elif plan.estimate_seconds is None:
        lines.append(f"time estimate: {plan.estimate}")
    else:
        lines.append(f"time estimate: about {_duration(plan.estimate_seconds)} ({plan.estimate})")
    return lines


def print_dry_run(options_yaml: str, plan: RunPlan) -> None:
    """The resolved options (YAML) and the plan (comments) on stdout."""
    say("# covbench run --dry-run: nothing was trained and nothing written.")
    say("# The resolved configuration; saved to a file it runs with: covbench run --config FILE")
    say(f"# configuration key {plan.config_key} (config.json's _key adds the data fingerprint)")
    say(options_yaml.rstrip("\n"))
    say("#")
    say("# plan")
    for line in plan_lines(plan):
        say(f"# {line}")
