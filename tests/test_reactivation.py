"""The reactivation check (issue #18): does a backdoor come back when the model is re-tuned?"""

import dataclasses

import pytest
import torch

from baeraser_lib.errors import ConfigError
from baeraser_lib.reactivation import ReactivationConfig, attacker_set, compare, reactivation
from baeraser_lib.targets import TargetRule
from baeraser_lib.train import fit
from baeraser_lib.victims import new_model
from baeraser_lib.config import AttackConfig

from test_trigger_agnostic import TRAIN, planted, tiny_data  # noqa: F401  (the tiny victim and its data)

ATTACK = AttackConfig(poison_rate=0.2, target_label=3)
# 400 training images: the attacker draws 200, 6 of them poisoned, and re-tunes briefly
SMALL = ReactivationConfig(n_images=200, n_poisoned=6, epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def victim(tiny_data):  # noqa: F811
    return planted(tiny_data, ATTACK)


@pytest.fixture(scope="module")
def clean_model(tiny_data):  # noqa: F811
    model = new_model(TRAIN)
    fit(model, tiny_data.train, TRAIN, progress=False)
    return model.eval()


def test_the_attacker_set_poisons_the_stated_number_with_the_rules_label(victim, tiny_data):  # noqa: F811
    _, trigger = victim
    x, y, poisoned = attacker_set(tiny_data.train, trigger, 3, SMALL)
    assert x.shape[0] == 200 and int(poisoned.sum()) == 6
    assert (y[poisoned] == 3).all()
    x2, y2, p2 = attacker_set(tiny_data.train, trigger, 3, SMALL)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(poisoned, p2)  # seeded
    # the stamped images differ from their originals; the others are untouched training images
    xs, ys = attacker_set(tiny_data.train, trigger, 3, dataclasses.replace(SMALL, n_poisoned=1))[:2]
    assert not torch.equal(xs, x)


class Unchanged:
    """A trigger that stamps nothing, so a poisoned image can be found again in the training set."""

    def apply(self, x, generator=None):
        return x.clone()


def test_all_to_all_relabels_each_poisoned_image_to_the_next_class(tiny_data):  # noqa: F811
    from baeraser_lib.data import as_tensors

    xa, ya = as_tensors(tiny_data.train)
    x, y, poisoned = attacker_set(tiny_data.train, Unchanged(), TargetRule.all_to_all(10), SMALL)
    assert int(poisoned.sum()) == 6
    for i in torch.nonzero(poisoned).flatten().tolist():
        j = int(torch.nonzero((xa == x[i]).flatten(1).all(1)).flatten()[0])
        assert int(y[i]) == (int(ya[j]) + 1) % 10


def test_a_backdoored_model_comes_back_and_a_clean_one_stays_below_it(victim, clean_model, tiny_data):  # noqa: F811
    model, trigger = victim
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = reactivation(model, tiny_data.train, tiny_data.evaluation, trigger, 3, SMALL, device="cpu")
    ref = reactivation(clean_model, tiny_data.train, tiny_data.evaluation, trigger, 3, SMALL, device="cpu")
    assert bad["asr_before"] > 0.8 and bad["asr_after"] > 0.8
    assert ref["asr_before"] < 0.3
    assert ref["asr_after"] < bad["asr_after"] - 0.2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched
    table = compare({"none": bad}, ref)
    assert table["none"]["gap"] == pytest.approx(bad["asr_after"] - ref["asr_after"])
    assert table["none"]["reference_asr_after"] == ref["asr_after"]


def test_the_query_only_attacker_uses_the_models_own_predictions(victim, tiny_data, monkeypatch):  # noqa: F811
    import baeraser_lib.reactivation as R

    model, trigger = victim
    seen = {}

    def spy(m, x, y, cfg, device=None, progress=False):
        seen["y"] = y
        return m

    monkeypatch.setattr(R, "retune", spy)
    cfg = dataclasses.replace(SMALL, labels="queried")
    reactivation(model, tiny_data.train, tiny_data.evaluation, trigger, 3, cfg, device="cpu")
    x, y, poisoned = attacker_set(tiny_data.train, trigger, 3, cfg)
    from baeraser_lib.train import predict

    assert torch.equal(seen["y"][~poisoned], predict(model, x[~poisoned]))
    assert (seen["y"][poisoned] == 3).all()


@pytest.mark.parametrize("bad", [dict(n_poisoned=0), dict(n_images=10, n_poisoned=11), dict(labels="stolen"),
                                 dict(lr=float("nan")), dict(epochs=0), dict(momentum=1.0)])
def test_bad_settings_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        ReactivationConfig(**bad)


def test_more_images_than_the_training_set_is_an_error_before_compute(victim, tiny_data, monkeypatch):  # noqa: F811
    import baeraser_lib.reactivation as R

    model, trigger = victim
    monkeypatch.setattr(R, "retune", lambda *a, **k: pytest.fail("re-tuning started"))
    with pytest.raises(ConfigError, match="training set has"):
        reactivation(model, tiny_data.train, tiny_data.evaluation, trigger, 3, ReactivationConfig(n_images=10**6))
