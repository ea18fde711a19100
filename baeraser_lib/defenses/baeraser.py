"""BAERASER, the whole defense: detect, recover, unlearn, and leave clean models alone.

    result = baeraser(model, holding, num_classes)      # or baeraser_lib.defend(..., method="baeraser")

1. `recover_triggers`: every label's smallest working mask; labels whose mask size is an outlier
   (anomaly index ≥ 2) are flagged; each flagged label gets a trigger generator (MSA's staircase),
   and the pool keeps those that reach τ. No label flagged: the model is judged clean and returned
   as it came (a copy).
2. `unlearn`: BAERASER's bounded ascent on the pool, held by clean D_h (since issue #18 an anchor on
   the suspect's clean outputs and feature invariance; the paper's dynamic penalty is an option).
3. Optional (`confirm=True`, off by default; see `detection`): the mask search runs again on the
   unlearned model; only pooled labels whose smallest mask grew by `confirm_ratio` stay flagged,
   and unlearning reruns on their triggers alone.

Nothing here sees test data, the true trigger or the target label.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn
from torch.utils.data import Dataset

from ..checks import rules, validate
from ..errors import ConfigError
from ..train import check_precision
from .base import Defended
from .detection import DEFAULT_CONFIRM_RATIO, confirmed, mask_growth
from .pool import TriggerPool
from .recovery import RecoveryConfig, mask_sizes, recover_triggers
from .unlearning import UnlearnConfig, unlearn


@dataclass(frozen=True)
class BaeraserConfig:
    """Recovery, unlearning and the confirmation step: one set of defaults for every model."""

    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    confirm: bool = False  # True: keep only flagged labels whose mask grows ≥ confirm_ratio× when unlearned
    confirm_ratio: float = DEFAULT_CONFIRM_RATIO

    RULES: ClassVar = rules(confirm_ratio="(1, 100]")

    def __post_init__(self):
        if not isinstance(self.recovery, RecoveryConfig) or not isinstance(self.unlearn, UnlearnConfig):
            raise ConfigError("BaeraserConfig takes a RecoveryConfig and an UnlearnConfig")
        validate(self)


def baeraser(model: nn.Module, holding: Dataset, num_classes: int, cfg: BaeraserConfig = BaeraserConfig(),
             device=None, progress: bool = True, pool: TriggerPool | None = None,
             per_label: list[dict] | None = None, flagged: list[int] | None = None, on_epoch=None,
             trace_every: int | None = None, precision: str = "auto") -> Defended:
    """Recover, unlearn and confirm (see the module text); `model` itself is never changed. A pool
    recovered before from the same D_h (with its `per_label` rows and `flagged` labels) skips
    recovery; `on_epoch`/`trace_every` go to unlearning (plotting only). `precision` is
    unlearning's (`train.autocast`: bf16 steps on CUDA under `auto`); recovery stays fp32."""
    check_precision(precision)  # an unknown precision fails before recovery, not after it
    if pool is not None:
        return repair(model, holding, num_classes, pool, per_label or [], cfg, device, progress, on_epoch=on_epoch,
                      trace_every=trace_every, flagged=flagged, precision=precision)
    t0 = time.perf_counter()
    res = recover_triggers(model, holding, num_classes, cfg.recovery, device=device, progress=progress)
    out = repair(model, holding, num_classes, TriggerPool.from_result(res), res.per_label, cfg, device, progress,
                 on_epoch=on_epoch, trace_every=trace_every, flagged=res.flagged, precision=precision)
    out.recovery = res
    overhead = out.seconds.get("overhead", 0.0)
    out.seconds = {"recovery": res.seconds, **out.seconds, "total": time.perf_counter() - t0 - overhead}
    return out


def repair(model: nn.Module, holding: Dataset, num_classes: int, pool: TriggerPool, per_label: list[dict],
           cfg: BaeraserConfig = BaeraserConfig(), device=None, progress: bool = True, on_epoch=None,
           trace_every: int | None = None, flagged: list[int] | None = None, precision: str = "auto") -> Defended:
    """Steps 2 and 3 on a pool recovery already made (e.g. a cached pool artifact and its
    `per_label` rows). `flagged` is recovery's verdict (default: the pool's labels); a flagged
    label whose generator missed τ has no trigger to unlearn, but still counts as flagged. An
    empty pool leaves the model alone. `on_epoch`/`trace_every` go to unlearning (plotting
    only); their time is reported as `seconds["overhead"]`, apart from the defense's own."""
    check_precision(precision)  # refused even where an empty pool leaves nothing to unlearn
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    flagged = list(pool.labels) if flagged is None else list(flagged)
    untested = [k for k in flagged if k not in pool.labels]  # flagged, but no trigger reached τ
    if len(pool) == 0:
        return _clean(model, pool, {}, seconds, t0, verdict=untested)
    kw = dict(device=device, progress=progress, on_epoch=on_epoch, trace_every=trace_every, precision=precision)
    spent: dict[str, float] = {}
    repaired, history = unlearn(model, holding, pool, cfg.unlearn, seconds=spent, **kw)
    overhead = spent.get("overhead", 0.0)
    seconds["unlearn"] = time.perf_counter() - t0 - overhead
    if not cfg.confirm:
        return _done(repaired, flagged, pool, history, {}, seconds, t0, overhead)
    t2 = time.perf_counter()
    before = _sizes_before(model, holding, num_classes, pool.labels, per_label, cfg.recovery, device)
    after = mask_sizes(repaired, holding, num_classes, pool.labels, cfg.recovery, device)
    growth = mask_growth(before, after)
    kept = confirmed(before, after, cfg.confirm_ratio)
    seconds["confirm"] = time.perf_counter() - t2
    if not kept:
        return _clean(model, pool.subset([]), growth, seconds, t0, overhead, verdict=untested)
    flagged = kept + untested
    if set(kept) != set(pool.labels):  # unlearn the confirmed triggers only, from the original model
        pool = pool.subset(kept)
        t3 = time.perf_counter()
        spent = {}
        repaired, history = unlearn(model, holding, pool, cfg.unlearn, seconds=spent, **kw)
        more = spent.get("overhead", 0.0)
        overhead += more
        seconds["unlearn"] += time.perf_counter() - t3 - more
    return _done(repaired, flagged, pool, history, growth, seconds, t0, overhead)


def _sizes_before(model, holding, num_classes, labels, per_label: list[dict], cfg: RecoveryConfig, device):
    """Mask sizes on the original model: recovery's own (mask form), or a mask search (patch form)."""
    sizes = {r["label"]: r.get("mask_size") for r in per_label if r["label"] in labels}
    if all(v is not None for v in sizes.values()):
        return sizes
    return mask_sizes(model, holding, num_classes, labels, cfg, device)


def _done(repaired, flagged, pool, history, growth, seconds, t0, overhead) -> Defended:
    seconds.update(total=time.perf_counter() - t0 - overhead, overhead=overhead)
    return Defended("baeraser", repaired, True, flagged, history, seconds, pool=pool, growth=growth)


def _clean(model, pool, growth, seconds, t0, overhead: float = 0.0, verdict: list[int] = ()) -> Defended:
    """Nothing unlearned: an unchanged copy. `verdict` holds flagged labels that had no trigger
    to unlearn; the model is judged backdoored when there are any."""
    seconds.update(total=time.perf_counter() - t0 - overhead, overhead=overhead)
    history = [{"epoch": 0, "chosen": True, "empty_pool": True}]
    return Defended("baeraser", copy.deepcopy(model).eval(), bool(verdict), list(verdict), history, seconds,
                    pool=pool, growth=growth)
