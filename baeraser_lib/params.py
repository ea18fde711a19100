"""Notebook parameters → the library's configs: the one mapping that the notebooks, the grids and
the `baeraser` command all use.

Each table maps a parameter name to the config field it sets (a dotted path for nested configs);
a name absent from `params` takes the config's default, so a notebook's parameters cell and the
dataclasses cannot drift apart silently (`tests/test_layout.py` checks that every notebook's
default equals the field's default).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from .config import AttackConfig, TrainConfig
from .defenses import (ANPConfig, BaeraserConfig, FinePruneConfig, FinetuneConfig, IBAUConfig, NADConfig, NCConfig,
                       RecoveryConfig, SAUConfig, UnlearnConfig, VanillaConfig)
from .reactivation import ReactivationConfig

TRAIN = {k: k for k in ("dataset", "model", "width", "epochs", "batch_size", "lr", "momentum", "weight_decay",
                        "schedule", "train_subset", "seed")}
ATTACK = {"attack": "name", "attack_options": "options", "trigger_size": "trigger_size",
          "trigger_position": "trigger_position", "poison_rate": "poison_rate", "target_label": "target_label",
          "seed": "seed"}
RECOVERY = {"trigger_form": "form", "patch_size": "patch_size", "mask_steps": "mask_steps", "eps": "eps",
            "lambda_h": "lambda_h", "tau": "tau", "steps_per_stage": "steps_per_stage",
            "recovery_batch_size": "batch_size", "recovery_lr": "lr", "mine_lr": "mine_lr", "noise_dim": "noise_dim",
            "hidden": "hidden", "placement": "placement", "grid_size": "grid_size", "prune": "prune",
            "max_candidates": "max_candidates", "seed": "seed"}
UNLEARN = {"alpha": "alpha", "beta": "beta", "unlearn_lr": "lr", "unlearn_epochs": "epochs",
           "unlearn_batch_size": "batch_size", "unlearn_loss": "loss", "bound": "bound", "unlearn_anchor": "anchor",
           "unlearn_invariance": "invariance", "unlearn_invariance_at": "invariance_at", "unlearn_early_stop": "early_stop",
           "unlearn_schedule": "schedule", "unlearn_path_rho": "path_rho",
           "unlearn_reset_fraction": "reset_fraction", "unlearn_channel_prune": "channel_prune",
           "unlearn_head_shift": "head_shift",
           "unlearn_augment_invariance": "augment_invariance", "seed": "seed"}
BAERASER = {"confirm": "confirm", "confirm_ratio": "confirm_ratio"}
FINETUNE = {"finetune_lr": "lr", "finetune_epochs": "epochs", "seed": "seed"}
FINEPRUNE = {"fineprune_acc_drop": "acc_drop", "seed": "seed"}
NAD = {"nad_beta": "beta", "nad_epochs": "student.epochs", "seed": "seed"}
NC = {"nc_scale": "scale"}
IBAU = {"ibau_lr": "lr", "ibau_rounds": "rounds", "ibau_batch_size": "batch_size", "seed": "seed"}
SAU = {"sau_lr": "lr", "sau_epochs": "epochs", "sau_batch_size": "batch_size", "sau_eps": "eps",
       "sau_train_mode": "train_mode", "seed": "seed"}
ANP = {"anp_eps": "eps", "anp_iterations": "iterations", "anp_threshold": "threshold", "anp_select": "select",
       "seed": "seed"}
REACTIVATION = {"reactivation_images": "n_images", "reactivation_poisoned": "n_poisoned", "reactivation_lr": "lr",
                "reactivation_epochs": "epochs", "reactivation_batch_size": "batch_size", "seed": "seed"}


def _pick(params: dict, table: dict[str, str]) -> dict:
    """{field: value} for the top-level fields of `table` that `params` names (lists of eps → tuple)."""
    return {f: (tuple(params[p]) if p == "eps" else params[p]) for p, f in table.items()
            if p in params and "." not in f}


def train_config(params: dict) -> TrainConfig:
    return TrainConfig(**_pick(params, TRAIN))


def attack_config(params: dict) -> AttackConfig:
    kw = _pick(params, ATTACK)
    kw["options"] = kw.get("options") or {}
    return AttackConfig(**kw)


def recovery_config(params: dict) -> RecoveryConfig:
    return RecoveryConfig(**_pick(params, RECOVERY))


def unlearn_config(params: dict) -> UnlearnConfig:
    return UnlearnConfig(**_pick(params, UNLEARN))


def baeraser_config(params: dict) -> BaeraserConfig:
    return BaeraserConfig(recovery=recovery_config(params), unlearn=unlearn_config(params), **_pick(params, BAERASER))


def vanilla_config(params: dict) -> VanillaConfig:
    """Plain ascent: BAERASER's unlearning settings with the penalty off."""
    unlearn = dataclasses.replace(unlearn_config(params), beta=0.0, vanilla=True)
    return VanillaConfig(recovery=recovery_config(params), unlearn=unlearn)


def finetune_config(params: dict) -> FinetuneConfig:
    return FinetuneConfig(**_pick(params, FINETUNE))


def fineprune_config(params: dict) -> FinePruneConfig:
    return FinePruneConfig(finetune=finetune_config(params), **_pick(params, FINEPRUNE))


def nad_config(params: dict) -> NADConfig:
    """NAD's student trains like fine-tuning (its lr), for `nad_epochs`; its teacher keeps NAD's default."""
    student = dataclasses.replace(finetune_config(params), **({"epochs": params["nad_epochs"]}
                                                              if "nad_epochs" in params else {}))
    return NADConfig(student=student, **_pick(params, NAD))


def nc_config(params: dict) -> NCConfig:
    """Neural Cleanse: its own search schedule and cut (see `defenses.nc`) for `mask_steps` steps, as
    recovery's mask search; its unlearning fine-tunes like fine-tuning."""
    search = NCConfig().search
    if "mask_steps" in params:
        search = dataclasses.replace(search, mask_steps=params["mask_steps"])
    return NCConfig(search=search, finetune=finetune_config(params), **_pick(params, NC))


def ibau_config(params: dict) -> IBAUConfig:
    return IBAUConfig(**_pick(params, IBAU))


def sau_config(params: dict) -> SAUConfig:
    return SAUConfig(**_pick(params, SAU))


def anp_config(params: dict) -> ANPConfig:
    return ANPConfig(**_pick(params, ANP))


def reactivation_config(params: dict) -> ReactivationConfig:
    """The attacker's re-tuning in the reactivation check (evaluation, not a defense)."""
    return ReactivationConfig(**_pick(params, REACTIVATION))


# registered defense → (the builder of its config, the tables it reads)
DEFENSE_CONFIGS: dict[str, tuple[Callable[[dict], object], tuple[dict, ...]]] = {
    "baeraser": (baeraser_config, (RECOVERY, UNLEARN, BAERASER)),
    "vanilla": (vanilla_config, (RECOVERY, UNLEARN)),
    "finetune": (finetune_config, (FINETUNE,)),
    "fineprune": (fineprune_config, (FINETUNE, FINEPRUNE)),
    "nad": (nad_config, (FINETUNE, NAD)),
    "nc": (nc_config, (FINETUNE, NC, {"mask_steps": "search.mask_steps"})),
    "ibau": (ibau_config, (IBAU,)),
    "sau": (sau_config, (SAU,)),
    "anp": (anp_config, (ANP,)),
}

# every table with the config it fills: what the check of notebook defaults walks
TABLES: dict[str, tuple[dict[str, str], Callable[[dict], object]]] = {
    "train": (TRAIN, train_config), "attack": (ATTACK, attack_config), "recovery": (RECOVERY, recovery_config),
    "unlearn": (UNLEARN, unlearn_config), "baeraser": (BAERASER, baeraser_config),
    "finetune": (FINETUNE, finetune_config), "fineprune": (FINEPRUNE, fineprune_config), "nad": (NAD, nad_config),
    "nc": (NC, nc_config), "ibau": (IBAU, ibau_config), "sau": (SAU, sau_config), "anp": (ANP, anp_config),
    "reactivation": (REACTIVATION, reactivation_config),
}


def defense_config(name: str, params: dict):
    """The config of registered defense `name` that `params` describe."""
    from .errors import ConfigError

    if name not in DEFENSE_CONFIGS:
        raise ConfigError(f"unknown defense {name!r}; choose one of {sorted(DEFENSE_CONFIGS)}")
    return DEFENSE_CONFIGS[name][0](params)


def _field(cfg, path: str):
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def default_mismatches(params: dict) -> list[str]:
    """Every parameter in `params` whose value differs from the default of the config field it
    maps to (`[]` when a notebook's parameters cell agrees with the dataclasses)."""
    out = []
    for kind, (table, build) in TABLES.items():
        defaults = build({})
        for name, path in table.items():
            if name not in params:
                continue
            want, got = _field(defaults, path), params[name]
            got = tuple(got) if isinstance(want, tuple) and isinstance(got, list) else got
            if kind == "baeraser" and path in ("recovery", "unlearn"):
                continue
            if got != want and not (isinstance(want, float) and isinstance(got, (int, float)) and abs(got - want) < 1e-12):
                out.append(f"{name} = {params[name]!r}, but {type(defaults).__name__}.{path} defaults to {want!r}")
    return out
