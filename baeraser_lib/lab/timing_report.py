"""The same model, timed twice: each families row's seconds in the grid beside a study's.

A study (e.g. `benchmarks/path_step.py`) re-runs BAERASER's default on a row's cached victim and
pool. Where it returns the same model as the grid's notebook 03 (the same ASR, accuracy and ASR
after the attacker's re-tuning), any gap in seconds is the machine's, not the method's. The cost
bar (recovery + unlearning ≤ 25% of the victim's training time) is a ratio of such seconds, so
this table says how far it moves. `work_markdown` gives the same bar in image passes
(`baeraser_lib.passes`), which do not move with the machine.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .claims import COST_SHARE
from .grid_report import TABLE_NOTEBOOK

SAME = 1e-9  # ASR, accuracy and re-tuned ASR each this close: the same model


def timing_rows(families: Path, study: Path) -> list[dict]:
    """One dict per families row that both the grid (its `03_unlearn.json`) and `study`'s JSON
    (`families[row]`, with `chosen`) hold: seconds of training, recovery and unlearning in each."""
    rows = json.loads(Path(study).read_text()).get("families", {})
    out = []
    for name, s in rows.items():
        nb03_path = Path(families) / name / f"{TABLE_NOTEBOOK}.json"
        if not nb03_path.exists():
            continue
        nb03 = json.loads(nb03_path.read_text())
        mine, theirs = nb03["methods"]["baeraser"], s["chosen"]
        out.append({
            "row": name,
            "unlearned": bool(theirs["unlearn_seconds"]),
            "same_model": all(abs(mine[k] - theirs[k]) < SAME for k in ("asr", "clean_acc", "reactivated_asr")),
            "train": (nb03["victim_train_seconds"], s["train_seconds"]),
            "recovery": (nb03["recovery_seconds"], s["recovery_seconds"]),
            "unlearn": (mine["seconds"], theirs["unlearn_seconds"]),
            "cost_ratio": (nb03["cost_ratio"], theirs["cost_ratio"]),
        })
    return out


def _ratio(pair: tuple[float, float]) -> float | None:
    return pair[0] / pair[1] if pair[1] else None


def _range(values: list[float]) -> str:
    return f"{min(values):.2f} to {max(values):.2f} (median {statistics.median(values):.2f})" if values else "none"


def _spread(values: list[float]) -> str:
    return f"{min(values):+.3f} to {max(values):+.3f}" if values else "none"


def timing_markdown(families: Path, study: Path) -> str:
    """The README's copy: per row, grid / study seconds and their ratio, then the spread of those
    ratios over the rows where both returned the same model after unlearning something."""
    rows = timing_rows(families, study)
    lines = ["| families row | same model | victim training (s): grid / study | recovery (s): grid / study "
             "| unlearning (s): grid / study | unlearning: grid ÷ study | cost ratio: grid / study |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = _ratio(r["unlearn"])
        lines.append(f"| {r['row']} | {'yes' if r['same_model'] else '**no**'} "
                     f"| {r['train'][0]:.0f} / {r['train'][1]:.0f} | {r['recovery'][0]:.0f} / {r['recovery'][1]:.0f} "
                     f"| " + (f"{r['unlearn'][0]:.1f} / {r['unlearn'][1]:.1f} | {ratio:.2f}" if r["unlearned"]
                              else "nothing unlearned | ")
                     + f" | {r['cost_ratio'][0]:.3f} / {r['cost_ratio'][1]:.3f} |")
    same = [r for r in rows if r["same_model"] and r["unlearned"]]
    lines += ["", f"Over the {len(same)} rows where both unlearned and returned the same model, grid ÷ study: "
                  f"unlearning {_range([_ratio(r['unlearn']) for r in same])}; "
                  f"victim training {_range([_ratio(r['train']) for r in same])}; "
                  f"recovery {_range([_ratio(r['recovery']) for r in same])}; "
                  f"cost ratio, grid − study, {_spread([r['cost_ratio'][0] - r['cost_ratio'][1] for r in same])}. "
                  f"Rows whose cost ratio falls on opposite sides of the bar ({COST_SHARE:g}) in the two runs: "
                  + (", ".join(r["row"] for r in rows if (r["cost_ratio"][0] <= COST_SHARE) != (r["cost_ratio"][1] <= COST_SHARE))
                     or "none") + "."]
    return "\n".join(lines)


def work_markdown(path: Path) -> str:
    """`benchmarks/work_ratio.py`'s table: per families row, recovery's and unlearning's image
    passes (in forward-pass units) against the victim's training passes, beside the grid's
    seconds ratio; rows not run are named below it."""
    doc = json.loads(Path(path).read_text())
    rows = doc.get("rows", {})
    lines = ["| families row | recovery work | unlearning work | training work | work ratio (≤ 0.25) | "
             "seconds ratio in the grid | same labels kept / same ASR as the grid's model |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mark = "met" if r["work_ratio"] <= COST_SHARE else "MISSED"
        same = f"{'yes' if r['same_pool_labels'] else 'NO'} / {'yes' if r['same_model_as_grid'] else 'NO'}"
        lines.append(f"| {name} | {r['recovery_work']:,} | {r['unlearning_work']:,} | {r['training_work']:,} | "
                     f"{r['work_ratio']:.3f} {mark} | {r['seconds_cost_ratio_in_grid']:.3f} | {same} |")
    if rows:
        ratios = [r["work_ratio"] for r in rows.values()]
        unl = [r["unlearning_work"] / r["training_work"] for r in rows.values() if r["unlearning_work"]]
        rec = [r["recovery_work"] / r["training_work"] for r in rows.values()]
        lines += ["", f"Over {len(rows)} rows: work ratio {min(ratios):.3f} to {max(ratios):.3f} "
                      f"(median {statistics.median(ratios):.3f}), {sum(x <= COST_SHARE for x in ratios)} within the bar; "
                      f"recovery alone {min(rec):.3f} to {max(rec):.3f} of training, unlearning alone "
                      f"{min(unl):.3f} to {max(unl):.3f} where it ran."]
    return "\n".join(lines)
