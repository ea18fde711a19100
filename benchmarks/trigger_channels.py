"""Zeroing the channels the recovered triggers lean on before unlearning, measured on development
victims outside the families grid (issue #18).

    .venv/bin/python benchmarks/trigger_channels.py develop [--only dev_wanet_t3 ...]   # the study: writes the choice
    .venv/bin/python benchmarks/trigger_channels.py families [--only wanet ...]         # the choice on every families row

WaNet and all-to-all BadNets re-learned their backdoor when re-tuned after every default so far:
unlearning the recovered triggers erased the ASR but left whatever detects the true trigger in
place. `UnlearnConfig.channel_prune = r` stamps the defender's clean images with the recovered
triggers, scores every convolution's output channels by how far the stamps move them (relative to
their clean size), and zeroes the filters of the top fraction r in each convolution before the
first step. Unlearning then runs as before; the zeroed filters regrow only what the clean task and
the unlearning ask of them.

Fixed before any candidate ran (`baeraser_lib/lab/prune_study.py`):
* **Development victims**: the path-step study's six (no families row's trigger, place, target or seed).
* **Candidates**: the default (r = 0) and r = 0.05, 0.1, 0.2, all else the default.
* **The rule**: the path-step study's: the most (victim, bar) pairs met over #18's four bars; the
  default wins ties, then the smaller r. A change becomes the default only if the rule picks it
  and it passes `schedule_study.confirmed` on the families rows.

The true trigger is read for scoring only, after unlearning has run. Writes
reports/benchmarks/trigger_channels.json (merged per victim, so runs resume).
"""

from __future__ import annotations

from baeraser_lib.lab import prune_study
from baeraser_lib.lab.reports import REPO
from path_step import Study, run  # benchmarks/ is on sys.path as a script

TRIGGER_CHANNELS = Study(REPO / "reports" / "benchmarks" / "trigger_channels.json", prune_study.DEV_VICTIMS,
                         prune_study.CANDIDATES, prune_study.choose,
                         REPO / "reports" / "benchmarks" / "path_step.json")

if __name__ == "__main__":
    raise SystemExit(run(TRIGGER_CHANNELS, __doc__.split("\n")[0]))
