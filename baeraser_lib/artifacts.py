"""Artifacts on disk: safetensors weights + a JSON sidecar, in a folder named by a config hash.

Writes are atomic (a temp folder renamed into place), so an interrupted run leaves no half
artifact, and a temp folder left by a killed run is removed by the next write beside it.
Checkpoints are untrusted input: loading reads safetensors, or a PyTorch file with
`weights_only=True`; it never unpickles arbitrary objects, and it checks every tensor name and
shape against the architecture, and that every value is finite, before touching the model.

The sidecar is sealed: `meta.json` carries a digest of each of its fields and of the weights file,
and `read_meta` refuses a folder whose fields or weights no longer match (naming the field). The
loaders of each kind then check that the configs in the sidecar hash to the folder's name, so an
edited target label, trigger or list of labels is an error, never a silently different experiment.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ._version import __version__
from .atomic import STALE_SECONDS, remove_stale_temps  # noqa: F401 (STALE_SECONDS: re-exported)
from .errors import CheckpointError

FORMAT = "baeraser-artifact/1"
META = "meta.json"
SEAL = "seal"  # the sidecar's own key: {"weights": {"file", "sha256"}, "fields": {name: digest}}


def git_commit() -> str:
    """The commit of the library's checkout (with `-dirty` if it has local changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    return {"format": FORMAT, "library_version": __version__, "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (first 16 hex digits): the identity of an external checkpoint."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def artifact_dir(root: str | os.PathLike, kind: str, digest: str) -> Path:
    return Path(root) / kind / digest


def is_complete(path: Path, weights_name: str = "weights.safetensors") -> bool:
    return (path / META).is_file() and (path / weights_name).is_file()


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def seal(meta: dict, weights: Path) -> dict:
    """`meta` (JSON-ready) with its seal: a digest of each field and of the weights file."""
    meta = json.loads(json.dumps({k: v for k, v in meta.items() if k != SEAL}))  # as a reader will see it
    full = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    return {**meta, SEAL: {"weights": {"file": Path(weights).name, "sha256": full},
                           "fields": {k: _digest(v) for k, v in meta.items()}}}


def write_artifact(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict,
                   weights_name: str = "weights.safetensors") -> Path:
    """Atomically create folder `path` holding `weights_name` and a sealed meta.json (+ provenance)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / weights_name))
        with open(tmp / META, "w") as f:
            json.dump(seal({**meta, **provenance()}, tmp / weights_name), f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o755)
        if path.exists():  # an identical artifact appeared meanwhile: keep the first one
            shutil.rmtree(tmp)
        else:
            try:
                os.rename(tmp, path)
            except OSError:  # another process (a parallel run of a grid) renamed its copy first
                if not is_complete(path, weights_name):
                    raise
                shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON sidecar of an artifact folder, checked for format and against its seal: every
    field and the weights file must be as they were written. CheckpointError names what differs."""
    file = Path(path) / META
    if not file.is_file():
        raise CheckpointError(f"no {META} in {path}: not an artifact folder (or an incomplete one)")
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is corrupted ({err}); delete the folder to rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not a {FORMAT} sidecar")
    check_seal(Path(path), meta)
    return meta


def check_seal(folder: Path, meta: dict) -> None:
    """CheckpointError unless `meta`'s fields and the weights file match the seal written with them."""
    file = folder / META
    s = meta.get(SEAL)
    try:
        fields, weights = s["fields"], s["weights"]
        name, want = weights["file"], weights["sha256"]
        assert isinstance(fields, dict) and isinstance(name, str) and isinstance(want, str)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    except (TypeError, KeyError, AssertionError):
        raise CheckpointError(f"{file} has no valid seal (field {SEAL!r}): it was edited, or written by a version "
                              f"before sidecars were sealed (`baeraser artifacts seal ROOT` seals those after checking "
                              f"them); otherwise delete the folder to rebuild it") from None
    body = {k: v for k, v in meta.items() if k != SEAL}
    edited = sorted(k for k in body if k not in fields or _digest(body[k]) != fields[k])
    removed = sorted(set(fields) - set(body))
    if edited or removed:
        what = ", ".join([f"{k!r} (edited or added)" for k in edited] + [f"{k!r} (removed)" for k in removed])
        raise CheckpointError(f"{file} does not match its seal: field(s) {what}. Sidecars are not edited "
                              f"by hand; delete the folder to rebuild it")
    weights_file = folder / name
    if not weights_file.is_file():
        raise CheckpointError(f"{folder}: the weights file {name} that the seal names is missing")
    if hashlib.sha256(weights_file.read_bytes()).hexdigest() != want:
        raise CheckpointError(f"{weights_file} does not match the sha256 sealed in {file}: the weights were "
                              f"replaced or corrupted; delete the folder to rebuild it")


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, or a PyTorch file read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} is corrupted or not safetensors: {err}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for objects that would run code, zip errors, ...
        raise CheckpointError(
            f"refusing checkpoint {path}: it is not a plain tensor file that loads with weights_only=True "
            f"(it may hold arbitrary Python objects, or be corrupted). Save a state_dict with safetensors. "
            f"[{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}]"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint into `model` after checking every tensor name and shape."""
    state = load_state(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]  # in the model's order: stable messages
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
        raise CheckpointError(f"checkpoint {path} does not match the {type(model).__name__} architecture: "
                              + "; ".join(parts))
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"checkpoint {path} holds NaN or inf in {len(bad)} tensors (e.g. {bad[:3]}): "
                              f"a model that diverged cannot be scored or defended")
    model.load_state_dict(state, strict=True)
    return model


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state` that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def meta_field(folder: str | os.PathLike, meta: dict, name: str, parse=lambda v: v, required: bool = True):
    """`parse(meta[name])`, or a CheckpointError naming the field when it is missing or malformed."""
    if name not in meta:
        if required:
            raise CheckpointError(f"{Path(folder) / META}: field {name!r} is missing")
        return None
    try:
        return parse(meta[name])
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, AssertionError) as err:
        raise CheckpointError(f"{Path(folder) / META}: field {name!r} is malformed ({type(err).__name__}: "
                              f"{err})") from None


def check_folder_name(folder: str | os.PathLike, digest: str, fields: str) -> None:
    """CheckpointError unless a hash-named folder (16 hex digits) is named `digest`: the configs in
    its sidecar (`fields`, for the message) must be those that named it."""
    name = Path(folder).name
    if len(name) == 16 and all(c in "0123456789abcdef" for c in name) and name != digest:
        raise CheckpointError(f"{folder}: the sidecar's {fields} hash to {digest}, not to the folder's name: "
                              f"the sidecar does not describe this artifact; delete the folder to rebuild it")


def config_hash(*parts) -> str:
    """A short stable hash of dataclasses/dicts: the artifact folder name."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                      sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
