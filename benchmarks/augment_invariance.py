"""Invariance under random generic perturbations inside unlearning, measured on development victims
outside the families grid (issue #18).

    .venv/bin/python benchmarks/augment_invariance.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/augment_invariance.py families [--only wanet ...]         # the choice on every families row

WaNet and all-to-all BadNets re-learned their backdoor when re-tuned after every default so far.
`UnlearnConfig.augment_invariance = γ_a` passes, beside each clean batch and its stamped copy, a
copy with random generic perturbations (`baeraser_lib.defenses.perturbations`: a square of random
pixels, a smooth random warp or a faint noise blend per image) and adds γ_a · the relative distance
of its penultimate features from the clean ones'. Unlearning runs otherwise as before.

Fixed before any candidate ran (`baeraser_lib/lab/augment_study.py`):
* **Development victims**: the path-step study's six (no families row's trigger, place, target or seed).
* **Candidates**: the default (γ_a = 0) and γ_a = 0.5, 1 (the invariance term's own scale), 2, all else the default.
* **The rule**: the path-step study's: the most (victim, bar) pairs met over #18's four bars; the
  default wins ties, then the smaller γ_a. A change becomes the default only if the rule picks it
  and it passes `schedule_study.confirmed` on the families rows.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/augment_invariance.json (merged per victim, so runs resume).
"""

from __future__ import annotations

from baeraser_lib.lab import augment_study
from baeraser_lib.lab.reports import REPO
from path_step import Study, run  # benchmarks/ is on sys.path as a script

AUGMENT_INVARIANCE = Study(REPO / "reports" / "benchmarks" / "augment_invariance.json", augment_study.DEV_VICTIMS,
                           augment_study.CANDIDATES, augment_study.choose,
                           REPO / "reports" / "benchmarks" / "path_step.json")

if __name__ == "__main__":
    raise SystemExit(run(AUGMENT_INVARIANCE, __doc__.split("\n")[0]))
