"""Zeroing the weights clean data leaves unused before unlearning, measured on development victims
outside the families grid (issue #18).

    .venv/bin/python benchmarks/weight_reset.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/weight_reset.py families [--only wanet ...]         # the choice on every families row

After the path-step study, WaNet and all-to-all BadNets still re-learned their backdoor when
re-tuned: the recovered triggers erased the ASR, but whatever in the network detects the true
trigger was left in place, one short re-tuning away from the target again. A clean model has no
such detector and must grow one, which 20 poisoned images in 5 epochs barely do.
`UnlearnConfig.reset_fraction = q` sets to zero, before the first unlearning step, the q lowest-
Fisher entries of each convolution and linear weight, the Fisher being the clean loss's on the
defender's D_h: the weights the clean task barely uses, where a backdoor's own detectors can live
(fine-pruning's observation, at the level of single weights and in every layer). No trigger is
guessed. Unlearning then runs as before; the zeroed weights are free to regrow where clean data
or the unlearning asks for them.

Fixed before any candidate ran (`baeraser_lib/lab/reset_study.py`):
* **Development victims**: the path-step study's six (no families row's trigger, place, target or seed).
* **Candidates**: the default (q = 0) and q = 0.1, 0.3, 0.5, all else the default.
* **The rule**: the path-step study's: the most (victim, bar) pairs met over #18's four bars; the
  default wins ties, then the smaller q. A change becomes the default only if the rule picks it.

`families` runs the chosen candidate on every families row, the path-step study's figures for the
default beside it, and times its cost here, alone, as that study did.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/weight_reset.json (merged per victim, so runs resume).
"""

from __future__ import annotations

from baeraser_lib.lab import reset_study
from baeraser_lib.lab.reports import REPO
from path_step import Study, run  # benchmarks/ is on sys.path as a script

WEIGHT_RESET = Study(REPO / "reports" / "benchmarks" / "weight_reset.json", reset_study.DEV_VICTIMS,
                     reset_study.CANDIDATES, reset_study.choose,
                     REPO / "reports" / "benchmarks" / "path_step.json")

if __name__ == "__main__":
    raise SystemExit(run(WEIGHT_RESET, __doc__.split("\n")[0]))
