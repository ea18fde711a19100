"""Clean accuracy, attack success rate, robust accuracy and DER, as the paper and the field use them.

ASR and robust accuracy are measured on the images whose true label is not the target, stamped
with the TRUE trigger: evaluation-only code, never called by a defense.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from .data import as_tensors
from .train import predict
from .triggers import Trigger


def clean_accuracy(model: nn.Module, data: Dataset, device=None) -> float:
    x, y = as_tensors(data)
    return (predict(model, x, device=device) == y).float().mean().item()


def backdoor_metrics(model: nn.Module, data: Dataset, trigger: Trigger, target: int, seed: int = 0,
                     device=None) -> dict[str, float]:
    """ASR and robust accuracy on non-target images of `data` stamped with `trigger`."""
    x, y = as_tensors(data)
    keep = y != target
    if not keep.any():
        raise ValueError("no evaluation image has a label other than the target")
    g = torch.Generator().manual_seed(seed)  # random-position triggers get reproducible places
    pred = predict(model, trigger.apply(x[keep], generator=g), device=device)
    return {"asr": (pred == target).float().mean().item(),
            "robust_acc": (pred == y[keep]).float().mean().item()}


def evaluate(model: nn.Module, data: Dataset, trigger: Trigger | None = None, target: int | None = None,
             device=None) -> dict[str, float]:
    """clean_acc, plus asr and robust_acc when a trigger and target are given."""
    out = {"clean_acc": clean_accuracy(model, data, device)}
    if trigger is not None and target is not None:
        out.update(backdoor_metrics(model, data, trigger, target, device=device))
    return out


def der(acc_before: float, acc_after: float, asr_before: float, asr_after: float) -> float:
    """Defense effectiveness rating: (max(0, ΔASR) − max(0, ΔAcc) + 1) / 2, Δ = before − after."""
    return (max(0.0, asr_before - asr_after) - max(0.0, acc_before - acc_after) + 1.0) / 2.0
