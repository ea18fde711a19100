import dataclasses
import json
import os
import pickle

import pytest
import torch

from baeraser_lib import artifacts as A
from baeraser_lib import victims as V
from baeraser_lib.attacks import AttackSpec
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.errors import CheckpointError, ConfigError
from baeraser_lib.models import build_model

TINY = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=64)


def test_write_and_load_round_trip(tmp_path):
    m = build_model("resnet18", 10, 1, 4)
    path = A.write_artifact(tmp_path / "models" / "abc", m.state_dict(), {"note": "x"})
    meta = A.read_meta(path)
    assert meta["note"] == "x" and meta["format"] == A.FORMAT
    assert {"library_version", "git_commit", "created_at", "torch_version"} <= set(meta)
    other = A.load_weights(build_model("resnet18", 10, 1, 4), path / "weights.safetensors")
    assert all(torch.equal(other.state_dict()[k], v) for k, v in m.state_dict().items())
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["abc"]  # no temp folder left


def test_interrupted_write_leaves_no_artifact(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(A.json, "dump", boom)  # dies after the weights were written
    with pytest.raises(KeyboardInterrupt):
        A.write_artifact(tmp_path / "models" / "abc", {"w": torch.ones(2)}, {})
    assert list((tmp_path / "models").iterdir()) == []


def test_obtain_model_trains_once_then_loads_from_cache(fashion_root, tmp_path, monkeypatch):
    data = load_experiment_data("fashion_mnist", fashion_root)
    attack = AttackConfig()
    first = V.obtain_model(TINY, attack, data, tmp_path, device="cpu", progress=False)  # a device name works too
    assert not first.cached and first.path.parent.name == "victims"
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["train_config"]["width"] == 4 and meta["attack_config"]["name"] == "badnets"
    assert meta["trigger"]["size"] == 3 and meta["n_poisoned"] == 20 and meta["train_seconds"] > 0
    assert set(meta["metrics"]) == {"clean_acc", "asr", "robust_acc"}

    def no_training(*a, **k):
        raise AssertionError("trained again despite a cached artifact")

    monkeypatch.setattr(V, "fit", no_training)
    monkeypatch.setitem(V.ATTACKS, "badnets", AttackSpec(no_training, V.ATTACKS["badnets"].planted))
    again = V.obtain_model(TINY, attack, data, tmp_path, progress=False)
    assert again.cached and again.path == first.path
    assert torch.equal(again.trigger.pattern, first.trigger.pattern)
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in first.model.state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # a different config is not a hit
        V.obtain_model(TINY, AttackConfig(seed=1), data, tmp_path, progress=False)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": Evil()}, f)
    torch.save({"x": Evil()}, tmp_path / "evil_zip.pt")
    for p in (path, tmp_path / "evil_zip.pt"):
        with pytest.raises(CheckpointError, match="refusing checkpoint"):
            A.load_weights(build_model("small_cnn", 10, 1, 4), p)
    assert not marker.exists()


def test_plain_state_dict_pt_file_loads(tmp_path):
    m = build_model("small_cnn", 10, 1, 4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, tmp_path / "ok.pt")
    other = A.load_weights(build_model("small_cnn", 10, 1, 4), tmp_path / "ok.pt")
    assert torch.equal(other.conv1.weight, m.conv1.weight)


def test_corrupted_missing_and_mismatched_checkpoints(tmp_path):
    m = build_model("small_cnn", 10, 1, 4)
    path = A.write_artifact(tmp_path / "a", m.state_dict(), {}) / "weights.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="corrupted"):
        A.load_weights(build_model("small_cnn", 10, 1, 4), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        A.load_weights(m, tmp_path / "nope.safetensors")
    good = A.write_artifact(tmp_path / "b", m.state_dict(), {}) / "weights.safetensors"
    with pytest.raises(CheckpointError, match="shape mismatches.*conv1.weight"):
        A.load_weights(build_model("small_cnn", 10, 1, 8), good)
    with pytest.raises(CheckpointError, match="missing .* tensors"):
        A.load_weights(build_model("resnet18", 10, 1, 4), good)
    (tmp_path / "b" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted"):
        A.read_meta(tmp_path / "b")


def test_load_trained_rejects_a_folder_without_meta(tmp_path):
    with pytest.raises(CheckpointError, match="no meta.json"):
        V.load_trained(tmp_path)


def test_obtain_model_passes_how_it_trains_on_records_it_and_refuses_an_unknown_choice_first(fashion_root, tmp_path,
                                                                                          monkeypatch):
    data = load_experiment_data("fashion_mnist", fashion_root)
    real_fit, seen = V.fit, []

    def spy_fit(*a, **k):
        seen.append(("fit", k["precision"], k["layout"]))
        return real_fit(*a, **k)

    trojannn = V.ATTACKS["trojannn"]  # it starts from the clean model: obtain_model trains that first

    def spy_attack(*a, **k):  # the attack's own training gets the same choices
        seen.append(("attack", k["precision"], k["layout"]))
        return trojannn.fn(*a, **k)

    monkeypatch.setattr(V, "fit", spy_fit)
    monkeypatch.setitem(V.ATTACKS, "trojannn", dataclasses.replace(trojannn, fn=spy_attack))
    victim = V.obtain_model(TINY, AttackConfig(name="trojannn"), data, tmp_path, progress=False,
                            device=torch.device("cpu"), precision="fp32", layout="contiguous")
    assert seen == [("fit", "fp32", "contiguous"), ("attack", "fp32", "contiguous")]  # the clean start, then the attack
    for path in (victim.path, tmp_path / "clean" / victim.meta["started_from"]):
        meta = json.loads((path / "meta.json").read_text())
        assert (meta["precision"], meta["layout"], meta["precision_used"], meta["layout_used"]) == \
            ("fp32", "contiguous", "fp32", "contiguous")

    def no_training(*a, **k):
        raise AssertionError("started before checking its arguments")

    monkeypatch.setattr(V, "fit", no_training)
    monkeypatch.setitem(V.ATTACKS, "badnets", AttackSpec(no_training, V.ATTACKS["badnets"].planted))
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        V.obtain_model(TINY, AttackConfig(), data, tmp_path / "new", precision="fp16")
    with pytest.raises(ConfigError, match="unknown memory layout 'nhwc'"):
        V.obtain_model(TINY, None, data, tmp_path / "new", layout="nhwc")
    assert not (tmp_path / "new").exists()
