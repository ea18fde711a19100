"""Fine-pruning (Liu et al., RAID 2018): prune the last convolution's channels that clean data
leaves dormant (backdoor neurons tend to hide there), then fine-tune.

Rule for "the last convolution": the last `nn.Conv2d` in `model.modules()` order; if the module
right after it is a `BatchNorm2d` of the same width, the pruned channels are zeroed there too (so
they output exactly 0). Channels are pruned in order of increasing mean activation on D_h while
the defender's validation accuracy stays within `acc_drop` of the start.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checks import rules, validate
from ..errors import ConfigError
from ..train import pick_device
from .common import defender_figures, split_defense
from .finetune import FinetuneConfig, train_on_clean


@dataclass(frozen=True)
class FinePruneConfig:
    acc_drop: float = 0.05  # largest validation-accuracy loss the pruning may cause
    step: float = 0.05  # share of channels added per pruning step
    finetune: FinetuneConfig = FinetuneConfig()
    val_fraction: float = 0.2
    seed: int = 0

    RULES: ClassVar = rules(acc_drop="(0, 1)", step="(0, 1]", val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)


def last_conv(model: nn.Module) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """The last Conv2d in module order and the BatchNorm2d right after it (if any)."""
    mods = list(model.modules())
    idx = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    if not idx:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d layer: fine-pruning needs a last "
                          "convolution whose channels it can prune")
    conv = mods[idx[-1]]
    nxt = mods[idx[-1] + 1] if idx[-1] + 1 < len(mods) else None
    bn = nxt if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == conv.out_channels else None
    return conv, bn


@torch.no_grad()
def _channel_activation(model, layer, x, device) -> torch.Tensor:
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o.relu().mean(dim=(0, 2, 3))))
    try:
        for xb in x.split(256):
            model(xb.to(device))
    finally:
        handle.remove()
    return torch.stack(acts).mean(0)


@torch.no_grad()
def _apply_mask(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, pruned: torch.Tensor) -> None:
    conv.weight[pruned] = 0
    if conv.bias is not None:
        conv.bias[pruned] = 0
    if bn is not None:
        bn.weight[pruned] = 0
        bn.bias[pruned] = 0


def fineprune(model: nn.Module, holding: Dataset, cfg: FinePruneConfig = FinePruneConfig(), device=None,
              progress: bool = True) -> tuple[nn.Module, list[dict]]:
    """A pruned and fine-tuned copy of `model`, and a history of the pruning steps."""
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, model=model)
    student = copy.deepcopy(model).to(device).eval()
    conv, bn = last_conv(student)
    order = _channel_activation(student, bn or conv, xtr, device).argsort()  # most dormant first
    base = defender_figures(student, None, xv, yv, cfg.seed, device)["val_acc"]
    saved = copy.deepcopy(student.state_dict())
    n, rows, kept_k = conv.out_channels, [], 0
    step = max(1, round(cfg.step * n))
    for k in range(step, n, step):
        student.load_state_dict(saved)
        _apply_mask(conv, bn, order[:k])
        acc = defender_figures(student, None, xv, yv, cfg.seed, device)["val_acc"]
        rows.append({"pruned": k, "pruned_share": k / n, "val_acc": acc})
        if acc < base - cfg.acc_drop:
            break
        kept_k = k
    student.load_state_dict(saved)
    pruned = order[:kept_k]
    _apply_mask(conv, bn, pruned)
    train_on_clean(student, xtr, ytr, cfg.finetune, device, after_step=lambda m: _apply_mask(conv, bn, pruned),
                   desc="fine-pruning", progress=progress)
    final = defender_figures(student.eval(), None, xv, yv, cfg.seed, device)
    rows.append({"pruned": kept_k, "pruned_share": kept_k / n, "final": True, **final})
    return student.eval(), rows
