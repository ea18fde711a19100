"""ANP, Adversarial Neuron Pruning (Wu & Wang, "Adversarial Neuron Perturbation Exposes Backdoors
in Deep Models", NeurIPS 2021), a peer in the same harness.

Backdoor neurons are the ones whose small perturbation makes the model collapse. Every BatchNorm
layer is **wrapped** (whatever the architecture): channel c's scale becomes γ_c·(m_c + δ_c) and
its shift β_c·(1 + ξ_c), with a mask m ∈ [0, 1] (starting at 1) and perturbations δ, ξ ∈ [−ε, ε].
Per mini-batch of D_h:

1. δ, ξ start uniform in [−ε, ε] and take one signed ascent step on the CE (lr ε/steps), clipped
   to [−ε, ε] as the paper states (the reference code leaves them unclipped, up to ±2ε).
2. The masks take one SGD step (lr 0.2, momentum 0.9) on α·CE(unperturbed) + (1 − α)·CE(perturbed),
   clipped to [0, 1].

Then a fresh copy of the model has the BatchNorm scale of every channel with m_c < 0.2 set to 0
(the paper's cut). `select="validation"` (not the paper's) instead takes BackdoorBench's sweep of
cuts, 0.05 to 0.90 in steps of 0.05, and keeps the largest whose accuracy on D_h's validation
part stays within `acc_drop` of the unpruned model's (the rule our fine-pruning uses).

Defaults are the paper's (ε 0.4, one perturbation step, α 0.2, mask lr 0.2, prune threshold 0.2,
batch 128; model in train mode while masks are learned, on a copy). **Iterations: 300, not the
paper's 2,000.** One iteration costs about 0.5 s on our 2-core CPU (three passes of a batch), and
every peer gets a budget of a few minutes, like BAERASER and NAD: 300 was fixed from that timing
alone (measured on 50 iterations, never tuned to an attack's result); `iterations` raises it.

Nothing here sees test data, the true trigger or the target label.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checks import rules, validate
from ..errors import ConfigError
from ..train import pick_device, progress_kwargs
from .base import Defended
from .common import check_finite, defender_figures, split_defense

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class ANPConfig:
    eps: float = 0.4  # bound of the neuron perturbations δ, ξ
    steps: int = 1  # ascent steps on the perturbations per batch
    alpha: float = 0.2  # weight of the unperturbed loss in the mask objective
    mask_lr: float = 0.2
    iterations: int = 300  # mask updates (the paper: 2,000; see the module text)
    batch_size: int = 128
    threshold: float = 0.2  # channels whose mask ends below this are pruned
    select: str = "threshold"  # threshold: the cut above (the paper's); validation: see the module text
    acc_drop: float = 0.05  # select="validation": the largest validation-accuracy loss a cut may cause
    val_fraction: float = 0.2
    seed: int = 0

    RULES: ClassVar = rules(eps="[0, 1]", steps="[1, 100]", alpha="[0, 1]", mask_lr="(0, 1000]",
                            iterations="[1, 100000]", batch_size="[1, 65536]", threshold="(0, 1)",
                            acc_drop="(0, 1)", val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)
        if self.select not in ("threshold", "validation"):
            raise ConfigError(f"ANP select must be 'threshold' (the paper's) or 'validation', got {self.select!r}")


class PerturbedBatchNorm(nn.Module):
    """A BatchNorm layer with a channel mask and bounded channel perturbations (the wrapped layer's
    own parameters and running statistics are used unchanged)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bn = bn
        c = bn.num_features
        self.mask = nn.Parameter(torch.ones(c, device=bn.weight.device))
        self.noise_w = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.noise_b = nn.Parameter(torch.zeros(c, device=bn.weight.device))
        self.perturbed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        scale = self.mask + self.noise_w if self.perturbed else self.mask
        shift = 1.0 + self.noise_b if self.perturbed else 1.0
        training = self.training or bn.running_mean is None
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight * scale, bn.bias * shift, training,
                            0.1 if bn.momentum is None else bn.momentum, bn.eps)


def batchnorms(model: nn.Module) -> dict[str, nn.Module]:
    """The model's BatchNorm layers by module name; ConfigError when it has none (or one without affine)."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, BATCHNORMS)}
    if not found:
        raise ConfigError(f"ANP prunes BatchNorm neurons, and {type(model).__name__} has no BatchNorm layer "
                          "(nn.BatchNorm1d/2d/3d); choose another defense for this model")
    if not all(m.affine for m in found.values()):
        raise ConfigError("ANP perturbs BatchNorm scales and shifts; a BatchNorm layer with affine=False has none")
    return found


def wrap_batchnorms(model: nn.Module) -> dict[str, PerturbedBatchNorm]:
    """Replace every BatchNorm layer of `model` (in place) by a `PerturbedBatchNorm`; return them by
    module name."""
    found = batchnorms(model)
    wrapped = {}
    for name, bn in found.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped[name] = PerturbedBatchNorm(bn).train(bn.training)  # the layer's mode, not a new module's
        setattr(parent, child, wrapped[name])
    return wrapped


def learn_masks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ANPConfig, device,
                progress: bool = True) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """ANP's mask optimisation on a copy of `model`: {BatchNorm name: mask values}, and the history."""
    work = copy.deepcopy(model).to(device).train()
    layers = wrap_batchnorms(work)
    for p in work.parameters():
        p.requires_grad_(False)
    masks = [l.mask for l in layers.values()]
    noises = [t for l in layers.values() for t in (l.noise_w, l.noise_b)]
    for t in masks + noises:
        t.requires_grad_(True)
    mask_opt = torch.optim.SGD(masks, lr=cfg.mask_lr, momentum=0.9)
    noise_opt = torch.optim.SGD(noises, lr=cfg.eps / cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)

    def perturb(on: bool):
        for l in layers.values():
            l.perturbed = on

    history, running = [], 0.0
    every = max(1, cfg.iterations // 10)
    for it in tqdm(range(1, cfg.iterations + 1), desc="ANP masks", leave=False, **progress_kwargs(progress)):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        xb, yb = x[idx].to(device), y[idx].to(device)
        if cfg.eps > 0:
            with torch.no_grad():
                for t in noises:
                    t.copy_((torch.rand(t.shape, generator=gen) * 2 - 1) * cfg.eps)
            perturb(True)
            for _ in range(cfg.steps):
                grads = torch.autograd.grad(-F.cross_entropy(work(xb), yb), noises)
                for t, g in zip(noises, grads):
                    t.grad = g.sign()  # a signed step, as the reference code
                noise_opt.step()
                with torch.no_grad():
                    for t in noises:
                        t.clamp_(-cfg.eps, cfg.eps)
        mask_opt.zero_grad(set_to_none=True)
        loss_rob = F.cross_entropy(work(xb), yb) if cfg.eps > 0 else torch.zeros((), device=device)
        perturb(False)
        loss = cfg.alpha * F.cross_entropy(work(xb), yb) + (1 - cfg.alpha) * loss_rob
        check_finite(loss, f"ANP iteration {it}")
        loss.backward()
        mask_opt.step()
        with torch.no_grad():
            for m in masks:
                m.clamp_(0.0, 1.0)
        running += loss.item()
        if it % every == 0 or it == cfg.iterations:
            history.append({"epoch": it, "loss": running / (it - (history[-1]["epoch"] if history else 0))})
            running = 0.0
    return {name: l.mask.detach().cpu() for name, l in layers.items()}, history


def prune_by_masks(model: nn.Module, masks: dict[str, torch.Tensor], threshold: float) -> tuple[nn.Module, int]:
    """A copy of `model` with the BatchNorm scale of every channel whose mask is below `threshold` set to 0."""
    pruned, count = copy.deepcopy(model), 0
    for name, m in masks.items():
        bn = pruned.get_submodule(name)
        cut = (m < threshold).to(bn.weight.device)
        with torch.no_grad():
            bn.weight[cut] = 0.0
        count += int(cut.sum())
    return pruned, count


def validation_cut(model: nn.Module, masks: dict[str, torch.Tensor], xv: torch.Tensor, yv: torch.Tensor,
                   cfg: ANPConfig, device) -> float:
    """The largest cut of BackdoorBench's sweep (0.05 … 0.90) whose pruned model keeps D_h-validation
    accuracy within `cfg.acc_drop` of the unpruned model's."""
    def acc(m):
        return defender_figures(m.to(device).eval(), None, xv, yv, cfg.seed, device)["val_acc"]

    floor, best = acc(copy.deepcopy(model)) - cfg.acc_drop, cfg.threshold
    for cut in [round(0.05 * i, 2) for i in range(1, 19)]:
        if acc(prune_by_masks(model, masks, cut)[0]) >= floor:
            best = max(best, cut)
    return best


def anp(model: nn.Module, holding: Dataset, num_classes: int, cfg: ANPConfig = ANPConfig(), device=None,
        progress: bool = True, **_unused) -> Defended:
    """An ANP-pruned copy of `model` (see the module text); every model is pruned."""
    t0 = time.perf_counter()
    batchnorms(model)  # the clear error, before any compute
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, num_classes)
    masks, history = learn_masks(model, xtr, ytr, cfg, device, progress)
    cut = cfg.threshold if cfg.select == "threshold" else validation_cut(model, masks, xv, yv, cfg, device)
    pruned, count = prune_by_masks(model, masks, cut)
    pruned = pruned.to(device)
    total = sum(len(m) for m in masks.values())
    history[-1].update({"pruned": count, "neurons": total, "cut": cut,
                        **defender_figures(pruned.eval(), None, xv, yv, cfg.seed, device)})
    return Defended("anp", pruned.eval(), None, [], history, {"total": time.perf_counter() - t0})
