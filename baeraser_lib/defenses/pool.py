"""The trigger pool: (label, generator, placement or mask) entries that recovery kept, as an artifact.

Saved like models: `pool.safetensors` (the stacked generator weights) + `meta.json` (config,
labels, placements, per-label figures), written atomically; loading never unpickles.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..artifacts import artifact_dir, check_folder_name, config_hash, is_complete, meta_field, read_meta, write_artifact
from ..errors import CheckpointError
from . import networks as N
from ..triggers import stamp, stamp_mask
from .recovery import RecoveryConfig, RecoveryResult, recover_triggers

POOL_FILE = "pool.safetensors"
ALGORITHM = "msa-3"  # bump when recovery's results change for the same config: old pools are not reused


@dataclass
class TriggerPool:
    """Recovered triggers: entry i samples patterns from its generator and stamps them, through its
    mask (mask form) or as patches at `offsets[i]` (patch form); `stamp(i, x)` does both."""

    labels: list[int]
    offsets: list[tuple[int, int] | None]  # None: recovered at random places, or a mask
    generators: N.Params  # stacked weights, one slice per entry
    config: RecoveryConfig
    image_shape: tuple[int, int, int]
    masks: torch.Tensor | None = None  # mask form: (entries, 1, H, W)

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def sample(self, i: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n patterns from entry i's generator (n ≥ 2: BatchNorm uses batch statistics):
        (n, C, H, W) for the mask form, (n, C, s, s) patches for the patch form."""
        if n < 2:
            raise ValueError("sample at least 2 patterns at a time (the generator normalises over its batch)")
        noise = torch.rand(1, n, self.config.noise_dim, generator=generator)
        out = N.generate(N.select(self.generators, slice(i, i + 1)), noise, self.config.noise_chunks)
        return out.view(n, *self.config.pattern_shape(self.image_shape))

    @torch.no_grad()
    def stamp(self, i: int, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (N, C, H, W) stamped with N fresh samples of entry i, each image its own sample."""
        patterns = self.sample(i, max(2, len(x)), generator)[:len(x)]
        if self.config.form == "mask":
            return stamp_mask(x, self.masks[i], patterns.to(x.dtype))
        where = self.offsets[i]
        return stamp(x, patterns, torch.tensor([where] * len(x)) if where is not None else "random", generator)

    def subset(self, labels: list[int]) -> "TriggerPool":
        """The entries of `labels` only (in this pool's order)."""
        idx = [i for i, k in enumerate(self.labels) if k in set(labels)]
        return TriggerPool([self.labels[i] for i in idx], [self.offsets[i] for i in idx],
                           {n: v[idx] for n, v in self.generators.items()}, self.config, self.image_shape,
                           self.masks[idx] if self.masks is not None else None)

    @classmethod
    def from_result(cls, result: RecoveryResult) -> "TriggerPool":
        masks = torch.stack([result.masks[k] for k in result.kept]) if result.masks else None
        return cls(list(result.kept), [result.offsets[k] for k in result.kept], result.generators,
                   result.config, result.image_shape, masks)


def save_pool(path: str | os.PathLike, result: RecoveryResult, extra_meta: dict | None = None) -> Path:
    """Write the pool of `result` (and its figures) as an artifact folder."""
    tensors = {f"gen.{k}": v for k, v in result.generators.items()} or {"empty": torch.zeros(0)}
    if result.masks:
        tensors["masks"] = torch.stack([result.masks[k] for k in result.kept]).contiguous()
    meta = {"kind": "trigger_pool", "recovery_config": asdict(result.config),
            "image_shape": list(result.image_shape), "num_classes": result.num_classes,
            "backdoored": result.backdoored, "flagged": result.flagged,
            "labels_kept": result.kept, "offsets": [result.offsets[k] for k in result.kept],
            "per_label": result.per_label, "stage_logs": result.stage_logs,
            "seconds_recovery": result.seconds, "mode": result.mode, **(extra_meta or {})}
    return write_artifact(path, tensors, meta, weights_name=POOL_FILE)


def load_pool(path: str | os.PathLike) -> tuple[TriggerPool, dict]:
    """Load a pool artifact folder: (pool, meta)."""
    path = Path(path)
    meta = read_meta(path)  # sealed: fields and tensors as written
    if meta.get("kind") != "trigger_pool":
        raise CheckpointError(f"{path} is not a trigger-pool artifact")
    cfg = meta_field(path, meta, "recovery_config", lambda v: RecoveryConfig(**v))
    if "victim_id" in meta:  # a pool `obtain_pool` cached: named by its victim, D_h and config
        key = meta_field(path, meta, "victim_id", str), meta_field(path, meta, "algorithm", str)
        holding = meta_field(path, meta, "holding", lambda v: dict(v))
        check_folder_name(path, config_hash({"victim": key[0], "algorithm": key[1], **holding}, cfg),
                          "victim_id, algorithm, holding and recovery_config")
    num_classes = meta_field(path, meta, "num_classes", lambda v: _ints([v], 2)[0])
    shape = meta_field(path, meta, "image_shape", lambda v: tuple(_ints(v, 1, length=3)))
    labels = meta_field(path, meta, "labels_kept", lambda v: _ints(v, 0, num_classes - 1))
    offsets = meta_field(path, meta, "offsets", lambda v: _offsets(v, len(labels)))
    try:
        tensors = load_file(str(path / POOL_FILE))
    except Exception as err:
        raise CheckpointError(f"{path / POOL_FILE} is missing or corrupted: {err}") from None
    gens = {k[len("gen."):]: v for k, v in tensors.items() if k.startswith("gen.")}
    if any(v.shape[0] != len(labels) for v in gens.values()) or (labels and not gens):
        raise CheckpointError(f"{path}: generator tensors do not match the {len(labels)} labels kept")
    masks = tensors.get("masks")
    if cfg.form == "mask" and labels and (masks is None or tuple(masks.shape) != (len(labels), 1, *shape[1:])):
        raise CheckpointError(f"{path}: the masks do not match the {len(labels)} labels kept and the image shape")
    return TriggerPool(labels, offsets, gens, cfg, shape, masks if cfg.form == "mask" else None), meta


def _ints(values, lo: int, hi: int | None = None, length: int | None = None) -> list[int]:
    """`values` as a list of ints in [lo, hi] (of `length` items if given); ValueError otherwise."""
    values = list(values)
    if length is not None and len(values) != length:
        raise ValueError(f"expected {length} integers, got {len(values)}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
               for v in values):
        raise ValueError(f"expected integers in [{lo}, {'∞' if hi is None else hi}], got {values}")
    return values


def _offsets(values, n: int) -> list:
    """One offset per kept label: a (row, col) pair of ints ≥ 0, or None (masks, random places)."""
    values = list(values)
    if len(values) != n:
        raise ValueError(f"expected {n} offsets (one per kept label), got {len(values)}")
    return [None if o is None else tuple(_ints(o, 0, length=2)) for o in values]


def obtain_pool(model, victim_id: str, holding, num_classes: int, cfg: RecoveryConfig,
                artifacts_dir: str | os.PathLike, holding_key: dict, device=None,
                progress: bool = True) -> tuple[TriggerPool, dict, Path, bool]:
    """Load the cached pool for (victim, holding set, config) or run recovery and save it.

    `victim_id` names the model (its artifact hash, or a checkpoint's sha256); `holding_key`
    describes how D_h was drawn (dataset, ratio, seed), so a different D_h is a different pool.
    Returns (pool, meta, path, cached).
    """
    key = {"victim": victim_id, "algorithm": ALGORITHM, **holding_key}
    path = artifact_dir(artifacts_dir, "pools", config_hash(key, cfg))
    if is_complete(path, POOL_FILE):
        pool, meta = load_pool(path)
        return pool, meta, path, True
    result = recover_triggers(model, holding, num_classes, cfg, device=device, progress=progress)
    save_pool(path, result, {"victim_id": victim_id, "holding": holding_key, "algorithm": ALGORITHM})
    pool, meta = load_pool(path)
    return pool, meta, path, False
