"""Nothing trusted that can be edited: sealed sidecars, configs that must hash to the folder's
name, finite weights, finite outputs, and no temp folders left behind for ever."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch
from torch import nn

from baeraser_lib import artifacts as A
from baeraser_lib import victims as V
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.errors import CheckpointError
from baeraser_lib.metrics import evaluate
from baeraser_lib.models import build_model

TINY = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def victim_folder(fashion_root, tmp_path_factory):
    """A tiny BadNets victim (target 0) saved by `obtain_model`: the folder every test edits a copy of."""
    root = tmp_path_factory.mktemp("art")
    data = load_experiment_data("fashion_mnist", fashion_root)
    return V.obtain_model(TINY, AttackConfig(), data, root, progress=False, track_epochs=False).path


@pytest.fixture
def victim(victim_folder, tmp_path):
    """A fresh copy of the victim folder, under the same hash name."""
    import shutil

    copy = tmp_path / "victims" / victim_folder.name
    shutil.copytree(victim_folder, copy)
    return copy


def edit(folder, change, reseal: bool = False) -> None:
    """Edit meta.json as a user or an attacker would; `reseal` also forges a matching seal."""
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    if reseal:
        meta = A.seal(meta, folder / meta[A.SEAL]["weights"]["file"])
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_fresh_artifact_loads_and_carries_its_seal(victim):
    meta = A.read_meta(victim)
    assert set(meta[A.SEAL]["fields"]) == set(meta) - {A.SEAL}
    assert V.load_trained(victim).target_label == 0


@pytest.mark.parametrize("field, change", [
    ("attack_config", lambda m: m["attack_config"].update(target_label=3)),
    ("trigger", lambda m: m.update(trigger=None)),
    ("metrics", lambda m: m["metrics"].update(asr=0.0)),
    ("train_config", lambda m: m["train_config"].update(width="4")),
    ("extra", lambda m: m.update(extra=1)),
    ("kind", lambda m: m.pop("kind")),
])
def test_an_edited_field_is_named(victim, field, change):
    edit(victim, change)
    with pytest.raises(CheckpointError, match=f"does not match its seal: field\\(s\\) '{field}'"):
        V.load_trained(victim)


def test_replaced_weights_are_caught(victim):
    from safetensors.torch import load_file, save_file

    state = load_file(str(victim / "weights.safetensors"))
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(victim / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="weights were replaced or corrupted"):
        V.load_trained(victim)


def test_a_missing_or_broken_seal_is_refused(victim):
    edit(victim, lambda m: m.pop(A.SEAL))
    with pytest.raises(CheckpointError, match="no valid seal"):
        V.load_trained(victim)


def test_a_forged_seal_still_cannot_change_the_target(victim):
    """Re-sealing an edited sidecar does not help: its configs no longer hash to the folder name."""
    edit(victim, lambda m: m["attack_config"].update(target_label=3), reseal=True)
    with pytest.raises(CheckpointError, match="hash to .*not to the folder's name"):
        V.find_model(victim.parent.parent, TINY, AttackConfig())


@pytest.mark.parametrize("field, change", [
    ("trigger", lambda m: m.update(trigger=None)),
    ("trigger", lambda m: m.update(trigger={"kind": "nope"})),
    ("train_config", lambda m: m.update(train_config=[1, 2])),
    ("attack_config", lambda m: m.pop("attack_config")),
    ("train_seconds", lambda m: m.update(train_seconds="fast")),
    ("metrics", lambda m: m.update(metrics=None)),
    ("kind", lambda m: m.update(kind="clean")),
])
def test_malformed_fields_behind_a_forged_seal_are_checkpoint_errors_naming_the_field(victim, field, change):
    edit(victim, change, reseal=True)
    with pytest.raises(CheckpointError, match=f"'{field}'"):
        V.load_trained(victim)


def test_non_finite_weights_are_refused_when_loaded(tmp_path):
    m = build_model("resnet18", 10, 1, 4)
    state = m.state_dict()
    state["linear.bias"] = state["linear.bias"].clone().fill_(float("nan"))
    path = A.write_artifact(tmp_path / "m", state, {})
    with pytest.raises(CheckpointError, match=r"NaN or inf in 1 tensors \(e\.g\. \['linear\.bias'\]\)"):
        A.load_weights(build_model("resnet18", 10, 1, 4), path / "weights.safetensors")


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[::2] = float("nan")
        return out


def test_evaluate_refuses_non_finite_outputs():
    """argmax turns NaN logits into class 0: a diverged model would score ASR 1.0 or 0.0."""
    from torch.utils.data import TensorDataset

    data = TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(8) % 10)
    with pytest.raises(FloatingPointError, match="NaN or inf on 4 of 8 images"):
        evaluate(NaNModel(), data)


def test_stale_temp_folders_are_removed_on_the_next_write_and_young_ones_kept(tmp_path):
    parent = tmp_path / "victims"
    old, young = parent / ".tmp-abc-killed", parent / ".tmp-def-live"
    for d in (old, young):
        d.mkdir(parents=True)
        (d / "weights.safetensors").write_bytes(b"partial")
    long_ago = time.time() - A.STALE_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    A.write_artifact(parent / "new", {"w": torch.ones(2)}, {})
    assert sorted(p.name for p in parent.iterdir()) == [".tmp-def-live", "new"]


def test_a_killed_idx_staging_leaves_nothing_that_survives_the_next_load(fashion_root, tmp_path):
    """SIGKILL mid-copy leaves a `.tmp-*` file; the next staging into that folder removes it."""
    import shutil

    from baeraser_lib.data import load_split

    root = tmp_path / "data"
    shutil.copytree(fashion_root, root)
    raw = next(root.rglob("raw"))
    partial = raw / ".tmp-t10k-images-idx3-ubyte.killed"
    partial.write_bytes(b"\x00\x00\x08")
    long_ago = time.time() - A.STALE_SECONDS - 60
    os.utime(partial, (long_ago, long_ago))
    for plain in raw.glob("*-ubyte"):
        plain.unlink()  # so staging writes again
    load_split("fashion_mnist", root, train=False)
    assert not list(raw.glob(".tmp-*"))


@pytest.fixture
def pool_folder(tmp_path):
    """A small pool artifact as `obtain_pool` names it: two kept labels, masks, no training."""
    from baeraser_lib.artifacts import config_hash
    from baeraser_lib.defenses.pool import ALGORITHM, save_pool
    from baeraser_lib.defenses.recovery import RecoveryConfig, RecoveryResult

    cfg = RecoveryConfig()
    result = RecoveryResult(cfg, (1, 28, 28), 10, [], [], {"w": torch.zeros(2, 3)}, [0, 3], {0: None, 3: None},
                            1.0, "batched", [0], {0: torch.ones(1, 28, 28), 3: torch.ones(1, 28, 28)})
    holding = {"dataset": "fashion_mnist", "holding_ratio": 0.05, "seed": 0, "n": 3000}
    path = tmp_path / "pools" / config_hash({"victim": "abc", "algorithm": ALGORITHM, **holding}, cfg)
    return save_pool(path, result, {"victim_id": "abc", "holding": holding, "algorithm": ALGORITHM})


def test_a_pool_loads_and_its_edited_labels_are_caught(pool_folder):
    from baeraser_lib.defenses.pool import load_pool

    assert load_pool(pool_folder)[0].labels == [0, 3]
    edit(pool_folder, lambda m: m.update(labels_kept=[0, 7]))
    with pytest.raises(CheckpointError, match="field\\(s\\) 'labels_kept'"):
        load_pool(pool_folder)


@pytest.mark.parametrize("field, change, message", [
    ("labels_kept", lambda m: m.update(labels_kept=[0, 12]), "'labels_kept' is malformed"),
    ("offsets", lambda m: m.update(offsets=[None]), "'offsets' is malformed"),
    ("victim_id", lambda m: m.update(victim_id="other"), "hash to .*not to the folder's name"),
    ("recovery_config", lambda m: m["recovery_config"].update(tau=float("nan")), "'recovery_config' is malformed"),
])
def test_a_forged_pool_sidecar_is_still_refused(pool_folder, field, change, message):
    from baeraser_lib.defenses.pool import load_pool

    edit(pool_folder, change, reseal=True)
    with pytest.raises(CheckpointError, match=message):
        load_pool(pool_folder)


def test_an_older_cache_is_sealed_after_its_checks_and_loads_again(victim, pool_folder, tmp_path):
    """`baeraser artifacts seal`: unsealed folders whose configs name them are sealed and load;
    one whose configs no longer name it is left alone, unchanged."""
    import shutil

    from baeraser_lib.defenses.pool import load_pool
    from baeraser_lib.lab.artifacts_command import main

    root = victim.parent.parent
    assert pool_folder.parent == root / "pools"  # both fixtures write under the same tmp_path
    stale = root / "victims" / "0123456789abcdef"
    shutil.copytree(victim, stale)
    for folder in (victim, root / "pools" / pool_folder.name, stale):
        edit(folder, lambda m: m.pop(A.SEAL))
    before = (stale / "meta.json").read_text()
    with pytest.raises(CheckpointError, match="baeraser artifacts seal"):
        V.load_trained(victim)
    assert main(["seal", str(root)]) == 0
    assert V.load_trained(victim).target_label == 0 and load_pool(root / "pools" / pool_folder.name)[0].labels == [0, 3]
    assert (stale / "meta.json").read_text() == before  # not its configs' folder: left alone
