"""What every repairing defense shares: the defender's own train/validation split of D_h,
triggered copies drawn from the recovered pool, and defender-side validation figures.

Nothing here receives test data, the true trigger or the target label: a defense sees a model,
D_h and (for unlearning) the pool recovery produced.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import as_tensors, check_images, num_outputs, split_parts
from ..errors import ConfigError
from ..train import predict
from .pool import TriggerPool


def split_defense(holding: Dataset, val_fraction: float, seed: int, num_classes: int | None = None,
                  model: nn.Module | None = None):
    """D_h → (defense-train x, y, defense-validation x, y), seeded and disjoint, once D_h passed
    the data door (float pixels in [0, 1], labels in [0, num_classes)); without `num_classes`,
    `model`'s number of outputs stands in for it."""
    x, y = as_tensors(holding)
    check_images(x, y, num_classes, "holding data")
    if num_classes is None and model is not None:
        check_images(x, y, num_outputs(model, x[:1], "holding data"), "holding data (against the model's outputs)")
    return split_parts(x, y, val_fraction, seed + 101)



def triggered_copy(pool: TriggerPool, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                   correct_labels: bool = False):
    """Stamp a batch with triggers sampled from the pool: each image gets a random pool entry,
    images whose true label is that entry's label are left out. Returns (x_triggered, pool_labels),
    or each kept image's own label with `correct_labels` (the same images and patches)."""
    if len(pool) == 0:
        raise ConfigError("the trigger pool is empty: recovery kept no label, so there is nothing to unlearn")
    entry = torch.randint(0, len(pool), (len(x),), generator=gen)
    labels = torch.tensor(pool.labels)[entry]
    keep = labels != y
    xs, entry, labels = x[keep], entry[keep], labels[keep]
    return stamp_entries(pool, xs, entry, gen), (y[keep] if correct_labels else labels)


def stamp_entries(pool: TriggerPool, x: torch.Tensor, entry: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A copy of `x` with image k stamped by pool entry `entry[k]`, entry by entry (so the
    generator is drawn from in the same order whoever calls)."""
    out = x.clone()
    for i in range(len(pool)):
        sel = torch.nonzero(entry == i).flatten()
        if len(sel):
            out[sel] = pool.stamp(i, x[sel], gen)
    return out


def defender_figures(model: nn.Module, pool: TriggerPool | None, xv: torch.Tensor, yv: torch.Tensor,
                     seed: int, device=None) -> dict:
    """Validation accuracy on the defender's held-out part of D_h, and (with a pool) the recovered
    triggers' ASR there: the only figures a defense may steer by."""
    out = {"val_acc": (predict(model, xv, device=device) == yv).float().mean().item()}
    if pool is not None and len(pool):
        xt, lt = triggered_copy(pool, xv, yv, torch.Generator().manual_seed(seed + 7))
        out["val_recovered_asr"] = (predict(model, xt, device=device) == lt).float().mean().item()
    return out


def check_finite(loss: torch.Tensor, what: str) -> None:
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"{what}: the loss became {loss.item() if loss.numel() == 1 else 'non-finite'}; "
                                 f"nothing was saved (lower the learning rate or α)")
