"""Plain gradient ascent on the recovered triggers: BAERASER without its clean term and dynamic
penalty (`UnlearnConfig(vanilla=True)`). A control of ours, shown beside BAERASER to make the
catastrophic forgetting its penalty prevents visible; not a defense anyone should deploy."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..train import check_precision
from .base import Defended
from .pool import TriggerPool
from .recovery import RecoveryConfig, recover_triggers
from .unlearning import UnlearnConfig, unlearn_or_keep


@dataclass(frozen=True)
class VanillaConfig:
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    unlearn: UnlearnConfig = field(default_factory=lambda: UnlearnConfig(beta=0.0, vanilla=True))

    def __post_init__(self):
        if not isinstance(self.unlearn, UnlearnConfig) or not self.unlearn.vanilla:
            raise ConfigError("VanillaConfig takes an UnlearnConfig with vanilla=True")


def vanilla(model: nn.Module, holding: Dataset, num_classes: int, cfg: VanillaConfig = VanillaConfig(), device=None,
            progress: bool = True, pool: TriggerPool | None = None, on_epoch=None, trace_every: int | None = None,
            precision: str = "auto", **_unused) -> Defended:
    """Plain ascent on every pooled trigger (recovered here unless `pool` is given); `precision`
    is unlearning's."""
    check_precision(precision)  # an unknown precision fails before recovery, not after it
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    if pool is None:
        res = recover_triggers(model, holding, num_classes, cfg.recovery, device=device, progress=progress)
        pool, seconds["recovery"] = TriggerPool.from_result(res), res.seconds
    spent: dict[str, float] = {}
    repaired, history = unlearn_or_keep(model, holding, pool, cfg.unlearn, device=device, progress=progress,
                                        on_epoch=on_epoch, trace_every=trace_every, seconds=spent,
                                        precision=precision)
    overhead = spent.get("overhead", 0.0)
    seconds.update(total=time.perf_counter() - t0 - overhead, overhead=overhead)
    return Defended("vanilla", repaired, None, [], history, seconds, pool=pool)
