"""The README table of `benchmarks/reactivation_seeds.py`: how far issue #18's re-tuning check
moves with the attacker's seed, per families row, and whether the grid's one-seed verdict holds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}–{max(values):.3f} ({statistics.mean(values):.3f})"


def seed_verdicts(row: dict, margin: float) -> dict:
    """One row's verdicts: the grid's (seed 0 as the grid ran it), per seed, and on the seeds' means."""
    met = row["met"]
    grid = row["grid"]["baeraser_retuned"] <= row["grid"]["reference_retuned"] + margin
    on_means = statistics.mean(row["baeraser_retuned"]) <= statistics.mean(row["reference_retuned"]) + margin
    return {"grid": grid, "seeds_met": sum(met), "seeds": len(met), "on_means": on_means,
            "agree": all(m == grid for m in met)}


def seeds_markdown(path: Path) -> str:
    """Per families row: the grid's re-tuned ASR (seed 0) for BAERASER and the never-backdoored
    reference, their spread over the attacker's seeds, and on how many seeds the bar is met."""
    doc = json.loads(Path(path).read_text())
    margin, rows = doc["margin"], doc.get("rows", {})
    lines = ["| families row | grid (seed 0): BAERASER / reference | BAERASER re-tuned: min–max (mean) | "
             "reference re-tuned: min–max (mean) | bar met, per seed | on the means | grid's verdict |",
             "|---|---|---|---|---|---|---|"]
    verdicts = {}
    for name, r in rows.items():
        v = verdicts[name] = seed_verdicts(r, margin)
        lines.append(f"| {name} | {r['grid']['baeraser_retuned']:.3f} / {r['grid']['reference_retuned']:.3f} | "
                     f"{_spread(r['baeraser_retuned'])} | {_spread(r['reference_retuned'])} | "
                     f"{v['seeds_met']} of {v['seeds']} | {'met' if v['on_means'] else 'MISSED'} | "
                     f"{'met' if v['grid'] else 'MISSED'}{'' if v['agree'] else ' (seeds disagree)'} |")
    if rows:
        split = [n for n, v in verdicts.items() if not v["agree"]]
        with_seed0 = [r for r in rows.values() if "seed0_as_grid" in r]  # rows whose seeds included 0
        same = sum(r["seed0_as_grid"] for r in with_seed0)
        model = sum(r["same_model_as_grid"] for r in rows.values())
        lines += ["", f"Bar: BAERASER's re-tuned ASR ≤ the reference's with the same seed + {margin:g}. "
                      f"Over {len(rows)} rows the grid's verdict held on every seed on {len(rows) - len(split)}; "
                      f"the seeds disagree on {len(split)}{': ' + ', '.join(split) if split else ''}. "
                      f"On the seeds' means the bar is met on {sum(v['on_means'] for v in verdicts.values())} rows "
                      f"(the grid: {sum(v['grid'] for v in verdicts.values())}). "
                      f"Seed 0 gave the grid's figures again on {same} of the {len(with_seed0)} rows that ran it; BAERASER's model, "
                      f"unlearned again, had the grid's ASR on {model} of {len(rows)}."]
    return "\n".join(lines)
