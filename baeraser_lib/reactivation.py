"""Does a backdoor stay erased? The reactivation check (evaluation only, never part of a defense).

Min et al. (NeurIPS 2024, "Uncovering, Explaining, and Mitigating the Superficial Safety of
Backdoor Defense") showed that a purified model can re-learn its backdoor from a handful of
poisoned samples far faster than a model that never had one. The check plays that attacker:

1. the attacker's set: `n_images` training images (a seeded draw), `n_poisoned` of them (among the
   images the attack's rule counts) stamped with the TRUE trigger and given the rule's label;
2. re-tuning: plain SGD with momentum (lr 0.01, momentum 0.9, 5 epochs, batch 32, train mode, no
   augmentation) on a copy of the model;
3. the figure: ASR with the true trigger on the evaluation split after re-tuning, beside the
   same re-tuning of the clean reference model of the same recipe (never backdoored).

`labels="queried"` is the query-only attacker: the unstamped images carry the re-tuned model's
own predictions (what an attacker learns by querying it), not the true labels.

It reads the true trigger, its rule and training images, so it lives beside `metrics` and no
defense imports it (tests/test_layout.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checks import rules, validate
from .data import as_tensors, check_images, num_outputs
from .errors import ConfigError
from .metrics import evaluate
from .targets import TargetRule, as_rule
from .train import batches, pick_device, predict, progress_kwargs

LABELS = ("true", "queried")


@dataclass(frozen=True)
class ReactivationConfig:
    """The attacker's re-tuning. Defaults: the settings of the measurement that opened the issue
    (SGD lr 0.01, momentum 0.9, 5 epochs, 1,000 images of which 20 poisoned); batch 32 is ours."""

    n_images: int = 1000
    n_poisoned: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    epochs: int = 5
    batch_size: int = 32
    labels: str = "true"  # true: the attacker's own labels; queried: the model's predictions (query-only)
    seed: int = 0

    RULES: ClassVar = rules(n_images="[1, 10000000]", n_poisoned="[1, 10000000]", lr="(0, 10]",
                            momentum="[0, 1)", epochs="[1, 1000]", batch_size="[1, 65536]", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)
        if self.labels not in LABELS:
            raise ConfigError(f"labels must be one of {list(LABELS)}, got {self.labels!r}")
        if self.n_poisoned > self.n_images:
            raise ConfigError(f"n_poisoned ({self.n_poisoned}) cannot exceed n_images ({self.n_images})")


def attacker_set(train: Dataset, trigger, target: int | TargetRule, cfg: ReactivationConfig = ReactivationConfig()
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, poisoned): `cfg.n_images` images of `train`, `cfg.n_poisoned` of them stamped with
    `trigger` and labelled by the rule; `poisoned` marks them. The same seed gives the same set."""
    rule = as_rule(target)
    x, y = as_tensors(train)
    check_images(x, y, None, "the attacker's training images")
    if cfg.n_images > len(x):
        raise ConfigError(f"the reactivation check draws {cfg.n_images} attacker images but the training set "
                          f"has {len(x)}")
    g = torch.Generator().manual_seed(cfg.seed)
    pick = torch.randperm(len(x), generator=g)[:cfg.n_images]
    x, y = x[pick].clone(), y[pick].clone()
    counted = torch.nonzero(rule.counted(y)).flatten()
    if len(counted) < cfg.n_poisoned:
        raise ConfigError(f"only {len(counted)} of the {cfg.n_images} attacker images can carry the trigger "
                          f"(the rule counts them), fewer than n_poisoned = {cfg.n_poisoned}")
    chosen = counted[torch.randperm(len(counted), generator=g)[:cfg.n_poisoned]]
    x[chosen] = trigger.apply(x[chosen], generator=g)
    y[chosen] = rule.target_of(y[chosen])
    poisoned = torch.zeros(len(x), dtype=torch.bool)
    poisoned[chosen] = True
    return x, y, poisoned


def retune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ReactivationConfig = ReactivationConfig(),
           device=None, progress: bool = False) -> nn.Module:
    """A copy of `model` fine-tuned on (x, y) as the attacker would: SGD with momentum, train mode."""
    device = pick_device() if device is None else torch.device(device)
    tuned = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(tuned.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)
    bar = tqdm(total=steps, desc="re-tuning", leave=False, **progress_kwargs(progress))
    for _ in range(cfg.epochs):
        for xb, yb in batches(x, y, cfg.batch_size, True, gen):
            loss = F.cross_entropy(tuned(xb.to(device)), yb.to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError("re-tuning diverged (loss NaN or inf): lower the re-tuning lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    return tuned.eval()


def reactivation(model: nn.Module, train: Dataset, evaluation: Dataset, trigger, target: int | TargetRule,
                 cfg: ReactivationConfig = ReactivationConfig(), device=None, progress: bool = False,
                 before: dict | None = None) -> dict:
    """ASR and clean accuracy of `model` on `evaluation` before and after the attacker's re-tuning
    (see the module text). `model` itself is never changed. `before`: the model's `evaluate`
    figures on the same data and trigger, when the caller has them already (saves a pass)."""
    rule = as_rule(target)
    x, y, poisoned = attacker_set(train, trigger, rule, cfg)
    check_images(x, y, num_outputs(model, x[:1], "the attacker's images"), "the attacker's images")
    if before is None:
        before = evaluate(model, evaluation, trigger, rule, device=device)  # checks the evaluation data too
    elif not {"asr", "clean_acc"} <= set(before):
        raise ConfigError("before must hold the model's 'asr' and 'clean_acc' (metrics.evaluate's figures)")
    if cfg.labels == "queried":
        y = torch.where(poisoned, y, predict(model, x, device=device).cpu())
    after = evaluate(retune(model, x, y, cfg, device, progress), evaluation, trigger, rule, device=device)
    return {"asr_before": before["asr"], "clean_acc_before": before["clean_acc"],
            "asr_after": after["asr"], "clean_acc_after": after["clean_acc"]}


def compare(results: dict[str, dict], reference: dict) -> dict[str, dict]:
    """Each model's figures beside the clean reference's: the ASR gap and ratio after re-tuning
    (the ratio is None when the reference re-learned nothing)."""
    ref = reference["asr_after"]
    return {name: {**r, "reference_asr_after": ref, "gap": r["asr_after"] - ref,
                   "ratio": r["asr_after"] / ref if ref > 0 else None} for name, r in results.items()}
