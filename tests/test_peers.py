"""The peers beside BAERASER (issue #16, started): Neural Cleanse on a tiny planted backdoor."""

import dataclasses

import pytest
import torch

from baeraser_lib import defend
from baeraser_lib.attacks import ATTACKS
from baeraser_lib.config import AttackConfig
from baeraser_lib.defenses import DEFENSES, FinetuneConfig, NCConfig
from baeraser_lib.defenses.nc import nc_flagged, stamped_share
from baeraser_lib.errors import ConfigError
from baeraser_lib.metrics import evaluate

from test_trigger_agnostic import planted, tiny_data  # noqa: F401  (the tiny victim and its data)

ATTACK = AttackConfig(poison_rate=0.2, target_label=3)


def test_nc_is_registered_as_a_peer_with_the_papers_settings():
    spec = DEFENSES["nc"]
    assert spec.role == "peer" and spec.config is NCConfig and "S&P 2019" in spec.cite
    cfg = NCConfig()
    assert (cfg.threshold, cfg.stamp_fraction, cfg.search.cost_up, cfg.search.mask_asr) == (2.0, 0.2, 1.5, 0.99)
    with pytest.raises(ConfigError):
        NCConfig(stamp_fraction=1.5)


def test_nc_flags_by_the_mad_of_mask_norms_below_the_median_only():
    rows = [{"label": k, "mask_size": s} for k, s in enumerate([30, 31, 29, 32, 2, 30, 90, 28])]
    assert nc_flagged(rows, 2.0) == [4]  # 90 is an outlier too, but above the median: not a target


def test_stamped_share_stamps_the_fraction_and_keeps_the_rest():
    x = torch.zeros(50, 1, 8, 8)
    mask, pattern = torch.zeros(1, 8, 8), torch.ones(1, 8, 8)
    mask[:, :2, :2] = 1
    out = stamped_share(x, [(mask, pattern)], 0.2, torch.Generator().manual_seed(0))
    assert int((out.flatten(1).sum(1) > 0).sum()) == 10 and x.sum() == 0


def test_nc_finds_the_target_and_lowers_the_asr_through_defend(tiny_data):  # noqa: F811
    model, trigger = planted(tiny_data, ATTACK)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = NCConfig(finetune=FinetuneConfig(epochs=5, batch_size=32, lr=0.05))
    out = defend(model, tiny_data.holding, 10, "nc", cfg, progress=False)
    assert out.method == "nc" and out.backdoored and 3 in out.flagged, out.history[:10]
    rule = ATTACKS["badnets"].target_rule(ATTACK, 10)  # the evaluation side: only now the truth is read
    asr_before = evaluate(model, tiny_data.evaluation, trigger, rule)["asr"]
    asr_after = evaluate(out.model, tiny_data.evaluation, trigger, rule)["asr"]
    assert asr_before > 0.8 and asr_after < asr_before / 2, (asr_before, asr_after)
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert out.seconds["total"] >= out.seconds["reverse"] > 0


def test_nc_leaves_a_model_with_no_outlier_alone(tiny_data, monkeypatch):  # noqa: F811
    import importlib

    NC = importlib.import_module("baeraser_lib.defenses.nc")  # the module (the package re-exports its function)

    model, _ = planted(tiny_data, ATTACK)
    flat = [{"label": k, "mask_size": 10.0, "mask": torch.zeros(1, 28, 28), "pattern": torch.zeros(1, 28, 28),
             "mask_asr": 0.9, "mask_steps": 1} for k in range(10)]
    monkeypatch.setattr(NC, "reverse_masks", lambda *a, **k: [dict(r) for r in flat])
    out = NC.nc(model, tiny_data.holding, 10, dataclasses.replace(NCConfig()), progress=False)
    assert out.backdoored is False and out.flagged == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), out.model.state_dict().values()))
