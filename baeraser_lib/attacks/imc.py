"""IMC, input–model co-optimisation (Pang et al., CCS 2020, "A Tale of Evil Twins").

Trigger and model are optimised together. It starts from the TrojanNN trigger; before every
training epoch the trigger's pixels (inside the mask) are optimised to minimise the target-label
loss CE(F(x ⊕ trigger), y_t) on the *current* model, and that epoch trains on the poisoned images
re-stamped with the current trigger. The trigger of the last epoch is the attack's trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from ..checks import rules
from ..data import DatasetInfo, as_tensors
from ..train import TrainConfig, batches, fit, pick_device, progress_kwargs
from ..triggers import Trigger, stamp
from .badnets import poison
from .base import AttackResult, AttackSettings
from .trojannn import TrojanNNOptions, sample_images, to_logits, trojan_trigger



@dataclass(frozen=True)
class IMCOptions(TrojanNNOptions):
    """TrojanNN's options (for the starting trigger) plus the per-epoch trigger optimisation."""

    trigger_steps: int = 20  # Adam steps on the trigger before every epoch
    trigger_lr: float = 0.05  # Adam's learning rate on the trigger's logits

    RULES: ClassVar = rules(trigger_steps="[1, 100000]", trigger_lr="(0, 1000]")  # added to TrojanNN's


def target_loss(model: nn.Module, trigger: Trigger, x: torch.Tensor, target: int, batch_size: int = 512) -> float:
    """Mean CE of stamped `x` towards `target` (the quantity IMC's trigger step minimises)."""
    device = next(model.parameters()).device
    model.eval()
    total = 0.0
    with torch.no_grad():
        for xb, _ in batches(x, x, batch_size):
            logits = model(trigger.apply(xb.to(device)))
            total += F.cross_entropy(logits, torch.full((len(xb),), target, device=device), reduction="sum").item()
    return total / len(x)


def optimise_for_target(model: nn.Module, trigger: Trigger, x: torch.Tensor, target: int, steps: int,
                        lr: float, device: torch.device, progress: bool = True) -> Trigger:
    """`steps` of Adam on the trigger's logits minimising CE(F(stamp(x)), target); model frozen."""
    model = model.to(device).eval()
    x = x.to(device)
    y = torch.full((len(x),), target, device=device)
    logits = to_logits(trigger.pattern.to(device))
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in tqdm(range(steps), desc="imc trigger", leave=False, **progress_kwargs(progress)):
        loss = F.cross_entropy(model(stamp(x, torch.sigmoid(logits), trigger.position)), y)
        (grad,) = torch.autograd.grad(loss, [logits])
        opt.zero_grad(set_to_none=True)
        logits.grad = grad
        opt.step()
    return Trigger(torch.sigmoid(logits).detach().cpu(), trigger.position)


def imc(model: nn.Module, train_set: Dataset, info: DatasetInfo, attack: AttackSettings,
        train: TrainConfig, device=None, epoch_end=None, progress: bool = True,
        precision: str = "auto", layout: str = "auto") -> AttackResult:
    """Co-optimise trigger and `model` (the clean model's weights) epoch by epoch."""
    options = attack.resolved_options()
    device = device or pick_device()
    trigger, details = trojan_trigger(model, train_set, info, attack, options, device, progress)
    details["trojannn_trigger"] = trigger.to_json()
    poisoned, idx = poison(train_set, trigger, attack)  # the same seeded images every epoch
    px, _ = poisoned.tensors
    x_clean, _ = as_tensors(train_set)
    base = x_clean[idx]
    x_opt = sample_images(train_set, options.batch, attack.seed + 3, exclude_label=attack.target_label)
    state = {"trigger": trigger}

    def epoch_start(m: nn.Module, epoch: int):
        before = target_loss(m, state["trigger"], x_opt, attack.target_label)
        state["trigger"] = optimise_for_target(m, state["trigger"], x_opt, attack.target_label,
                                               options.trigger_steps, options.trigger_lr, device, progress)
        after = target_loss(m, state["trigger"], x_opt, attack.target_label)
        px[idx] = state["trigger"].apply(base)
        return poisoned, {"trigger_loss_before": before, "trigger_loss_after": after}

    log = (lambda m, epoch: epoch_end(m, epoch, state["trigger"])) if epoch_end is not None else None
    history = fit(model, poisoned, train, device, epoch_end=log, progress=progress, desc="imc",
                  precision=precision, layout=layout,
                  epoch_start=epoch_start)
    details["trigger_loss"] = [row["trigger_loss_before"] for row in history]
    return AttackResult(trigger=state["trigger"], history=history, poisoned_indices=idx, details=details)
