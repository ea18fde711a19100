"""The stage-invariance study's fixed parts (victims, candidates, rule) and the stage taps."""

import pytest
import torch
from torch import nn

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.defenses.unlearning import FeatureTap, downsampling_layers
from baeraser_lib.errors import ConfigError
from baeraser_lib.lab import path_study
from baeraser_lib.lab.invariance_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from baeraser_lib.models import ResNet18
from test_reset_study import victims_meeting


def _victims(met: dict[str, dict[str, int]]) -> dict:
    return victims_meeting(met, CANDIDATES)


def test_the_candidates_differ_from_today_s_default_in_where_and_how_much_invariance_alone():
    assert CANDIDATES["default"] == DEFAULT == UnlearnConfig()
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "invariance_at": "penultimate", "invariance": 1.0}) == DEFAULT
        assert (cfg.invariance_at == "stages") == (name != "default")
    assert sorted(c.invariance for c in CANDIDATES.values()) == [1.0, 1.0, 2.0, 4.0]
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "stages_2": 3}, "b": {"default": 2, "stages_4": 2}}
    assert choose(_victims(met)) == "default"  # a tie keeps the default
    met["b"].update(stages_4=3, stages_2=3)
    assert choose(_victims(met)) == "stages_2"  # one more pair: the smaller γ of the two that met it


def test_resnet_stages_are_the_maps_entering_layers_2_to_4_each_once_then_the_penultimate_features():
    model = ResNet18(10, in_channels=1, width=4).eval()
    downs = downsampling_layers(model)
    assert len(downs) == 6  # each of layer2..4 opens with a strided convolution and a strided shortcut
    tap = FeatureTap(model, "stages")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        model(x)
        feats = tap.features
        want = [model.layer1(torch.relu(model.bn1(model.conv1(model.normalize(x)))))]
        want += [model.layer2(want[0]), model.layer3(model.layer2(want[0]))]
    assert [f.shape[1] for f in feats] == [4 * 28 * 28, 8 * 14 * 14, 16 * 7 * 7, 32]
    for f, w in zip(feats, want):
        assert torch.allclose(f, w.flatten(1))
    assert torch.allclose(feats[-1], model.features(x))
    model(x)  # a second forward starts afresh
    assert len(tap.features) == 4
    tap.remove()
    assert not model._forward_pre_hooks and all(not m._forward_pre_hooks for m in model.modules())


def test_the_penultimate_tap_alone_is_the_default_and_bad_models_are_refused_before_compute():
    model = ResNet18(10, in_channels=1, width=4).eval()
    tap = FeatureTap(model)
    with torch.no_grad():
        model(torch.rand(2, 1, 28, 28))
    assert len(tap.features) == 1 and tap.features[0].shape == (2, 32)
    with pytest.raises(ConfigError, match="invariance_at"):
        FeatureTap(model, "everywhere")
    with pytest.raises(ConfigError, match="shrinks the feature map"):
        FeatureTap(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), "stages")
    with pytest.raises(ConfigError, match="invariance_at"):
        UnlearnConfig(invariance_at="all")


def test_the_committed_choice_follows_the_rule_and_keeps_the_default():
    import json

    from baeraser_lib.lab.reports import REPO
    from test_reset_study import config_from_repr

    doc = json.loads((REPO / "reports" / "benchmarks" / "stage_invariance.json").read_text())
    assert {k: config_from_repr(v) for k, v in doc["candidates"].items()} == CANDIDATES
    assert set(doc["development"]) == set(DEV_VICTIMS)
    assert doc["chosen"] == choose(doc["development"]) == "default"
