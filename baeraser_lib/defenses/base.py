"""What every defense is and returns.

A defense is a function `run(model, holding, num_classes, cfg, device=None, progress=True, **given)
-> Defended`. It sees the suspect model, the clean holding set D_h and the number of classes, and
nothing else: no test data, no true trigger, no target label. `given` carries only what another
defense already produced from the same inputs (a trigger pool recovered from the same D_h, or NAD's
fine-tuned teacher), so a harness need not compute it twice. `DefenseSpec` registers the
function with its config type, its label in tables, and what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

ROLES = ("ours", "ablation", "baseline", "peer")  # peer: a strong method of today, beside the paper's baselines


@dataclass
class Defended:
    """One defense's outcome: the model to use and the evidence behind it.

    `backdoored` is the verdict of a defense that detects (BAERASER: a label's mask size is an
    outlier); None for one that repairs every model (fine-tuning, fine-pruning, NAD). `seconds`
    holds `total` (the defense's own time) and its parts; time spent in plotting callbacks is
    `overhead`, left out of `total`. `history` holds figures only, never timings."""

    method: str
    model: nn.Module  # the repaired model, or an unchanged copy of a model judged clean
    backdoored: bool | None
    flagged: list[int]  # labels judged to be backdoor targets ([] when the method does not detect)
    history: list[dict]  # per-epoch (or per-step) figures of the repair
    seconds: dict[str, float] = field(default_factory=dict)
    pool: object = None  # TriggerPool: the recovered triggers that were unlearned (pool-based defenses)
    recovery: object = None  # RecoveryResult: per-label scores and generators (when recovery ran here)
    growth: dict[int, float] = field(default_factory=dict)  # BAERASER's confirm step: mask growth per label

    def summary(self) -> dict:
        """JSON-ready: the verdict, flagged labels and seconds."""
        return {"method": self.method, "backdoored": self.backdoored, "flagged": list(self.flagged),
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "pool_labels": list(self.pool.labels) if self.pool is not None else None}


@dataclass(frozen=True)
class DefenseSpec:
    run: Callable[..., Defended]
    config: type  # its frozen config dataclass; `config()` gives the defaults
    label: str  # as tables and plots name it
    needs: tuple[str, ...]  # what it takes beyond the model: "holding" (D_h); "pool" (recovered triggers)
    role: str  # ours | ablation (a control of ours) | baseline (the paper's) | peer (today's strongest)
    min_holding: int = 40  # the fewest holding images it can split into train and validation parts
    bf16: bool = False  # it takes `precision=` (bf16 autocast steps); the others always run fp32
    summary: str = ""
    cite: str = ""

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
