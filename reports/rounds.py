"""The rounds of a `--max-seeds` run in its report: rounds.json read back, the primary verdicts
taken from the stopping rule (not re-tested at the end at full alpha, which would undo the error
control across looks), and the section the report opens with."""

from __future__ import annotations

import json
from pathlib import Path

from covbench.folder.layout import RunFolder


def read_rounds(run_dir: Path) -> dict | None:
    """rounds.json of a run with rounds of seeds, else None (a fixed design)."""
    path = RunFolder(run_dir).rounds
    return json.loads(path.read_text()) if path.exists() else None


def apply_rounds(verdicts: dict[str, dict], record: dict) -> None:
    """Each primary pair's verdict becomes the stopping rule's (decided at a look, else
    undecided); the end-of-run test stays beside it as `verdict_fixed`."""
    rule, rounds = record.get("rule", {}), record.get("rounds", [])
    primary = verdicts.get(rule.get("primary", "dice"))
    if not primary or not rounds:
        return
    final = {frozenset((p["a"], p["b"])): p for p in rounds[-1]["pairs"]}
    for pair in primary["pairs"]:
        seq = final.get(frozenset((pair["a"], pair["b"])))
        if seq is None:
            continue
        pair["verdict_fixed"] = pair["verdict"]
        pair["verdict"] = seq["verdict"]
        pair["stopping"] = {"reason": seq["reason"], "round": seq["decided_at"]}
    primary["family"] += f"; verdicts from the stopping rule ({rule.get('spending')}, rounds.json)"
    best = primary.get("best")
    for model in list(primary.get("marks", {})):
        if model == best:
            continue
        p = next((p for p in primary["pairs"] if {p["a"], p["b"]} == {model, best}), None)
        if p is not None:
            primary["marks"][model] = {"undecided": "undecided", "practically equivalent": "equivalent"}.get(
                p["verdict"], "worse"
            )


def rounds_markdown(record: dict) -> list[str]:
    """The report's opening section: per round, seeds per model, the boundary, each pair's state."""
    rule = record["rule"]
    exact = rule["spending"].startswith("exact-")  # covbench.reports.sequential.is_exact
    bound = "exact group-sequential boundaries" if exact else "each look at the alpha it spends"
    guard = (
        f"; an early 'better' needs {rule['min_better']} seeds a side"
        if exact and rule.get("min_better")
        else ""
    )
    lines = [
        f"Rounds of seeds: first {rule['first']}, then {rule['step']} a round, at most {rule['max_seeds']} "
        f"per model; {rule['spending']} alpha spending (alpha {rule['alpha']}, looks at the share of "
        f"seeds, {bound}), futility below {rule['futility']:.0%} conditional power{guard}; primary metric "
        f"{rule['primary']}.",
        "",
        "| round | seeds per model | alpha spent | level of this look | boundary (z) "
        "| pairs (verdict, why it stopped) |",
        "|---|---|---|---|---|---|",
    ]
    for r in record["rounds"]:
        seeds = ", ".join(f"{m} {n}" for m, n in r["seeds"].items())
        pairs = "; ".join(f"{p['a']} vs {p['b']}: {p['verdict']} ({p['reason']})" for p in r["pairs"])
        z = f"{r['boundary']:.3f}" if r.get("boundary") is not None else "-"
        lines.append(
            f"| {r['round']} | {seeds} | {r['alpha_spent']:.4f} | {r['nominal_alpha']:.4f} | {z} | {pairs} |"
        )
    if not record.get("finished"):
        lines += ["", "The run stopped before its rounds were finished: `covbench run --resume` continues."]
    return lines
