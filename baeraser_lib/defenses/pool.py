"""The trigger pool: (label, generator, placement) triples that recovery kept, as an artifact.

Saved like models: `pool.safetensors` (the stacked generator weights) + `meta.json` (config,
labels, placements, per-label figures), written atomically; loading never unpickles.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..artifacts import artifact_dir, is_complete, read_meta, write_artifact
from ..config import config_hash
from ..errors import CheckpointError
from . import networks as N
from .recovery import RecoveryConfig, RecoveryResult, recover_triggers

POOL_FILE = "pool.safetensors"
ALGORITHM = "msa-2"  # bump when recovery's results change for the same config: old pools are not reused


@dataclass
class TriggerPool:
    """Recovered triggers: sample patches for pool entry i and stamp them at `offsets[i]`."""

    labels: list[int]
    offsets: list[tuple[int, int] | None]  # None: the trigger was recovered at random places
    generators: N.Params  # stacked weights, one slice per entry
    config: RecoveryConfig
    image_shape: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def sample(self, i: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n patches (n, C, s, s) from entry i's generator (n ≥ 2: BatchNorm uses batch statistics)."""
        if n < 2:
            raise ValueError("sample at least 2 patches at a time (the generator normalises over its batch)")
        c, s = self.image_shape[0], self.config.patch_size
        noise = torch.rand(1, n, self.config.noise_dim, generator=generator)
        return N.generate(N.select(self.generators, slice(i, i + 1)), noise, self.config.noise_chunks).view(n, c, s, s)

    @classmethod
    def from_result(cls, result: RecoveryResult) -> "TriggerPool":
        return cls(list(result.kept), [result.offsets[k] for k in result.kept], result.generators,
                   result.config, result.image_shape)


def save_pool(path: str | os.PathLike, result: RecoveryResult, extra_meta: dict | None = None) -> Path:
    """Write the pool of `result` (and its figures) as an artifact folder."""
    tensors = {f"gen.{k}": v for k, v in result.generators.items()} or {"empty": torch.zeros(0)}
    meta = {"kind": "trigger_pool", "recovery_config": asdict(result.config),
            "image_shape": list(result.image_shape), "num_classes": result.num_classes,
            "labels_kept": result.kept, "offsets": [result.offsets[k] for k in result.kept],
            "per_label": result.per_label, "stage_logs": result.stage_logs,
            "seconds_recovery": result.seconds, "mode": result.mode, **(extra_meta or {})}
    return write_artifact(path, tensors, meta, weights_name=POOL_FILE)


def load_pool(path: str | os.PathLike) -> tuple[TriggerPool, dict]:
    """Load a pool artifact folder: (pool, meta)."""
    path = Path(path)
    meta = read_meta(path)
    if meta.get("kind") != "trigger_pool":
        raise CheckpointError(f"{path} is not a trigger-pool artifact")
    cfg = RecoveryConfig(**meta["recovery_config"])
    try:
        tensors = load_file(str(path / POOL_FILE))
    except Exception as err:
        raise CheckpointError(f"{path / POOL_FILE} is missing or corrupted: {err}") from None
    gens = {k[len("gen."):]: v for k, v in tensors.items() if k.startswith("gen.")}
    labels = meta["labels_kept"]
    if any(v.shape[0] != len(labels) for v in gens.values()) or (labels and not gens):
        raise CheckpointError(f"{path}: generator tensors do not match the {len(labels)} labels kept")
    offsets = [tuple(o) if o is not None else None for o in meta["offsets"]]
    return TriggerPool(labels, offsets, gens, cfg, tuple(meta["image_shape"])), meta


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
