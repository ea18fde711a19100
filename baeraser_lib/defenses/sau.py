"""SAU, Shared Adversarial Unlearning (Wei et al., "Shared Adversarial Unlearning: Backdoor
Mitigation by Unlearning Shared Adversarial Examples", NeurIPS 2023), a peer in the same harness.

A backdoor is an adversarial example that the backdoored model θ₀ and the model being purified θ
share. Per batch of D_h:

1. **Shared adversarial examples** by PGD in L∞ (bound 0.2, step 0.2, 5 steps, started at the
   bound): minimise β₁·L_adv + β₂·L_share, where L_adv is minus the CE of the images that do not
   yet fool a model (each model's own) and L_share is the Jensen–Shannon divergence between the
   two models' predictions on the images not yet fooling both into the same label.
2. **Unlearning** (one Adam step): λ₁·CE(clean) + λ₂·CE(adversarial, true labels) + λ₃·L_sar,
   where L_sar, on the images that fool θ₀, pushes θ's probability of θ₀'s adversarial label
   down (−log(1 − p), clamped as the authors do, with 1 − p summed from the other classes'
   probabilities as in their code).

Defaults are BackdoorBench's SAU config (Adam with AMSGrad, as BackdoorBench builds its Adam, lr 1e-4,
batch 256; PGD weights β₁ 0.01, β₂ 1; λ₁ 1, λ₂ 0, λ₃ 1; both models in eval mode). The learning
rate stays constant: the config names a cosine schedule, but the authors' loop never steps it.
`train_mode=True` is the authors' switch for BatchNorm in the unlearning step (batch statistics,
running statistics updated); they note that eval mode keeps more accuracy and more ASR.

**Epochs: 5, not the paper's 100.** One epoch of SAU on 2,400 images costs about 30–40 s on our
2-core CPU (each batch runs 5 PGD steps through two models), and every peer gets a budget of a
few minutes, like BAERASER and NAD: 5 epochs was fixed from that timing alone (measured on one
epoch, never tuned to an attack's result); `epochs` raises it.

Perturbations live in pixel space ([0, 1] images) and, as in the authors' code, are not clipped
to the image range. Nothing here sees test data, the true trigger or the target label.
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
class SAUConfig:
    lr: float = 1e-4  # Adam, constant (BackdoorBench; see the module text)
    epochs: int = 5  # the paper runs 100; see the module text
    batch_size: int = 256
    eps: float = 0.2  # L∞ bound of the shared adversarial perturbation (pixel units)
    pgd_lr: float = 0.2
    pgd_steps: int = 5
    beta_adv: float = 0.01  # β₁: weight of the adversarial term in PGD
    beta_share: float = 1.0  # β₂: weight of the sharing (JS) term in PGD
    lambda_clean: float = 1.0  # λ₁
    lambda_adv: float = 0.0  # λ₂: plain adversarial training, off by default as in the paper
    lambda_shared: float = 1.0  # λ₃
    amsgrad: bool = True  # BackdoorBench's Adam
    train_mode: bool = False  # BatchNorm in train mode for the unlearning step (the authors' --train_mode)
    val_fraction: float = 0.2
    seed: int = 0

    # eps is an L∞ bound on [0, 1] images
    RULES: ClassVar = rules(lr="(0, 1]", epochs="[1, 1000]", batch_size="[1, 65536]", eps="(0, 1]",
                            pgd_lr="(0, 1000]", pgd_steps="[1, 100]", beta_adv="[0, 1000]", beta_share="[0, 1000]",
                            lambda_clean="[0, 1000]", lambda_adv="[0, 1000]", lambda_shared="[0, 1000]",
                            val_fraction="(0, 1)", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-image Jensen–Shannon divergence of two probability rows."""
    m = 0.5 * (p + q)
    return 0.5 * ((p * (p.log() - m.log())).sum(1) + (q * (q.log() - m.log())).sum(1))


def shared_pgd(model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor, own_ref: torch.Tensor,
               cfg: SAUConfig) -> torch.Tensor:
    """A perturbation (same shape as x, ‖·‖∞ ≤ eps) that fools `model` and `ref` into the same label
    (`own_ref`: the fixed reference model's labels of the clean x)."""
    with torch.no_grad():
        own = model(x).argmax(1)
    pert = torch.full_like(x, cfg.eps).requires_grad_(True)
    for _ in range(cfg.pgd_steps):
        logits, logits_ref = model(x + pert), ref(x + pert)
        lab, lab_ref = logits.argmax(1), logits_ref.argmax(1)
        fooled, fooled_ref = lab != own, lab_ref != own_ref
        shared = fooled & fooled_ref & (lab == lab_ref)
        ce = F.cross_entropy(logits, y, reduction="none")[~fooled].sum() + \
            F.cross_entropy(logits_ref, y, reduction="none")[~fooled_ref].sum()
        loss_adv = -ce / (2 * len(x))
        p, q = F.softmax(logits, 1).clamp(min=1e-8), F.softmax(logits_ref, 1).clamp(min=1e-8)
        loss_share = _js(p, q)[~shared].sum() / len(x)
        grad, = torch.autograd.grad(cfg.beta_adv * loss_adv + cfg.beta_share * loss_share, pert)
        with torch.no_grad():
            pert -= cfg.pgd_lr * grad.sign()
            pert.clamp_(-cfg.eps, cfg.eps)
        if bool(shared.all()):
            break
    return pert.detach()


def sau_loss(model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor, pert: torch.Tensor,
             own_ref: torch.Tensor, cfg: SAUConfig) -> torch.Tensor:
    """λ₁·clean CE + λ₂·adversarial CE + λ₃·shared-adversarial risk (see the module text)."""
    model.train(cfg.train_mode)
    logits, adv_logits = model(torch.cat([x, x + pert])).split(len(x))
    model.eval()  # PGD and the masks below see the eval-mode model, as in the authors' loop
    with torch.no_grad():
        adv_ref = ref(x + pert).argmax(1)
    loss = cfg.lambda_clean * F.cross_entropy(logits, y)
    if cfg.lambda_adv:
        loss = loss + cfg.lambda_adv * F.cross_entropy(adv_logits, y)
    poison = (adv_ref != y) & (adv_ref != own_ref)  # images where θ₀ is fooled: backdoor candidates
    if poison.any():
        prob = F.softmax(adv_logits[poison], 1)
        hit = F.one_hot(adv_ref[poison], prob.shape[1]).bool()
        pos, neg = prob[hit], prob.masked_fill(hit, 0).sum(1)  # neg = 1 − pos, as the authors sum it
        risk = -(torch.log(1e-6 + neg.clamp(max=0.999)) + torch.log(1 + 1e-6 - pos.clamp(min=0.001))).sum() / 2
        loss = loss + cfg.lambda_shared * risk / len(x)
    return loss


def sau(model: nn.Module, holding: Dataset, num_classes: int, cfg: SAUConfig = SAUConfig(), device=None,
        progress: bool = True, **_unused) -> Defended:
    """An SAU-purified copy of `model` (see the module text); every model is repaired."""
    t0 = time.perf_counter()
    device = pick_device() if device is None else torch.device(device)
    xtr, ytr, xv, yv = split_defense(holding, cfg.val_fraction, cfg.seed, num_classes)
    ref = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(model).to(device).eval()
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr, amsgrad=cfg.amsgrad)
    steps = -(-len(xtr) // cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=cfg.epochs * steps, desc="SAU", leave=False, **progress_kwargs(progress))
    history = []
    for epoch in range(1, cfg.epochs + 1):
        total = 0.0
        for xb, yb in batches(xtr, ytr, cfg.batch_size, True, gen):
            xb, yb = xb.to(device), yb.to(device)
            with torch.no_grad():
                own_ref = ref(xb).argmax(1)  # the reference never changes: its clean labels once per batch
            pert = shared_pgd(student, ref, xb, yb, own_ref, cfg)
            loss = sau_loss(student, ref, xb, yb, pert, own_ref, cfg)
            check_finite(loss, f"SAU epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() / steps
            bar.update(1)
        history.append({"epoch": epoch, "loss": total})
    bar.close()
    history[-1].update(defender_figures(student, None, xv, yv, cfg.seed, device))
    return Defended("sau", student.eval(), None, [], history, {"total": time.perf_counter() - t0})
