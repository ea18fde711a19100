"""Image passes through a network: a measure of compute that does not move with the machine.

Seconds depend on the machine and on what else runs on it (the same unlearning took 0.94 to 2.33
times as long from one session to the next here). Counting the images that go through the network
does not. Each image's forward is weighed by what its backward will cost, in forward passes (the
usual estimate: a backward costs about twice a forward when it computes weight gradients, about
once when it only carries gradients back to the input):
* `weights`: gradients enabled and the network's weights trainable: 3 (training, unlearning);
* `inputs`: gradients enabled, weights frozen, the input needing a gradient: 2 (trigger search);
* `forward`: no graph at all: 1 (evaluation).
A forward taken with gradients that is never back-propagated still counts as such: the count errs high.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

COST = {"weights": 3, "inputs": 2, "forward": 1}  # forward passes per image, by kind


@contextlib.contextmanager
def counting_passes(network: type[nn.Module]) -> Iterator[dict[str, int]]:
    """Inside the block, count the images of every forward call of a module of exactly the class
    `network` (the model and every copy a defense makes of it; not its own submodules, nor the
    small helper networks a defense trains beside it), by kind (`COST`). Yields the counts,
    filled as the block runs."""
    if not (isinstance(network, type) and issubclass(network, nn.Module)):
        raise TypeError(f"counting_passes takes an nn.Module class, got {network!r}")
    counts = dict.fromkeys(COST, 0)

    def hook(module, args, output):
        if type(module) is not network or not args or not torch.is_tensor(args[0]) or args[0].dim() == 0:
            return
        x = args[0]
        if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
            kind = "weights"
        elif torch.is_grad_enabled() and x.requires_grad:
            kind = "inputs"
        else:
            kind = "forward"
        counts[kind] += int(x.shape[0])

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()


def work(counts: dict[str, int]) -> int:
    """The counted passes in forward-pass units."""
    return sum(COST[k] * n for k, n in counts.items())


def training_work(n_train: int, epochs: int) -> int:
    """Plain training's work: every training image forward and backward once per epoch. The
    victim's evaluations between epochs, and any trigger optimisation of the attack, are left
    out, so a ratio to this errs high."""
    if n_train < 1 or epochs < 1:
        raise ValueError(f"training work needs n_train ≥ 1 and epochs ≥ 1, got {n_train} and {epochs}")
    return COST["weights"] * n_train * epochs
