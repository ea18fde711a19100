"""Trained models as cached artifacts: the clean reference model and backdoored victims.

`obtain_model` validates everything first, then loads the artifact whose folder name is the hash
of the configs if it exists, and only otherwise trains (and saves atomically). So running a
notebook again with the same parameters costs a load, not a training run; one clean model serves
every attack that shares its training config.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .artifacts import (artifact_dir, check_folder_name, is_complete, load_weights, meta_field, read_meta,
                        write_artifact)
from .attacks import ATTACKS
from .artifacts import config_hash
from .config import AttackConfig, TrainConfig
from .data import ExperimentData, dataset_info
from .errors import CheckpointError, ConfigError
from .metrics import evaluate
from .models import build_model
from .train import check_layout, check_precision, fit, memory_format, pick_device, precision_used
from .targets import TargetRule
from .triggers import trigger_from_json


@dataclass
class TrainedModel:
    model: nn.Module
    trigger: object | None  # the true trigger (any kind, with `apply`); None for the clean model
    target_label: int | None  # None for the clean model and for all-to-all attacks
    meta: dict
    path: Path
    cached: bool  # loaded from disk rather than trained now
    rule: TargetRule | None = None  # the attack's own ASR definition (which images count, which label)

    @property
    def train_seconds(self) -> float:
        return float(self.meta["train_seconds"])


def new_model(cfg: TrainConfig) -> nn.Module:
    """The untrained architecture of `cfg`, initialised from `cfg.seed`."""
    info = dataset_info(cfg.dataset)
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, info.num_classes, info.channels, cfg.width, info.mean, info.std)


def model_path(artifacts_dir: str | os.PathLike, train: TrainConfig, attack: AttackConfig | None) -> Path:
    """Where the artifact for these configs lives (whether or not it exists yet)."""
    kind = "victims" if attack is not None else "clean"
    parts = (train, attack.identity()) if attack is not None else (train,)
    return artifact_dir(artifacts_dir, kind, config_hash(*parts))


def load_trained(path: str | os.PathLike) -> TrainedModel:
    """Load a model artifact folder written by `obtain_model` (weights checked, nothing unpickled)."""
    path = Path(path)
    meta = read_meta(path)  # sealed: fields and weights as written
    train = meta_field(path, meta, "train_config", lambda v: TrainConfig(**v))
    attack = meta_field(path, meta, "attack_config", lambda v: None if v is None else AttackConfig(**v))
    meta_field(path, meta, "kind", lambda v: _expect(v == ("victim" if attack else "clean"), "victim with an "
                                                     "attack_config, clean without"))
    check_folder_name(path, model_path(path, train, attack).name, "train_config and attack_config")
    trigger = meta_field(path, meta, "trigger", lambda v: None if v is None else trigger_from_json(v))
    if (attack is None) != (trigger is None):
        raise CheckpointError(f"{path}/meta.json: field 'trigger' is {'missing' if trigger is None else 'present'} "
                              f"but the sidecar is a {'victim' if attack else 'clean model'}'s")
    meta_field(path, meta, "train_seconds", lambda v: _expect(isinstance(v, (int, float)) and v >= 0, "seconds"))
    meta_field(path, meta, "metrics", lambda v: _expect(isinstance(v, dict), "a mapping"))
    model = load_weights(new_model(train), path / "weights.safetensors").eval()
    rule = ATTACKS[attack.name].target_rule(attack, dataset_info(train.dataset).num_classes) if attack else None
    return TrainedModel(model, trigger, attack.target_label if attack else None, meta, path, cached=True, rule=rule)


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"expected {what}")


def find_model(artifacts_dir: str | os.PathLike, train: TrainConfig, attack: AttackConfig | None) -> TrainedModel:
    """The artifact notebook 01 saved for these configs, or a clear error saying how to make it."""
    path = model_path(artifacts_dir, train, attack)
    if not is_complete(path):
        raise CheckpointError(f"no trained model for these parameters under {path}: run notebook 01 "
                              f"(01_inject) with the same parameters first, or pass model_path")
    return load_trained(path)


def check_attack(train: TrainConfig, attack: AttackConfig, train_set=None) -> None:
    """Every check that needs the architecture (TrojanNN's layer and neuron count), on an
    untrained copy of it: cheap, and run before any data is read or weight trained. Given the
    training set, also the attack's checks against it (SIG: enough target-class images)."""
    attack.check_against(train.dataset)
    spec = ATTACKS[attack.name]
    if spec.check is not None:
        spec.check(new_model(train), attack.resolved_options())
    if train_set is not None and spec.check_data is not None:
        spec.check_data(attack, train_set)


def obtain_model(train: TrainConfig, attack: AttackConfig | None, data: ExperimentData,
                 artifacts_dir: str | os.PathLike, device: torch.device | None = None,
                 progress: bool = True, track_epochs: bool = True, precision: str = "auto",
                 layout: str = "auto") -> TrainedModel:
    """Load the cached model for (train, attack) or train it (clean if `attack` is None).

    `precision` and `layout` are how `train.fit` runs (`auto`: bf16 autocast on CUDA only, so CPU
    training stays fp32; channels-last on CPU and CUDA), not what it trains: they are not part of
    the cache key, the saved meta records them, and a cached model is returned as it was trained.
    TrojanNN's and IMC's trigger optimisation runs in fp32 whatever `precision` says.

    Figures in the saved meta are measured on `data.evaluation` (test split minus D_h).
    `track_epochs` also logs clean accuracy / ASR on that split after every epoch, for plots only.
    Attacks that start from a trained model (TrojanNN, IMC) get the clean model of `train`, which
    is itself loaded or trained (and cached) first; `train_seconds` counts the attack's own time.
    """
    check_precision(precision)  # how training runs: refused before anything is looked at
    check_layout(layout)
    if attack is not None:
        check_attack(train, attack, getattr(data, "train", None))  # before the data is even looked at
    if data.info.name != train.dataset:
        raise ConfigError(f"data is {data.info.name!r} but the config trains on {train.dataset!r}")
    if train.train_subset is not None and len(data.train) != train.train_subset:
        raise ConfigError(f"the config trains on a subset of {train.train_subset} images but the data's "
                          f"training set has {len(data.train)}: load it with the same train_subset")
    path = model_path(artifacts_dir, train, attack)
    if is_complete(path):
        return load_trained(path)

    device = pick_device() if device is None else torch.device(device)  # "cpu" or "cuda:0" work too
    model = new_model(train)
    spec = ATTACKS[attack.name] if attack is not None else None
    target = spec.target_rule(attack, data.info.num_classes) if attack is not None else None
    start_from = None
    if spec is not None and spec.starts_from_clean:
        start_from = obtain_model(train, None, data, artifacts_dir, device, progress, track_epochs, precision, layout)
        model.load_state_dict(start_from.model.state_dict())

    def epoch_end(m: nn.Module, epoch: int, trigger=None) -> dict:
        """Per-epoch figures on the evaluation split (with that epoch's trigger), for plots only."""
        figs = evaluate(m, data.evaluation, trigger, target, device=device)
        return {f"eval_{k}": v for k, v in figs.items() if k != "robust_acc"}

    start = time.perf_counter()
    details = {}
    if attack is None:
        history = fit(model, data.train, train, device, epoch_end=epoch_end if track_epochs else None,
                      progress=progress, desc="clean", precision=precision, layout=layout)
        trigger, n_poison = None, 0
    else:
        result = spec.fn(model, data.train, data.info, attack, train, device,
                         epoch_end if track_epochs else None, progress, precision=precision, layout=layout)
        history, trigger, n_poison = result.history, result.trigger, len(result.poisoned_indices)
        details = result.details
    # wall time of training alone: the per-epoch plotting evaluations are not part of the attack
    seconds = time.perf_counter() - start - sum(r.get("eval_seconds", 0.0) for r in history)
    model = model.cpu().eval()
    metrics = evaluate(model, data.evaluation, trigger, target)
    meta = {
        "kind": "victim" if attack else "clean",
        "train_config": asdict(train),
        "attack_config": asdict(attack) if attack else None,
        "trigger": trigger.to_json() if trigger else None,
        "n_train": len(data.train),
        "n_poisoned": n_poison,
        "poison_rate": attack.rate if attack else None,
        "target_rule": target.describe() if target else None,
        "train_seconds": seconds,
        "device": str(device),
        "precision": precision,
        "layout": layout,
        "precision_used": precision_used(device, precision),
        "layout_used": "channels_last" if memory_format(device, layout) == torch.channels_last else "contiguous",
        "history": history,
        "attack_details": details,
        "started_from": start_from.path.name if start_from is not None else None,
        "metrics": metrics,
        "metrics_on": f"test split minus holding set ({len(data.evaluation)} images)",
    }
    write_artifact(path, dict(model.state_dict()), meta)
    return TrainedModel(model, trigger, attack.target_label if attack else None, read_meta(path), path,
                        cached=False, rule=target)
