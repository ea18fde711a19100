"""A shifted head (feature-shift tuning's) inside unlearning, measured on development victims
outside the families grid (issue #18).

    .venv/bin/python benchmarks/head_shift.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/head_shift.py families [--only wanet ...]         # the choice on every families row

WaNet and all-to-all BadNets re-learned their backdoor when re-tuned after every default so far.
`UnlearnConfig.head_shift = λ` re-initialises the model's head before the first step, adds
λ·⟨W, W_suspect⟩ to every step's loss and puts ‖W‖ back at the suspect's after it (FST, Min et
al., NeurIPS 2023): the new head may not read the features through the old head's directions, so
the features themselves must shift, the backdoor's with them. Unlearning runs otherwise as before.

Fixed before any candidate ran (`baeraser_lib/lab/shift_study.py`):
* **Development victims**: the path-step study's six (no families row's trigger, place, target or seed).
* **Candidates**: the default (λ = 0) and λ = 0.1, 0.2 (FST's published CIFAR-10 setting), 0.4, all else the default.
* **The rule**: the path-step study's: the most (victim, bar) pairs met over #18's four bars; the
  default wins ties, then the smaller λ. A change becomes the default only if the rule picks it
  and it passes `schedule_study.confirmed` on the families rows.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/head_shift.json (merged per victim, so runs resume).
"""

from __future__ import annotations

from baeraser_lib.lab import shift_study
from baeraser_lib.lab.reports import REPO
from path_step import Study, run  # benchmarks/ is on sys.path as a script

HEAD_SHIFT = Study(REPO / "reports" / "benchmarks" / "head_shift.json", shift_study.DEV_VICTIMS,
                   shift_study.CANDIDATES, shift_study.choose,
                   REPO / "reports" / "benchmarks" / "path_step.json")

if __name__ == "__main__":
    raise SystemExit(run(HEAD_SHIFT, __doc__.split("\n")[0]))
