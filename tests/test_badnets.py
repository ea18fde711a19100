import torch
from torch.utils.data import TensorDataset

from baeraser_lib.attacks import ATTACKS
from baeraser_lib.attacks.badnets import make_trigger, poison
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import dataset_info, load_experiment_data
from baeraser_lib.metrics import evaluate
from baeraser_lib.victims import new_model


def test_poison_stamps_and_relabels_exactly_the_chosen_share():
    x = torch.rand(200, 1, 28, 28) * 0.5
    y = torch.randint(1, 10, (200,))
    cfg = AttackConfig(poison_rate=0.05, target_label=0, seed=3)
    trig = make_trigger(cfg, dataset_info("fashion_mnist"))
    poisoned, idx = poison(TensorDataset(x, y), trig, cfg)
    px, py = poisoned.tensors
    assert len(idx) == 10 == len(set(idx.tolist()))
    assert (py[idx] == 0).all() and (py != y).sum() == 10
    assert torch.equal(px[idx][:, :, -3:, -3:], trig.pattern.expand(10, 1, 3, 3))
    rest = torch.ones(200, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(px[rest], x[rest]) and torch.equal(py[rest], y[rest])
    assert torch.equal(x, TensorDataset(x, y).tensors[0])  # the input set is not modified
    _, idx2 = poison(TensorDataset(x, y), trig, cfg)
    assert torch.equal(idx, idx2)  # seeded


def test_trigger_pattern_is_fixed_by_the_seed_and_has_the_image_channels():
    a = make_trigger(AttackConfig(seed=1), dataset_info("cifar10"))
    b = make_trigger(AttackConfig(seed=1), dataset_info("cifar10"))
    assert a.pattern.shape == (3, 3, 3) and torch.equal(a.pattern, b.pattern)
    assert 0 <= a.pattern.min() and a.pattern.max() <= 1


def test_badnets_plants_a_working_backdoor_on_a_tiny_model(fashion_root):
    data = load_experiment_data("fashion_mnist", fashion_root)
    train = TrainConfig(model="small_cnn", width=16, epochs=6, batch_size=32, lr=0.1)
    attack = AttackConfig(poison_rate=0.2)  # a 400-image training set needs a larger share
    model = new_model(train)
    result = ATTACKS["badnets"].fn(model, data.train, data.info, attack, train, progress=False)
    m = evaluate(model, data.evaluation, result.trigger, attack.target_label)
    assert m["asr"] > 0.9 and m["clean_acc"] > 0.8, m
    assert len(result.history) == 6
