import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from baeraser_lib.attacks import ATTACKS
from baeraser_lib.attacks.badnets import make_trigger
from baeraser_lib.metrics import evaluate
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.defenses import networks as N
from baeraser_lib.defenses.pool import load_pool, obtain_pool, save_pool, TriggerPool
from baeraser_lib.defenses.recovery import RecoveryConfig, grid_offsets, recover_triggers
from baeraser_lib.errors import CheckpointError, ConfigError
from baeraser_lib.api import load_model
from baeraser_lib.victims import new_model

FAST = dict(form="patch", steps_per_stage=15, grid_size=3, search_steps=6, search_rounds=2, batch_size=32)


def plant(fashion_root, position, epochs=6, poison_rate=0.2):
    data = load_experiment_data("fashion_mnist", fashion_root, holding_ratio=0.25)
    train = TrainConfig(model="small_cnn", width=16, epochs=epochs, batch_size=32, lr=0.1)
    attack = AttackConfig(poison_rate=poison_rate, target_label=3, trigger_position=position)
    model = new_model(train)
    ATTACKS["badnets"].fn(model, data.train, data.info, attack, train, progress=False)
    return model.eval(), data


@pytest.fixture(scope="module")
def corner_victim(tmp_path_factory):
    from conftest import write_mnist_family

    root = tmp_path_factory.mktemp("rec-data")
    write_mnist_family(root, "FashionMNIST")
    return plant(root, "bottom_right")


def test_generator_output_shape_range_and_start():
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    start = torch.full((3, 27), 0.7)
    p = N.init_generators(gens, 64, 4, 32, 27, init_output=start, init_spread=0.01)
    out = N.generate(p, torch.rand(3, 10, 64), 4)
    assert out.shape == (3, 10, 27) and 0 <= out.min() and out.max() <= 1
    assert torch.allclose(out, start.unsqueeze(1).expand(3, 10, 27), atol=0.01)
    wide = N.generate(N.init_generators(gens, 64, 4, 32, 27), torch.rand(3, 10, 64), 4)
    assert wide.std(1).mean() > 0.05  # without a start, samples differ


def test_mine_estimate_is_near_zero_for_independent_and_grows_for_dependent_inputs():
    torch.manual_seed(0)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    p = {k: v.requires_grad_(True) for k, v in N.init_statistics(gens, 4, 4, 64).items()}
    opt = torch.optim.Adam(p.values(), lr=1e-3)
    ema = torch.zeros(2)
    for _ in range(300):
        d, d2 = torch.rand(2, 128, 4), torch.rand(2, 128, 4)
        g = torch.stack([torch.rand(128, 4), torch.sin(6 * d[1])])  # label 0 independent, label 1 dependent
        dv, surrogate, ema = N.mine_terms(p, d, d2, g, ema, 0.01)
        opt.zero_grad()
        (-surrogate.sum()).backward()
        opt.step()
    d, d2 = torch.rand(2, 2048, 4), torch.rand(2, 2048, 4)
    g = torch.stack([torch.rand(2048, 4), torch.sin(6 * d[1])])
    with torch.no_grad():
        dv, _, _ = N.mine_terms(p, d, d2, g, ema, 0.01)
    assert abs(dv[0]) < 0.1 and dv[1] > 0.5, dv


def test_grid_includes_corners():
    offs = {tuple(o) for o in grid_offsets(28, 28, 3, 5).tolist()}
    assert {(0, 0), (0, 25), (25, 0), (25, 25)} <= offs and len(offs) == 25


def test_recovery_never_receives_the_trigger_or_target():
    params = set(inspect.signature(recover_triggers).parameters)
    assert params == {"model", "holding", "num_classes", "cfg", "device", "mode", "progress"}
    assert not {"trigger", "target", "target_label"} & set(inspect.signature(obtain_pool).parameters)


def test_corner_backdoor_is_recovered_at_its_place(corner_victim):
    model, data = corner_victim
    res = recover_triggers(model, data.holding, 10, RecoveryConfig(**FAST), progress=False)
    assert 3 in res.kept and len(res.kept) <= 2, res.per_label
    assert res.offsets[3] == (25, 25)
    row = res.per_label[3]
    assert row["recovered_asr"] >= 0.8 and row["anomaly_index"] > 2


def test_random_position_backdoor_is_recovered(tmp_path):
    from conftest import write_mnist_family

    write_mnist_family(tmp_path, "FashionMNIST")
    model, data = plant(tmp_path, "random", epochs=15, poison_rate=0.3)  # random places are harder to learn
    trig = make_trigger(AttackConfig(target_label=3, trigger_position="random"), data.info)
    assert evaluate(model, data.evaluation, trig, 3)["asr"] > 0.8  # a real backdoor to recover
    res = recover_triggers(model, data.holding, 10, RecoveryConfig(**FAST), progress=False)
    assert 3 in res.kept, res.per_label
    rnd = recover_triggers(model, data.holding, 10, RecoveryConfig(**FAST, placement="random"), progress=False)
    assert 3 in rnd.kept and rnd.offsets[3] is None  # the authors' random stamping finds it too


def test_batched_equals_the_per_label_loop(corner_victim):
    model, data = corner_victim
    cfg = RecoveryConfig(**{**FAST, "steps_per_stage": 5}, prune=False)
    batched = recover_triggers(model, data.holding, 10, cfg, mode="batched", progress=False)
    looped = recover_triggers(model, data.holding, 10, cfg, mode="loop", progress=False)
    assert batched.kept == looped.kept
    for a, b in zip(batched.per_label, looped.per_label):
        assert a["offset"] == b["offset"]
        assert a["screen_asr"] == pytest.approx(b["screen_asr"], abs=1e-6)
        assert a["recovered_asr"] == pytest.approx(b["recovered_asr"], abs=0.02)
    noise = torch.rand(len(batched.kept), 16, cfg.noise_dim)
    assert torch.allclose(N.generate(batched.generators, noise, 4), N.generate(looped.generators, noise, 4),
                          atol=1e-3)


def test_pool_round_trip_and_cache(corner_victim, tmp_path):
    model, data = corner_victim
    cfg = RecoveryConfig(**FAST)
    key = {"dataset": "fashion_mnist", "holding_ratio": 0.25, "seed": 0, "n": len(data.holding)}
    pool, meta, path, cached = obtain_pool(model, "victim-x", data.holding, 10, cfg, tmp_path, key)
    assert not cached and pool.labels == meta["labels_kept"] and (path / "pool.safetensors").exists()
    again, _, path2, cached2 = obtain_pool(model, "victim-x", data.holding, 10, cfg, tmp_path, key)
    assert cached2 and path2 == path
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(pool.sample(0, 4, g1), again.sample(0, 4, g2))
    assert pool.sample(0, 4).shape == (4, 1, 3, 3)
    _, _, other, _ = obtain_pool(model, "victim-y", data.holding, 10, cfg, tmp_path, key)
    assert other != path  # another model is another pool


@pytest.mark.parametrize("kwargs,message", [
    ({"tau": 1.0}, "tau must lie in"),
    ({"tau": 0}, "tau must lie in"),
    ({"eps": (0.5, 1.2)}, "each ε of the staircase must lie in"),
    ({"eps": (0.9, 0.5)}, "must rise strictly"),
    ({"placement": "corner"}, "unknown placement"),
    ({"noise_dim": 30}, "equal chunks"),
    ({"hidden": 0}, "hidden must be a positive integer"),
])
def test_bad_recovery_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RecoveryConfig(**kwargs)


def test_bad_inputs_fail_before_compute(corner_victim):
    model, data = corner_victim
    with pytest.raises(ConfigError, match="larger than the 28×28 image"):
        recover_triggers(model, data.holding, 10, RecoveryConfig(form="patch", patch_size=29))
    tiny = TensorDataset(torch.rand(5, 1, 28, 28), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ConfigError, match="too small for recovery to split"):
        recover_triggers(model, tiny, 10, RecoveryConfig())
    with pytest.raises(ConfigError, match="num_classes says 7"):
        recover_triggers(model, data.holding, 7, RecoveryConfig())


def test_checkpoint_that_does_not_fit_the_architecture(corner_victim, tmp_path):
    from safetensors.torch import save_file

    model, _ = corner_victim
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert isinstance(load_model(tmp_path / "m.safetensors", "small_cnn", 10), nn.Module)
    with pytest.raises(CheckpointError, match="does not match the ResNet18 architecture"):
        load_model(tmp_path / "m.safetensors", "resnet18", 10)


def test_nan_stops_recovery_and_writes_nothing(corner_victim, tmp_path):
    _, data = corner_victim

    class NaNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            out = torch.zeros(len(x), 10) * self.w
            return out + x.flatten(1)[:, :1] * float("nan")

    key = {"dataset": "fashion_mnist"}
    with pytest.raises(ConfigError, match="NaN or inf"):  # refused before any compute
        obtain_pool(NaNModel(), "nan", data.holding, 10, RecoveryConfig(**FAST), tmp_path, key)
    assert not (tmp_path / "pools").exists() or not any((tmp_path / "pools").iterdir())
