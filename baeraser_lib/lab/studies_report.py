"""Issue #18's studies against re-learning, side by side: one line per study.

Each study (`benchmarks/path_step.py` and those after it) tried one change to BAERASER's
unlearning on the same six development victims, under the same rule fixed in advance (the most
(victim, bar) pairs met over #18's four bars; the default wins ties). This table reads each
study's JSON and says what it tried, how many pairs each candidate met, what the rule chose, and
what happened to the two victims every default so far let re-learn: WaNet and all-to-all BadNets.
"""

from __future__ import annotations

import json
from pathlib import Path

from .claims import REACTIVATION_MARGIN
from .schedule_study import BARS, confirmed

# (README name, JSON under reports/benchmarks/, what the candidates change), in the order they ran
STUDIES = (
    ("path step", "path_step.json", "loss taken at θ + ρ·(θ − θ0), ρ"),
    ("weight reset", "weight_reset.json", "lowest-Fisher weights zeroed first, fraction q"),
    ("invariance at every stage", "stage_invariance.json", "stage maps held too, γ"),
    ("channel pruning", "trigger_channels.json", "channels the recovered triggers move zeroed, fraction r"),
    ("shifted head", "head_shift.json", "FST's head, λ"),
    ("augmented invariance", "augment_invariance.json", "features held under random patches, warps, blends, γ_a"),
)
WATCHED = ("dev_wanet_t3", "dev_all_to_all_4x4")  # the kinds whose families rows re-learned


def study_line(name: str, doc: dict, changes: str) -> dict:
    """One study's summary: pairs met per candidate, the choice, the watched victims' re-tuned ASR
    (the default's, the lowest any candidate reached, and the bar), and the families check."""
    dev = {v: r for v, r in doc["development"].items() if r["candidates"]}
    pairs = {c: sum(sum(r["candidates"][c]["bars"][b] for b in BARS) for r in dev.values()) for c in doc["candidates"]}
    watched = {}
    for v in WATCHED:
        if v in dev:
            cands = dev[v]["candidates"]
            others = {c: f["reactivated_asr"] for c, f in cands.items() if c != "default"}
            best = min(others, key=others.get) if others else None
            watched[v] = {"default": cands["default"]["reactivated_asr"], "best": best,
                          "best_asr": others.get(best), "bar": dev[v]["reference_reactivated_asr"] + REACTIVATION_MARGIN,
                          "best_points": cands[best]["acc_drop_points"] if best else None}
    families = doc.get("families")
    check = None
    if families and doc["chosen"] != "default":
        check = confirmed(families, families)
    return {"study": name, "changes": changes, "pairs": pairs, "of": len(dev) * len(BARS),
            "chosen": doc["chosen"], "watched": watched, "families_confirmed": check}


def studies_lines(benchmarks: Path) -> list[dict]:
    """The studies whose JSON is present (a study not yet run is left out)."""
    out = []
    for name, file, changes in STUDIES:
        path = Path(benchmarks) / file
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("chosen"):
                out.append(study_line(name, doc, changes))
    return out


def studies_markdown(benchmarks: Path) -> str:
    """The README's table of #18's studies against re-learning."""
    lines = ["| study | candidates change | (victim, bar) pairs met: default; candidates | rule's choice | "
             "WaNet victim re-tuned: default → lowest | all-to-all victim re-tuned: default → lowest | "
             "families check |", "|---|---|---|---|---|---|---|"]
    for s in studies_lines(benchmarks):
        others = "; ".join(f"{c} {p}" for c, p in s["pairs"].items() if c != "default")
        cells = []
        for v in WATCHED:
            w = s["watched"].get(v)
            cells.append("–" if w is None or w["best"] is None else
                         f"{w['default']:.3f} → {w['best_asr']:.3f} ({w['best']}, {w['best_points']:.2f} points "
                         f"lost); bar {w['bar']:.3f}")
        check = {None: "not run (no pick)" if s["chosen"] == "default" else "not run yet",
                 True: "passed: adopted", False: "failed: not adopted"}[s["families_confirmed"]]
        lines.append(f"| {s['study']} | {s['changes']} | {s['pairs'].get('default', 0)} of {s['of']}; {others} | "
                     f"{s['chosen']} | {cells[0]} | {cells[1]} | {check} |")
    return "\n".join(lines)
