"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in
Neural Networks", IEEE S&P 2019), a peer in the same harness.

1. **Reverse engineering**: for every label k, the smallest mask m_k and pattern p_k with
   (1 − m_k)⊙x + m_k⊙p_k → k, minimising CE + λ_k·|m_k|₁ with the paper's adaptive cost (λ starts
   at 1e-3; ×1.5 while the attack succeeds, ÷1.5^1.5 while it does not; success = 99%; Adam lr
   0.1, betas (0.5, 0.9)). This is the mask search BAERASER's recovery also uses
   (`mask_search`), run with NC's own settings; it runs `recovery.mask_steps` steps (200), far
   fewer than the paper's epochs over the data, so it fits a CPU budget. Three traits of that
   shared search differ from the paper's code: λ multiplies the mask's mean (|m|₁ / (H·W), so
   λ reads the same on any image size), the cost adapts after every step instead of after a
   patience of epochs, and at half-way the labels with the larger half of the masks stop
   (successive halving; a backdoor's target has the smallest).
2. **Detection**: the anomaly index of the masks' L1 norms (MAD, consistency constant 1.4826);
   labels below the median with index > 2 are flagged (the paper's cut). None: the model is judged
   clean and returned unchanged. `scale="log"` (not the paper's) takes the index of the norms'
   logarithms, so that norms compare by ratios, as BAERASER's own detector does.
3. **Mitigation by unlearning**: fine-tune on D_h where 20% of the images carry a flagged label's
   reversed trigger and keep their true label (the paper's unlearning recipe), with fine-tuning's
   optimiser settings (`FinetuneConfig`).

Nothing here sees test data, the true trigger or the target label.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checks import rules, validate
from ..errors import ConfigError
from ..train import pick_device
from ..triggers import stamp_mask
from .base import Defended
from .common import defender_figures, split_defense
from .detection import anomaly_index
from .finetune import FinetuneConfig, train_on_clean
from .recovery import RecoveryConfig, reverse_masks

NC_SEARCH = RecoveryConfig(mask_cost=1e-3, cost_up=1.5, mask_asr=0.99, mask_lr=0.1)  # the paper's schedule


@dataclass(frozen=True)
class NCConfig:
    search: RecoveryConfig = field(default_factory=lambda: NC_SEARCH)
    threshold: float = 2.0  # anomaly index above which a label is flagged (the paper's)
    scale: str = "raw"  # raw: the MAD of the L1 norms (the paper's); log: of their logarithms
    stamp_fraction: float = 0.2  # share of D_h stamped with a reversed trigger, true labels kept
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    RULES: ClassVar = rules(threshold="(0, 100]", stamp_fraction="(0, 1)")

    def __post_init__(self):
        if not isinstance(self.search, RecoveryConfig) or not isinstance(self.finetune, FinetuneConfig):
            raise ConfigError("NCConfig takes a RecoveryConfig (search) and a FinetuneConfig (finetune)")
        validate(self)
        if self.scale not in ("raw", "log"):
            raise ConfigError(f"scale must be 'raw' (the paper's) or 'log', got {self.scale!r}")


def nc_flagged(rows: list[dict], threshold: float, scale: str = "raw") -> list[int]:
    """Labels whose mask L1 norm lies below the median with anomaly index > threshold, most anomalous first."""
    sizes = [r["mask_size"] for r in rows]
    index = anomaly_index([math.log(max(v, 1e-6)) for v in sizes] if scale == "log" else sizes)
    for r, a in zip(rows, index):
        r["anomaly_index"] = a
    return [r["label"] for r, a in sorted(zip(rows, index), key=lambda p: -p[1]) if a > threshold]


def stamped_share(x: torch.Tensor, triggers: list[tuple[torch.Tensor, torch.Tensor]], fraction: float,
                  gen: torch.Generator) -> torch.Tensor:
    """A copy of `x` where `fraction` of the images carry one of `triggers` (mask, pattern), at random."""
    out = x.clone()
    chosen = torch.randperm(len(x), generator=gen)[:round(fraction * len(x))]
    which = torch.randint(0, len(triggers), (len(chosen),), generator=gen)
    for j, (mask, pattern) in enumerate(triggers):
        sel = chosen[which == j]
        out[sel] = stamp_mask(x[sel], mask, pattern)
    return out


def nc(model: nn.Module, holding: Dataset, num_classes: int, cfg: NCConfig = NCConfig(), device=None,
       progress: bool = True, **_unused) -> Defended:
    """Reverse-engineer every label's trigger, flag the outliers, unlearn theirs (see the module text)."""
    t0 = time.perf_counter()
    device = pick_device() if device is None else torch.device(device)
    rows = reverse_masks(model, holding, num_classes, None, cfg.search, device, progress)
    flagged = nc_flagged(rows, cfg.threshold, cfg.scale)
    seconds = {"reverse": time.perf_counter() - t0}
    history = [{k: v for k, v in r.items() if k not in ("mask", "pattern")} for r in rows]
    if not flagged:
        seconds["total"] = time.perf_counter() - t0
        return Defended("nc", copy.deepcopy(model).eval(), False, [], history, seconds)
    xtr, ytr, xv, yv = split_defense(holding, cfg.finetune.val_fraction, cfg.finetune.seed, num_classes)
    by_label = {r["label"]: r for r in rows}
    triggers = [(by_label[k]["mask"], by_label[k]["pattern"]) for k in flagged]
    xs = stamped_share(xtr, triggers, cfg.stamp_fraction, torch.Generator().manual_seed(cfg.finetune.seed + 17))
    student = copy.deepcopy(model).to(device)
    t1 = time.perf_counter()
    rows_ft = train_on_clean(student, xs, ytr, cfg.finetune, device, desc="NC unlearning", progress=progress)
    rows_ft[-1].update(defender_figures(student.eval(), None, xv, yv, cfg.finetune.seed, device))
    seconds.update(unlearn=time.perf_counter() - t1, total=time.perf_counter() - t0)
    return Defended("nc", student.eval(), True, flagged, history + rows_ft, seconds)
