"""Neural Attention Distillation (Li et al., ICLR 2021): fine-tune a teacher on clean data, then
train the suspect model (the student) on clean data while matching the teacher's attention maps
at the residual stages.

Rule for "the residual stages": the model's direct children named `layer1`, `layer2`, … (the
torchvision / CIFAR ResNet convention); the last `stages` of them are distilled. Attention of a
feature map F (N, C, H, W) is A = mean_c |F_c|^2, flattened and L2-normalised.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..checks import rules, validate
from ..errors import ConfigError
from ..train import pick_device
from .common import defender_figures, split_defense
from .finetune import FinetuneConfig, train_on_clean


@dataclass(frozen=True)
class NADConfig:
    beta: float = 5000.0  # weight of the attention loss (NAD's CIFAR setting)
    stages: int = 3  # distil the last this-many residual stages
    teacher: FinetuneConfig = FinetuneConfig(epochs=5)
    student: FinetuneConfig = FinetuneConfig()
    val_fraction: float = 0.2
    seed: int = 0

    RULES: ClassVar = rules(beta="[0, 1e9]", stages="[1, 100]", val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)


def residual_stages(model: nn.Module) -> list[nn.Module]:
    stages = [(int(m.group(1)), mod) for name, mod in model.named_children() if (m := re.fullmatch(r"layer(\d+)", name))]
    if not stages:
        raise ConfigError(f"{type(model).__name__} has no children named layer1, layer2, …: NAD needs the "
                          "residual stages whose attention it distils")
    return [mod for _, mod in sorted(stages, key=lambda t: t[0])]


def attention(fm: torch.Tensor) -> torch.Tensor:
    return F.normalize(fm.pow(2).mean(1).flatten(1), dim=1)


class _Taps:
    """Forward hooks that keep the outputs of some modules."""

    def __init__(self, modules):
        self.out = []
        self.handles = [m.register_forward_hook(lambda m, i, o: self.out.append(o)) for m in modules]

    def take(self):
        out, self.out = self.out, []
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def nad(model: nn.Module, holding: Dataset, cfg: NADConfig = NADConfig(), device=None, progress: bool = True,
        teacher: nn.Module | None = None) -> tuple[nn.Module, list[dict]]:
    """A NAD-repaired copy of `model`. `teacher` (a model fine-tuned on the same D_h) may be passed
    in to save its training; otherwise it is fine-tuned here."""
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, model=model)
    if teacher is None:
        teacher = copy.deepcopy(model).to(device)
        train_on_clean(teacher, xtr, ytr, cfg.teacher, device, desc="NAD teacher", progress=progress)
    teacher = teacher.to(device).eval()
    student = copy.deepcopy(model).to(device)
    t_taps = _Taps(residual_stages(teacher)[-cfg.stages:])
    s_taps = _Taps(residual_stages(student)[-cfg.stages:])

    def attention_loss(m: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        s_maps = s_taps.take()[-cfg.stages:]  # the student's forward for the CE term just ran
        with torch.no_grad():
            t_taps.take()
            teacher(xb)
            t_maps = t_taps.take()
        return cfg.beta * sum(F.mse_loss(attention(s), attention(t)) for s, t in zip(s_maps, t_maps))

    try:
        rows = train_on_clean(student, xtr, ytr, cfg.student, device, extra_loss=attention_loss, desc="NAD",
                              progress=progress)
    finally:
        t_taps.remove()
        s_taps.remove()
    rows[-1].update(defender_figures(student.eval(), None, xv, yv, cfg.seed, device))
    return student.eval(), rows
