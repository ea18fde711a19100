"""TrojanNN and IMC: option checks before compute, the trigger optimisations do what they claim,
and both plant a working backdoor on a tiny model through the shared pipeline."""

import json

import pytest
import torch

from baeraser_lib.attacks import ATTACKS
from baeraser_lib.attacks.badnets import make_trigger
from baeraser_lib.attacks.imc import IMCOptions, target_loss
from baeraser_lib.attacks.trojannn import (TrojanNNOptions, neuron_activation, optimise_for_neurons, patch_reach,
                                           select_neurons, trojan_trigger)
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.errors import ConfigError
from baeraser_lib.metrics import evaluate
from baeraser_lib import victims as V

TRAIN = TrainConfig(model="small_cnn", width=16, epochs=5, batch_size=32, lr=0.1)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from conftest import write_mnist_family

    root = tmp_path_factory.mktemp("trojan-data")
    write_mnist_family(root, "FashionMNIST")
    data = load_experiment_data("fashion_mnist", root)
    clean = V.new_model(TRAIN)
    from baeraser_lib.train import fit

    fit(clean, data.train, TRAIN, progress=False)
    return data, clean.eval()


def test_registry_lists_exactly_the_implemented_attacks():
    assert sorted(ATTACKS) == ["badnets", "blended", "imc", "sig", "trojannn", "wanet"]
    assert all(callable(spec.fn) and callable(spec.planted) for spec in ATTACKS.values())
    assert [n for n, s in ATTACKS.items() if not s.patch] == ["blended", "wanet", "sig"]
    assert ATTACKS["trojannn"].starts_from_clean and ATTACKS["imc"].starts_from_clean
    assert not ATTACKS["badnets"].starts_from_clean


@pytest.mark.parametrize("options, message", [
    ({"neurons": 0}, "neurons must be a positive integer"),
    ({"steps": 2.5}, "steps must be a positive integer"),
    ({"lr": -1}, r"lr must lie in \(0, "),
    ({"neuron": 3}, r"unknown option\(s\) \['neuron'\]"),
])
def test_bad_options_fail_when_the_config_is_built(options, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(name="trojannn", options=options)


def test_unknown_options_and_attacks_are_named():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['neurons'\] for attack 'badnets'; it takes \['density"):
        AttackConfig(options={"neurons": 2})
    with pytest.raises(ConfigError, match="unknown attack 'trojan'.*imc"):
        AttackConfig(name="trojan")
    with pytest.raises(ConfigError, match="trigger_steps"):
        AttackConfig(name="imc", options={"trigger_steps": 0})


def test_layer_and_neuron_count_are_checked_against_the_model_before_any_training(tmp_path, monkeypatch):
    def no_compute(*a, **k):
        raise AssertionError("computed before validating")

    monkeypatch.setattr(V, "fit", no_compute)
    too_many = AttackConfig(name="trojannn", options={"neurons": 10_000})
    with pytest.raises(ConfigError, match="10000 neurons requested but layer 'linear' has only 512"):
        V.check_attack(TRAIN, too_many)
    with pytest.raises(ConfigError, match="no layer 'fc'.*conv1"):
        V.check_attack(TRAIN, AttackConfig(name="imc", options={"layer": "fc"}))
    with pytest.raises(ConfigError, match="is a ReLU|is a Normalize"):
        V.check_attack(TRAIN, AttackConfig(name="trojannn", options={"layer": "normalize"}))
    V.check_attack(TRAIN, AttackConfig(name="trojannn", options={"layer": "conv2", "neurons": 32}))
    # obtain_model runs the same checks first: no data split, no clean model, no training
    with pytest.raises(ConfigError, match="has only 512"):
        V.obtain_model(TRAIN, too_many, None, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_selected_neurons_have_the_largest_outgoing_weights(setting):
    _, clean = setting
    chosen = select_neurons(clean, "linear", 3)
    scores = clean.linear.weight.abs().sum(0)
    assert set(chosen.tolist()) == set(scores.topk(3).indices.tolist())
    conv = select_neurons(clean, "conv2", 2)
    assert set(conv.tolist()) == set(clean.conv2.weight.abs().sum((1, 2, 3)).topk(2).indices.tolist())


@pytest.mark.parametrize("layer", ["linear", "conv2"])
def test_trojannn_trigger_raises_the_chosen_neurons_well_above_the_start(setting, layer):
    data, clean = setting
    attack = AttackConfig(name="trojannn", options={"layer": layer, "steps": 60})
    before = {k: v.clone() for k, v in clean.state_dict().items()}
    trigger, details = trojan_trigger(clean, data.train, data.info, attack, attack.resolved_options(),
                                      torch.device("cpu"), progress=False)
    start = torch.tensor(details["activation_start"])
    end = torch.tensor(details["activation_end"])
    assert (end > 2 * start.clamp(min=0.05)).all() and (end - start).mean() > 0.3, details
    assert details["neuron_loss"][-1] < details["neuron_loss"][0]
    assert trigger.pattern.shape == (1, 3, 3) and 0 <= trigger.pattern.min() and trigger.pattern.max() <= 1
    assert not torch.equal(trigger.pattern, make_trigger(attack, data.info).pattern)
    assert all(torch.equal(before[k], v) for k, v in clean.state_dict().items())  # model untouched
    # the figures are recomputable from the returned trigger
    x = data.train.tensors[0][:64] if hasattr(data.train, "tensors") else None
    if x is not None:
        act = neuron_activation(clean, layer, torch.tensor(details["neurons"]), trigger.apply(x))
        assert act.shape == (64, 2)


def test_optimising_towards_a_lower_target_activation_lowers_it(setting):
    data, clean = setting
    attack = AttackConfig(name="trojannn")
    x = torch.stack([data.train[i][0] for i in range(64)])
    start = make_trigger(attack, data.info)
    _, reach = patch_reach(clean, "linear", x, start)
    assert 0 < reach.sum() < len(reach)  # the small CNN keeps space: a corner patch sees few inputs
    neurons = select_neurons(clean, "linear", 2, reach)
    assert reach[neurons].all()
    high, d_high = optimise_for_neurons(clean, start, x, "linear", neurons,
                                        TrojanNNOptions(steps=40, target_activation=20.0), torch.device("cpu"), False)
    low, d_low = optimise_for_neurons(clean, start, x, "linear", neurons,
                                      TrojanNNOptions(steps=40, target_activation=0.01), torch.device("cpu"), False)
    assert sum(d_high["activation_end"]) > sum(d_low["activation_end"])


def _victim(setting, tmp_path, name, **options):
    data, _ = setting
    attack = AttackConfig(name=name, poison_rate=0.2, options={"steps": 40, **options})
    return data, attack, V.obtain_model(TRAIN, attack, data, tmp_path, progress=False)


def test_trojannn_plants_a_working_backdoor_on_a_tiny_model(setting, tmp_path):
    data, attack, victim = _victim(setting, tmp_path, "trojannn")
    m = evaluate(victim.model, data.evaluation, victim.trigger, 0)
    assert m["asr"] > 0.9 and m["clean_acc"] > 0.8, m
    meta = json.loads((victim.path / "meta.json").read_text())
    assert meta["started_from"] == V.model_path(tmp_path, TRAIN, None).name  # retrained the clean model
    assert meta["attack_config"]["options"] == {"steps": 40}
    assert meta["attack_details"]["neurons"] and meta["attack_details"]["initial_trigger"]["size"] == 3
    assert len(meta["history"]) == TRAIN.epochs and "eval_asr" in meta["history"][0]
    again = V.find_model(tmp_path, TRAIN, attack)
    assert torch.equal(again.trigger.pattern, victim.trigger.pattern)


def test_imc_trigger_loss_decreases_and_the_backdoor_works(setting, tmp_path):
    data, attack, victim = _victim(setting, tmp_path, "imc", trigger_steps=10)
    history = victim.meta["history"]
    assert all(r["trigger_loss_after"] < r["trigger_loss_before"] for r in history), history
    losses = [r["trigger_loss_before"] for r in history]
    assert losses[-1] < losses[0] and losses == victim.meta["attack_details"]["trigger_loss"]
    m = evaluate(victim.model, data.evaluation, victim.trigger, 0)
    assert m["asr"] > 0.9 and m["clean_acc"] > 0.8, m
    # the saved trigger is the final co-optimised one, not TrojanNN's starting point
    start = victim.meta["attack_details"]["trojannn_trigger"]["pattern"]
    assert not torch.equal(victim.trigger.pattern, torch.tensor(start))
    assert target_loss(victim.model, victim.trigger, data.evaluation.tensors[0][:64] if hasattr(
        data.evaluation, "tensors") else torch.stack([data.evaluation[i][0] for i in range(64)]), 0) < losses[0]


def test_imc_options_extend_trojannn_options():
    opts = AttackConfig(name="imc", options={"neurons": 3, "trigger_steps": 5}).resolved_options()
    assert isinstance(opts, IMCOptions) and isinstance(opts, TrojanNNOptions)
    assert (opts.neurons, opts.trigger_steps, opts.layer) == (3, 5, "linear")


def test_option_defaults_name_the_same_victim_as_spelled_out_defaults(tmp_path):
    implicit = V.model_path(tmp_path, TRAIN, AttackConfig(name="imc"))
    explicit = V.model_path(tmp_path, TRAIN, AttackConfig(name="imc", options={"neurons": 2, "layer": "linear"}))
    assert implicit == explicit
    assert V.model_path(tmp_path, TRAIN, AttackConfig(name="imc", options={"neurons": 3})) != implicit
    assert V.model_path(tmp_path, TRAIN, AttackConfig(name="trojannn")) != implicit


def test_imc_trains_every_epoch_on_poison_stamped_with_that_epochs_trigger(setting, monkeypatch):
    import importlib

    I = importlib.import_module("baeraser_lib.attacks.imc")  # the module (the package exports the function)

    data, clean = setting
    seen = []

    def fake_fit(model, train_set, cfg, device=None, epoch_end=None, progress=True, desc="", epoch_start=None,
                 precision="auto", layout="auto"):
        history = []
        for epoch in (1, 2):
            ds, figs = epoch_start(model, epoch)
            x, _ = ds.tensors
            seen.append(x.clone())
            history.append({"epoch": epoch, **figs})
        return history

    monkeypatch.setattr(I, "fit", fake_fit)
    attack = AttackConfig(name="imc", poison_rate=0.2, options={"steps": 5, "trigger_steps": 5})
    result = I.imc(clean, data.train, data.info, attack, TRAIN, torch.device("cpu"), progress=False)
    idx = result.poisoned_indices
    final = result.trigger.pattern.expand(len(idx), 1, 3, 3)
    assert torch.equal(seen[1][idx][:, :, -3:, -3:], final)  # the last epoch used the returned trigger
    assert not torch.equal(seen[0][idx][:, :, -3:, -3:], final)  # the first used an earlier one
    rest = torch.ones(len(seen[1]), dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(seen[1][rest], data.train.tensors[0][rest] if hasattr(data.train, "tensors")
                       else torch.stack([data.train[i][0] for i in range(len(data.train))])[rest])
