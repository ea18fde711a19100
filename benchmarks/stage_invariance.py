"""Feature invariance at every stage, not only the penultimate features, measured on development
victims outside the families grid (issue #18).

    .venv/bin/python benchmarks/stage_invariance.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/stage_invariance.py families [--only wanet ...]         # the choice on every families row

After the path-step and weight-reset studies, WaNet and all-to-all BadNets still re-learned their
backdoor when re-tuned. The default's invariance term (γ = 1) makes a stamped image's penultimate
features match its clean image's; whatever detects the trigger below the last layer may survive.
`UnlearnConfig.invariance_at = "stages"` also compares the feature maps entering each
downsampling layer (each stage's output, where NAD, the one peer that stayed erased on every
families row, aligns its student), the term the mean over those taps and the penultimate one.

Fixed before any candidate ran (`baeraser_lib/lab/invariance_study.py`):
* **Development victims**: the path-step study's six (no families row's trigger, place, target or seed).
* **Candidates**: the default (penultimate features, γ = 1) and the stages with γ = 1, 2, 4, all
  else the default.
* **The rule**: the path-step study's: the most (victim, bar) pairs met over #18's four bars; the
  default wins ties, then the smaller γ. A change becomes the default only if the rule picks it
  and it passes `schedule_study.confirmed` on the families rows.

`families` runs the chosen candidate on every families row, the path-step study's figures for the
default beside it, and times its cost here, alone, as that study did.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/stage_invariance.json (merged per victim, so runs resume).
"""

from __future__ import annotations

from baeraser_lib.lab import invariance_study
from baeraser_lib.lab.reports import REPO
from path_step import Study, run  # benchmarks/ is on sys.path as a script

STAGE_INVARIANCE = Study(REPO / "reports" / "benchmarks" / "stage_invariance.json", invariance_study.DEV_VICTIMS,
                         invariance_study.CANDIDATES, invariance_study.choose,
                         REPO / "reports" / "benchmarks" / "path_step.json")

if __name__ == "__main__":
    raise SystemExit(run(STAGE_INVARIANCE, __doc__.split("\n")[0]))
