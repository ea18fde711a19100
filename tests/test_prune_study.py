"""The trigger-channel study's fixed parts (victims, candidates, rule) and its channel scores."""

import torch
from torch import nn

from baeraser_lib.defenses import UnlearnConfig
from baeraser_lib.defenses import unlearning as U
from baeraser_lib.lab import path_study
from baeraser_lib.lab.prune_study import CANDIDATES, DEFAULT, DEV_VICTIMS, choose
from test_reset_study import victims_meeting


def _victims(met: dict[str, dict[str, int]]) -> dict:
    return victims_meeting(met, CANDIDATES)


def test_the_candidates_differ_from_today_s_default_in_r_alone():
    assert CANDIDATES["default"] == DEFAULT == UnlearnConfig()
    for name, cfg in CANDIDATES.items():
        assert UnlearnConfig(**{**cfg.__dict__, "channel_prune": 0.0}) == DEFAULT
        assert (cfg.channel_prune > 0) == (name != "default")
    assert DEV_VICTIMS == path_study.DEV_VICTIMS


def test_a_change_must_meet_more_bars_than_the_default():
    met = {"a": {"default": 3, "prune_0.1": 3}, "b": {"default": 2, "prune_0.2": 2}}
    assert choose(_victims(met)) == "default"
    met["b"].update({"prune_0.2": 3, "prune_0.1": 3})
    assert choose(_victims(met)) == "prune_0.1"  # one more pair: the smaller r of the two that met it



def test_the_channel_a_trigger_moves_scores_highest_and_is_the_one_zeroed():
    """Channel 0 passes the image on; channel 1 adds a large constant, so the stamp moves it little
    relative to its size: channel 0 scores higher and, at r = 0.5, is the filter zeroed."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.copy_(torch.tensor([0.0, 50.0]))
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(128, 2))

    class Corner:
        """Stands in for a TriggerPool: one entry, a white corner."""
        labels = [0]

        def __len__(self):
            return 1

        def stamp(self, i, x, gen):
            x = x.clone()
            x[..., :4, :4] = 1.0
            return x

    x = torch.rand(64, 1, 8, 8) * 0.2
    scores = U.trigger_channel_scores(model, Corner(), x, 16, 2, torch.Generator().manual_seed(0), "cpu")
    assert scores[conv][0] > 10 * scores[conv][1] > 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert U.prune_trigger_channels(model, Corner(), x, 0.5, 16, 2, torch.Generator().manual_seed(0), "cpu") == 1
    assert torch.all(conv.weight[0] == 0) and conv.bias[0] == 0
    assert torch.equal(conv.weight[1], before["0.weight"][1]) and conv.bias[1] == 50.0
    assert not conv._forward_hooks and model.training  # hooks removed, mode restored


def test_the_committed_choice_follows_the_rule_and_keeps_the_default():
    import json

    from baeraser_lib.lab.reports import REPO
    from test_reset_study import config_from_repr

    doc = json.loads((REPO / "reports" / "benchmarks" / "trigger_channels.json").read_text())
    assert {k: config_from_repr(v) for k, v in doc["candidates"].items()} == CANDIDATES
    assert set(doc["development"]) == set(DEV_VICTIMS)
    assert doc["chosen"] == choose(doc["development"]) == "default"
