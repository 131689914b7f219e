"""`covbench run --max-seeds --dry-run`: the plan names the largest plan a run with rounds of seeds
can train, beside the first round (nothing is trained)."""

from __future__ import annotations

from covbench.config import build_config, resolve_preset
from covbench.execution.dry_run import plan_run


def test_dry_run_names_the_largest_plan_of_rounds(tmp_path) -> None:
    cfg = build_config(models=["unet", "resunet"], n_seeds=3, preset=resolve_preset("smoke"), max_seeds=7)
    plan = plan_run(cfg, tmp_path / "run", debug=True)
    assert len(plan.trials) == 2 * 3  # the first round
    (note,) = [n for n in plan.notes if n.startswith("rounds of seeds")]
    assert "largest plan is 14 trials = 2 model(s) x 7 seed(s) x 1 fold(s), 14 to run" in note
    single = build_config(models=["unet"], n_seeds=3, preset=resolve_preset("smoke"))
    fixed = plan_run(single, None, debug=True)
    assert not any(n.startswith("rounds of seeds") for n in fixed.notes)
