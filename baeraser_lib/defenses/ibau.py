"""i-BAU (Zeng et al., "Adversarial Unlearning of Backdoors via Implicit Hypergradient", ICLR 2022),
a peer in the same harness.

The backdoor is treated as the worst universal perturbation δ of D_h:

    min_θ max_{‖δ‖₂ ≤ C} H(δ, θ),   H = mean CE(F_θ(x + δ), y)

Each round (1) searches δ by gradient ascent on D_h (SGD lr 10 on −CE of the model's own labels
plus 0.001‖δ‖², one pass, then projected on the L2 ball ‖δ‖ ≤ C = 10), and (2) takes one outer
Adam step per batch on the clean loss where `portion` of the batch carries δ. The outer gradient
is the **implicit hypergradient**: δ*(θ) is the fixed point of the inner gradient map
T(δ, θ) = δ − 0.1 ∇_δ L_in(δ, θ), and dδ*/dθ enters through K fixed-point iterations of the
vector–Jacobian product (v ← vᵀ∂_δT + ∂_δL_out, then ∂_θL_out + vᵀ∂_θT).

Defaults are BackdoorBench's i-BAU config (Adam lr 1e-4, 5 rounds, K = 5, batch 256) and the
authors' code (inner lr 10, fixed-point step 0.1, regulariser 0.001, portion 0.01); the model
stays in eval mode throughout, as there. Two readings of ours: δ is projected on the paper's
ball ‖δ‖ ≤ C with C = 10 (the public scripts carry that line commented out, leaving δ unbounded),
and the fixed-point map uses the current batch (the authors' code always uses the first batch).

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
from ..train import batches, pick_device, progress_kwargs
from .base import Defended
from .common import check_finite, defender_figures, split_defense


@dataclass(frozen=True)
class IBAUConfig:
    lr: float = 1e-4  # Adam, the outer (model) step (BackdoorBench)
    rounds: int = 5  # outer rounds: each searches a fresh δ, then one pass of hypergradient steps
    K: int = 5  # fixed-point iterations of the implicit hypergradient
    batch_size: int = 256
    inner_lr: float = 10.0  # SGD on δ while searching it
    fixed_point_lr: float = 0.1  # step of the inner gradient map whose fixed point δ* is
    radius: float = 10.0  # L2 bound of δ
    reg: float = 1e-3  # weight of ‖δ‖² in the inner loss
    portion: float = 0.01  # share of each outer batch that carries δ (at least one image)
    val_fraction: float = 0.2
    seed: int = 0

    RULES: ClassVar = rules(lr="(0, 1]", rounds="[1, 1000]", K="[1, 100]", batch_size="[1, 65536]",
                            inner_lr="(0, 1e6]", fixed_point_lr="(0, 1e6]", radius="(0, 1e6]", reg="(0, 1e6]",
                            portion="(0, 1]", val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)


def search_perturbation(model: nn.Module, x: torch.Tensor, cfg: IBAUConfig, gen: torch.Generator,
                        device) -> torch.Tensor:
    """The inner max: one pass of SGD on a universal δ (1, C, H, W) that flips the model's own
    predictions, then its projection on the L2 ball of radius `cfg.radius`."""
    delta = torch.zeros(1, *x.shape[1:], device=device, requires_grad=True)
    opt = torch.optim.SGD([delta], lr=cfg.inner_lr)
    for xb, _ in batches(x, x.new_zeros(len(x)), cfg.batch_size, True, gen):
        xb = xb.to(device)
        with torch.no_grad():
            own = model(xb).argmax(1)
        loss = -F.cross_entropy(model(xb + delta), own) + cfg.reg * delta.pow(2).sum()
        delta.grad, = torch.autograd.grad(loss, delta)  # δ's gradient only: the model's is not needed
        opt.step()
    with torch.no_grad():
        return (delta * min(1.0, cfg.radius / max(delta.norm().item(), 1e-12))).detach()


def hypergradient(model: nn.Module, params: list[nn.Parameter], delta: torch.Tensor, xb: torch.Tensor,
                  yb: torch.Tensor, cfg: IBAUConfig, gen: torch.Generator) -> float:
    """Set `p.grad` of every parameter to the implicit hypergradient of the outer loss; return it."""
    delta = delta.detach().requires_grad_(True)
    carry = torch.zeros(len(xb), 1, 1, 1, device=xb.device)
    carry[torch.randperm(len(xb), generator=gen)[:max(1, int(cfg.portion * len(xb)))]] = 1.0
    outer = F.cross_entropy(model(xb + carry * delta), yb)
    check_finite(outer, "i-BAU outer loss")
    g_delta, *g_params = torch.autograd.grad(outer, [delta, *params], allow_unused=True)
    inner = -F.cross_entropy(model(xb + delta), yb) + cfg.reg * delta.pow(2).sum()
    mapped = delta - cfg.fixed_point_lr * torch.autograd.grad(inner, delta, create_graph=True)[0]
    v = torch.zeros_like(delta)
    for _ in range(cfg.K):
        v = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)[0] + g_delta
    g_fp = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    for p, a, b in zip(params, g_fp, g_params):
        parts = [g for g in (a, b) if g is not None]
        p.grad = sum(parts) if parts else None
    return outer.item()


def ibau(model: nn.Module, holding: Dataset, num_classes: int, cfg: IBAUConfig = IBAUConfig(), device=None,
         progress: bool = True, **_unused) -> Defended:
    """An i-BAU-repaired copy of `model` (see the module text); every model is repaired."""
    t0 = time.perf_counter()
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, num_classes)
    student = copy.deepcopy(model).to(device).eval()  # eval mode throughout, as the authors' code
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = -(-len(xtr) // cfg.batch_size)
    bar = tqdm(total=cfg.rounds * steps, desc="i-BAU", leave=False, **progress_kwargs(progress))
    history = []
    for rnd in range(1, cfg.rounds + 1):
        delta = search_perturbation(student, xtr, cfg, gen, device)
        total = 0.0
        for xb, yb in batches(xtr, ytr, cfg.batch_size, True, gen):
            opt.zero_grad(set_to_none=True)
            total += hypergradient(student, params, delta, xb.to(device), yb.to(device), cfg, gen) / steps
            opt.step()
            bar.update(1)
        history.append({"epoch": rnd, "loss": total, "delta_l2": delta.norm().item()})
    bar.close()
    history[-1].update(defender_figures(student.eval(), None, xv, yv, cfg.seed, device))
    return Defended("ibau", student.eval(), None, [], history, {"total": time.perf_counter() - t0})
