"""`baeraser artifacts seal ROOT`: seal the sidecars of an artifact cache written before sidecars
were sealed, so it loads again without retraining.

A folder is sealed only if its sidecar still describes it: a model's configs must hash to the
folder's name (a pool's victim, holding set and recovery config likewise) and its weights must be
finite; it is then loaded as any sealed artifact would be. Anything else is listed and left
alone (delete it to rebuild it). Folders that already carry a seal are not touched.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..artifacts import META, SEAL, config_hash, load_state, nonfinite_tensors, seal
from ..atomic import atomic_open
from ..errors import CheckpointError, ConfigError

KINDS = ("clean", "victims", "pools", "defended")


def _expected_name(kind: str, meta: dict) -> str | None:
    """The folder name the sidecar's configs give (None where the name is not a config hash)."""
    if kind in ("clean", "victims"):
        from ..config import AttackConfig, TrainConfig
        from ..victims import model_path

        train = TrainConfig(**meta["train_config"])
        attack = AttackConfig(**meta["attack_config"]) if meta.get("attack_config") else None
        return model_path(".", train, attack).name
    if kind == "pools":
        from ..defenses.recovery import RecoveryConfig

        key = {"victim": meta["victim_id"], "algorithm": meta["algorithm"], **meta["holding"]}
        return config_hash(key, RecoveryConfig(**meta["recovery_config"]))
    return None


def seal_legacy(root: str | Path) -> dict[str, list[str]]:
    """Seal every unsealed artifact folder under `root` whose sidecar still describes it."""
    from ..defenses.pool import POOL_FILE, load_pool
    from ..victims import load_trained

    out = {"sealed": [], "already sealed": [], "left alone": []}
    for kind in KINDS:
        for folder in sorted(p for p in (Path(root) / kind).glob("*") if p.is_dir() and not p.name.startswith(".")):
            name = f"{kind}/{folder.name}"
            try:
                meta = json.loads((folder / META).read_text())
                if SEAL in meta:
                    out["already sealed"].append(name)
                    continue
                weights = folder / (POOL_FILE if kind == "pools" else "weights.safetensors")
                if _expected_name(kind, meta) not in (None, folder.name):
                    raise CheckpointError("its configs do not hash to its folder's name (stale or edited)")
                bad = nonfinite_tensors(load_state(weights))
                if bad:
                    raise CheckpointError(f"NaN or inf in {bad[:3]}")
                original = (folder / META).read_text()
                with atomic_open(folder / META) as f:
                    json.dump(seal(meta, weights), f, indent=2, sort_keys=True)
                try:  # it must now load as any sealed artifact does
                    if kind in ("clean", "victims"):
                        load_trained(folder)
                    elif kind == "pools":
                        load_pool(folder)
                except (CheckpointError, ConfigError):
                    with atomic_open(folder / META) as f:
                        f.write(original)
                    raise
                out["sealed"].append(name)
            except (OSError, KeyError, TypeError, ValueError) as err:  # CheckpointError, ConfigError, JSON errors
                out["left alone"].append(f"{name}: {type(err).__name__}: {err}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baeraser artifacts", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("seal", help="seal the sidecars of an older artifact cache")
    s.add_argument("root", type=Path, help="the artifacts folder, e.g. artifacts/")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"baeraser artifacts: {args.root} is not a folder")
        return 2
    out = seal_legacy(args.root)
    for line in out["left alone"]:
        print(f"left alone: {line}")
    print(f"{len(out['sealed'])} sealed, {len(out['already sealed'])} already sealed, "
          f"{len(out['left alone'])} left alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
