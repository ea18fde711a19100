"""Clean accuracy, attack success rate, robust accuracy and DER, as the paper and the field use them.

ASR and robust accuracy are measured with the TRUE trigger on the images the attack's own
`TargetRule` counts (all-to-one: true label not the target; all-to-all: every image), each
compared with the label the rule gives it: evaluation-only code, never called by a defense.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from .data import as_tensors, check_images, num_outputs
from .targets import TargetRule, as_rule
from .train import predict


def clean_accuracy(model: nn.Module, data: Dataset, device=None) -> float:
    x, y = as_tensors(data)
    return (predict(model, x, device=device) == y).float().mean().item()


def backdoor_metrics(model: nn.Module, data: Dataset, trigger, target: int | TargetRule, seed: int = 0,
                     device=None) -> dict[str, float]:
    """ASR and robust accuracy on the images of `data` that `target` (a rule, or an all-to-one
    target label) counts, with `trigger` applied (any trigger kind: anything with `apply`)."""
    rule = as_rule(target)
    x, y = as_tensors(data)
    keep = rule.counted(y)
    if not keep.any():
        raise ValueError("no evaluation image has a label other than the target")
    g = torch.Generator().manual_seed(seed)  # random-position triggers get reproducible places
    pred = predict(model, trigger.apply(x[keep], generator=g), device=device)
    return {"asr": (pred == rule.target_of(y[keep])).float().mean().item(),
            "robust_acc": (pred == y[keep]).float().mean().item()}


def perturbation_size(trigger, x: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """How visible a trigger is: the L2 and L∞ norms of x' − x per image (pixel scale [0, 1]),
    their mean over `x`, and the largest L∞."""
    g = torch.Generator().manual_seed(seed)
    diff = (trigger.apply(x, generator=g) - x).flatten(1)
    l2, linf = diff.norm(dim=1), diff.abs().amax(dim=1)
    return {"l2_mean": l2.mean().item(), "linf_mean": linf.mean().item(), "linf_max": linf.max().item()}


def evaluate(model: nn.Module, data: Dataset, trigger=None, target: int | TargetRule | None = None,
             device=None) -> dict[str, float]:
    """clean_acc, plus asr and robust_acc when a trigger and target (label or rule) are given.
    The data must pass the data door against the model's own number of outputs."""
    x, y = as_tensors(data)
    check_images(x, y, None, "evaluation data")
    check_images(x, y, num_outputs(model, x[:1], "evaluation data"), "evaluation data (against the model's outputs)")
    out = {"clean_acc": clean_accuracy(model, data, device)}
    if trigger is not None and target is not None:
        out.update(backdoor_metrics(model, data, trigger, target, device=device))
    return out


def der(acc_before: float, acc_after: float, asr_before: float, asr_after: float) -> float:
    """Defense effectiveness rating: (max(0, ΔASR) − max(0, ΔAcc) + 1) / 2, Δ = before − after."""
    return (max(0.0, asr_before - asr_after) - max(0.0, acc_before - acc_after) + 1.0) / 2.0
