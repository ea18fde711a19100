"""Defenses by name, TrojanZoo-style: `DEFENSES[name]` is a `DefenseSpec` (see `base`), and every
one returns a `Defended`.

    baeraser   MSA recovers triggers with no guess of them; bounded ascent with clean D_h, held by the
               suspect's clean outputs (the paper's Fisher penalty: anchor="weights"), unlearns them;
               a model judged clean is left alone                                  (Liu et al. 2022)
    vanilla    plain ascent on the recovered triggers: BAERASER without its penalty (a control of ours)
    finetune   fine-tuning on D_h                                                   (the paper's baseline)
    fineprune  prune the last conv layer's dormant channels, then fine-tune        (Liu et al. 2018)
    nad        neural attention distillation from a fine-tuned teacher             (Li et al. 2021)
    nc         Neural Cleanse: reverse-engineered triggers, MAD outliers, unlearning  (Wang et al. 2019)
    ibau       i-BAU: min-max over a universal perturbation, implicit hypergradient  (Zeng et al. 2022)
    sau        SAU: unlearn adversarial examples shared with the backdoored model   (Wei et al. 2023)
    anp        ANP: perturb BatchNorm neurons adversarially, prune the sensitive ones (Wu & Wang 2021)
"""

from __future__ import annotations

import time

from .anp import ANPConfig, anp
from .base import Defended, DefenseSpec
from .baeraser import BaeraserConfig, baeraser, repair
from .fineprune import FinePruneConfig, fineprune
from .finetune import FinetuneConfig, finetune
from .ibau import IBAUConfig, ibau
from .nad import NADConfig, nad
from .nc import NCConfig, nc
from .pool import TriggerPool
from .recovery import RecoveryConfig, RecoveryResult, recover_triggers
from .sau import SAUConfig, sau
from .unlearning import UnlearnConfig, unlearn
from .vanilla import VanillaConfig, vanilla


def _repairing(name: str, fn):
    """A registry entry for a defense that repairs every model: `fn(model, holding, cfg, ...)
    -> (model, history)` becomes `run(model, holding, num_classes, cfg, ...) -> Defended`."""

    def run(model, holding, num_classes, cfg, device=None, progress: bool = True, teacher=None, **_unused):
        t0 = time.perf_counter()
        kw = {"teacher": teacher} if name == "nad" else {}
        repaired, history = fn(model, holding, cfg, device=device, progress=progress, **kw)
        return Defended(name, repaired.eval(), None, [], history, {"total": time.perf_counter() - t0})

    run.__name__ = run.__qualname__ = f"run_{name}"
    run.__doc__ = f"`{fn.__name__}` as a registered defense (no detection: every model is repaired)."
    return run


DEFENSES: dict[str, DefenseSpec] = {
    "baeraser": DefenseSpec(baeraser, BaeraserConfig, "BAERASER", ("holding", "pool"), "ours", bf16=True,
                            summary="recover triggers (MSA), flag outliers, unlearn them by bounded ascent held by clean data",
                            cite="Liu et al., Backdoor Defense with Machine Unlearning, INFOCOM 2022"),
    "finetune": DefenseSpec(_repairing("finetune", finetune), FinetuneConfig, "fine-tuning", ("holding",),
                            "baseline", summary="fine-tune on D_h", cite="the paper's baseline"),
    "fineprune": DefenseSpec(_repairing("fineprune", fineprune), FinePruneConfig, "fine-pruning", ("holding",),
                             "baseline", summary="prune dormant channels of the last conv layer, then fine-tune",
                             cite="Liu, Dolan-Gavitt & Garg, Fine-Pruning, RAID 2018"),
    "nad": DefenseSpec(_repairing("nad", nad), NADConfig, "NAD", ("holding",), "baseline",
                       summary="distil a fine-tuned teacher's attention into the suspect model",
                       cite="Li et al., Neural Attention Distillation, ICLR 2021"),
    "nc": DefenseSpec(nc, NCConfig, "Neural Cleanse", ("holding",), "peer",
                      summary="reverse-engineer a mask per label, flag MAD outliers, unlearn with 20% stamped D_h",
                      cite="Wang et al., Neural Cleanse, IEEE S&P 2019"),
    "ibau": DefenseSpec(ibau, IBAUConfig, "i-BAU", ("holding",), "peer",
                        summary="min-max unlearning of a universal perturbation with the implicit hypergradient",
                        cite="Zeng et al., Adversarial Unlearning of Backdoors via Implicit Hypergradient, ICLR 2022"),
    "sau": DefenseSpec(sau, SAUConfig, "SAU", ("holding",), "peer",
                       summary="unlearn adversarial examples shared by the suspect and the purified model",
                       cite="Wei et al., Shared Adversarial Unlearning, NeurIPS 2023"),
    "anp": DefenseSpec(anp, ANPConfig, "ANP", ("holding",), "peer",
                       summary="learn BatchNorm neuron masks under adversarial neuron perturbation, prune below 0.2",
                       cite="Wu & Wang, Adversarial Neuron Perturbation Exposes Backdoors, NeurIPS 2021"),
    "vanilla": DefenseSpec(vanilla, VanillaConfig, "vanilla ascent", ("holding", "pool"), "ablation", bf16=True,
                           summary="plain ascent on the recovered triggers, no penalty (a control)"),
}


def names(*roles: str) -> list[str]:
    """Registered defense names of the given roles (all when none), in registry order."""
    return [k for k, s in DEFENSES.items() if not roles or s.role in roles]


__all__ = ["DEFENSES", "ANPConfig", "BaeraserConfig", "Defended", "DefenseSpec", "FinePruneConfig", "FinetuneConfig",
           "IBAUConfig", "NADConfig", "NCConfig", "RecoveryConfig", "RecoveryResult", "SAUConfig", "TriggerPool",
           "UnlearnConfig", "VanillaConfig", "anp", "baeraser", "fineprune", "finetune", "ibau", "names", "nad", "nc",
           "recover_triggers", "repair", "sau", "unlearn", "vanilla"]
