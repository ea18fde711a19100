"""The attack families beyond the square patch: blended, WaNet, SIG, sparse / random-place /
all-to-all BadNets; their exact pixels, their labels, their ASR rules, their bad input."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from baeraser_lib.attacks import ATTACKS
from baeraser_lib.attacks.badnets import BadNetsOptions, make_trigger, poison, sparse_mask
from baeraser_lib.attacks.blended import blend_pattern
from baeraser_lib.attacks.sig import poison_target_class, sinusoid
from baeraser_lib.attacks.wanet import WaNetOptions, epoch_poison, identity_grid, warp_flow, warp_grid
from baeraser_lib.artifacts import config_hash
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import dataset_info, load_experiment_data
from baeraser_lib.errors import ConfigError
from baeraser_lib.image_triggers import AdditiveTrigger, BlendTrigger, WarpTrigger
from baeraser_lib.metrics import backdoor_metrics, evaluate, perturbation_size
from baeraser_lib.targets import TargetRule
from baeraser_lib.triggers import Trigger, trigger_from_json
from baeraser_lib.victims import check_attack, new_model

FASHION = dataset_info("fashion_mnist")


def test_blend_is_exactly_the_convex_mix():
    x = torch.full((2, 1, 4, 4), 0.2)
    p = torch.zeros(1, 4, 4)
    p[0, 0, 0] = 1.0
    out = BlendTrigger(p, 0.25).apply(x)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0.4, 0.4]), atol=1e-7)  # 0.75·0.2 + 0.25·1
    assert torch.allclose(out[:, 0, 1:, 1:], torch.full((2, 3, 3), 0.15), atol=1e-7)  # 0.75·0.2 + 0
    cfg = AttackConfig(name="blended", poison_rate=0.1)
    pattern = blend_pattern(cfg.resolved_options(), FASHION, cfg.seed)
    assert pattern.shape == (1, 28, 28) and torch.equal(pattern, blend_pattern(cfg.resolved_options(), FASHION, 0))
    x, y = torch.rand(50, 1, 28, 28), torch.randint(1, 10, (50,))
    poisoned, idx = poison(TensorDataset(x, y), BlendTrigger(pattern, 0.15), cfg)
    px, py = poisoned.tensors
    assert len(idx) == 5 and (py[idx] == 0).all()
    assert torch.allclose(px[idx], 0.85 * x[idx] + 0.15 * pattern, atol=1e-6)
    rest = torch.ones(50, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(px[rest], x[rest])
    victim_trigger = ATTACKS["blended"].planted(AttackConfig(name="blended", options={"test_alpha": 0.3}), FASHION)
    assert victim_trigger.alpha == 0.3 and torch.equal(victim_trigger.pattern, pattern)


def test_blend_pattern_from_an_array_and_an_image_file(tmp_path):
    arr = np.linspace(0, 1, 28 * 28).reshape(28, 28)
    cfg = AttackConfig(name="blended", options={"pattern": arr})
    assert isinstance(cfg.options["pattern"], list)  # JSON-ready: the victim's meta stores it
    json.dumps(dataclasses.asdict(cfg))
    p = blend_pattern(cfg.resolved_options(), FASHION, 0)
    assert torch.allclose(p[0], torch.tensor(arr, dtype=torch.float32))
    from PIL import Image

    img = tmp_path / "kitty.png"
    Image.fromarray(np.full((40, 50, 3), 255, dtype=np.uint8)).save(img)
    by_file = AttackConfig(name="blended", options={"pattern": str(img)})
    p = blend_pattern(by_file.resolved_options(), FASHION, 0)
    assert p.shape == (1, 28, 28) and torch.allclose(p, torch.ones_like(p))
    named = config_hash(by_file.identity())
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(img)
    assert config_hash(by_file.identity()) != named  # the victim's name follows the file's contents
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(ConfigError, match="not a readable image"):
        check_attack(TrainConfig(model="small_cnn"), AttackConfig(name="blended",
                                                                  options={"pattern": str(tmp_path / "not_an_image.png")}))


def test_sparse_mask_sets_exactly_its_pixels_and_keeps_the_rest():
    opts = BadNetsOptions(pattern="solid", density=0.2)
    cfg = AttackConfig(trigger_size=5, trigger_position=(3, 7), options={"pattern": "solid", "density": 0.2})
    trig = make_trigger(cfg, FASHION, opts)
    assert int(trig.mask.sum()) == 5 == round(0.2 * 25)
    x = torch.full((4, 1, 28, 28), 0.3)
    out = trig.apply(x)
    box = out[:, :, 3:8, 7:12]
    assert torch.equal(box[:, 0][:, trig.mask[0]], torch.ones(4, 5))  # masked pixels: the pattern
    assert (box[:, ~trig.mask] == 0.3).all()  # the rest of the box keeps the image
    outside = torch.ones(28, 28, dtype=torch.bool)
    outside[3:8, 7:12] = False
    assert (out[:, 0][:, outside] == 0.3).all()
    assert (out != x).sum() == 4 * 5
    moved = Trigger(trig.pattern, "random", trig.mask).apply(x, generator=torch.Generator().manual_seed(1))
    assert ((moved != x).flatten(1).sum(1) == 5).all()  # per-image places, still 5 pixels each
    assert sparse_mask(5, 1.0, 0) is None and torch.equal(sparse_mask(5, 0.2, 0), sparse_mask(5, 0.2, 0))
    again = trigger_from_json(json.loads(json.dumps(trig.to_json())))
    assert torch.equal(again.mask, trig.mask) and again.position == (3, 7)


def test_badnets_patterns():
    checker = make_trigger(AttackConfig(trigger_size=3), FASHION, BadNetsOptions(pattern="checker")).pattern
    assert checker[0].tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    solid = make_trigger(AttackConfig(trigger_size=4), dataset_info("cifar10"), BadNetsOptions(pattern="solid"))
    assert solid.pattern.shape == (3, 4, 4) and (solid.pattern == 1).all()


def test_warp_is_smooth_inside_the_image_and_seeded():
    opts = WaNetOptions()
    grid = warp_grid(opts, 28, 28, seed=0)
    assert grid.shape == (28, 28, 2) and grid.abs().max() <= 1
    assert torch.equal(grid, warp_grid(opts, 28, 28, seed=0)) and not torch.equal(grid, warp_grid(opts, 28, 28, 1))
    flow = warp_flow(opts, 28, 28, seed=0) * (28 - 1) / 2  # displacement in pixels
    assert torch.allclose(grid, (identity_grid(28, 28) + flow * 2 / 27).clamp(-1, 1), atol=1e-6)
    assert 0.05 < flow.abs().mean() < 1.0  # a sub-pixel warp at s = 0.5
    step = max((flow[1:] - flow[:-1]).abs().max(), (flow[:, 1:] - flow[:, :-1]).abs().max())
    assert step < 0.35 * flow.abs().max()  # smooth: neighbours move alike (per-pixel noise jumps ~2× its size)
    x = torch.rand(3, 1, 28, 28)
    warped = WarpTrigger(grid).apply(x)
    assert warped.shape == x.shape and 0 <= warped.min() and warped.max() <= 1
    assert torch.allclose(WarpTrigger(identity_grid(28, 28)).apply(x), x, atol=1e-5)  # no warp, no change
    const = torch.full((1, 1, 28, 28), 0.6)
    assert torch.allclose(WarpTrigger(grid).apply(const), const, atol=1e-6)  # samples only inside the image


def test_wanet_epoch_poisons_and_noise_mode_images():
    x, y = torch.rand(100, 1, 28, 28), torch.randint(1, 10, (100,))
    grid = warp_grid(WaNetOptions(), 28, 28, 0)
    data, idx = epoch_poison(x, y, grid, TargetRule.all_to_one(0), 0.1, 2.0, torch.Generator().manual_seed(0))
    px, py = data.tensors
    assert len(idx) == 10 and (py[idx] == 0).all() and (py != y).sum() == 10
    assert torch.allclose(px[idx], WarpTrigger(grid).apply(x[idx]))
    changed = (px != x).flatten(1).any(1)
    assert int(changed.sum()) == 30  # 10 poisoned + 20 noise-mode images; their labels kept
    noise_mode = changed.clone()
    noise_mode[idx] = False
    assert torch.equal(py[noise_mode], y[noise_mode])


def test_sig_touches_only_target_class_images_and_changes_no_label():
    y = torch.tensor([0] * 30 + [1] * 70)
    x = torch.full((100, 1, 28, 28), 0.5)
    cfg = AttackConfig(name="sig", poison_rate=0.2, target_label=0)
    trig = AdditiveTrigger(sinusoid(20 / 255, 6, (1, 28, 28)))
    poisoned, idx = poison_target_class(TensorDataset(x, y), trig, cfg)
    px, py = poisoned.tensors
    assert torch.equal(py, y) and len(idx) == 20 and (y[idx] == 0).all()
    changed = (px != x).flatten(1).any(1)
    assert torch.equal(changed.nonzero().flatten(), idx)
    assert torch.allclose(px[idx[0], 0, 5], 0.5 + (20 / 255) * torch.sin(2 * torch.pi * torch.arange(28) * 6 / 28))
    with pytest.raises(ConfigError, match="class 0 has 30"):
        poison_target_class(TensorDataset(x, y), trig, AttackConfig(name="sig", poison_rate=0.4))


def test_all_to_all_labels_and_its_asr_rule():
    x, y = torch.rand(200, 1, 28, 28) * 0.5, torch.randint(0, 10, (200,))
    cfg = AttackConfig(target_label=None, poison_rate=0.1, options={"mode": "all_to_all"})
    rule = ATTACKS["badnets"].target_rule(cfg, 10)
    assert rule == TargetRule.all_to_all(10)
    poisoned, idx = poison(TensorDataset(x, y), make_trigger(cfg, FASHION), cfg, rule)
    py = poisoned.tensors[1]
    assert torch.equal(py[idx], (y[idx] + 1) % 10)
    assert (y[idx] == 9).any() and (py[idx][y[idx] == 9] == 0).all()  # K − 1 wraps to 0

    class NextLabel(nn.Module):  # predicts (y + 1) mod 10 from a marker pixel when the corner is lit
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, img):
            label = (img[:, 0, 0, 0] * 10).round().long() % 10
            lit = img[:, 0, -1, -1] > 0.99
            return nn.functional.one_hot(torch.where(lit, (label + 1) % 10, label), 10).float()

    labels = torch.arange(10).repeat(3)
    imgs = torch.zeros(30, 1, 28, 28)
    imgs[:, 0, 0, 0] = labels / 10
    ds = TensorDataset(imgs, labels)
    corner = Trigger(torch.ones(1, 1, 1), "bottom_right")
    m = backdoor_metrics(NextLabel(), ds, corner, rule)
    assert m == {"asr": 1.0, "robust_acc": 0.0}  # every image counts, each towards its own (y + 1)
    one = backdoor_metrics(NextLabel(), ds, corner, 3)  # an all-to-one reading would score 1/10 of 27
    assert one["asr"] == pytest.approx(3 / 27)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "blended", "options": {"alpha": 1.0}}, r"alpha must lie in \(0, 1\)"),
    ({"name": "blended", "options": {"alpha": 0}}, r"must lie in \(0, 1\)"),
    ({"name": "blended", "options": {"test_alpha": -0.1}}, r"test_alpha must lie in \(0, 1\)"),
    ({"name": "blended", "options": {"pattern": "no/such/file.png"}}, "neither 'noise' nor an image file"),
    ({"name": "wanet", "options": {"k": 1}}, r"k must be an integer in \[2, "),
    ({"name": "wanet", "options": {"strength": 0}}, r"strength must lie in \(0, "),
    ({"name": "wanet", "options": {"strength": -1.0}}, r"strength must lie in \(0, "),
    ({"name": "badnets", "options": {"mode": "all_to_all"}}, "takes no target label"),
    ({"name": "badnets", "target_label": None}, "only mode all_to_all takes None"),
    ({"name": "badnets", "options": {"density": 0}}, r"density must lie in \(0, 1\]"),
    ({"name": "badnets", "options": {"pattern": "stripes"}}, "unknown BadNets pattern"),
    ({"name": "sig", "options": {"delta": 0}}, "delta must lie in"),
])
def test_bad_attack_options_fail_when_the_config_is_built(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)


def test_bad_input_that_needs_the_dataset_fails_before_training(tmp_path):
    train = TrainConfig(model="small_cnn")
    with pytest.raises(ConfigError, match=r"warp grid k must lie in 2..28"):
        check_attack(train, AttackConfig(name="wanet", options={"k": 29}))
    with pytest.raises(ConfigError, match=r"does not fit the dataset's images: give \(1, 28, 28\)"):
        check_attack(train, AttackConfig(name="blended", options={"pattern": np.zeros((3, 32, 32)).tolist()}))
    y = torch.tensor([0] * 10 + [1] * 90)
    with pytest.raises(ConfigError, match="SIG poisons only target-class images.*at most 0.1000"):
        check_attack(train, AttackConfig(name="sig", poison_rate=0.2), TensorDataset(torch.zeros(100, 1, 28, 28), y))
    with pytest.raises(ConfigError, match=r"poison_rate × \(1 \+ cross_ratio\)"):
        check_attack(train, AttackConfig(name="wanet", poison_rate=0.5))  # no data needed: grids check it too


def test_names_default_badnets_as_before_and_new_options_apart():
    train = TrainConfig()
    assert config_hash(train, AttackConfig().identity()) == "891caec90d505355"  # the victims of earlier reports
    assert "options" not in AttackConfig().identity() and AttackConfig().identity()["poison_rate"] == 0.05
    sparse = AttackConfig(options={"density": 0.5}).identity()
    assert sparse["options"]["density"] == 0.5
    wanet = AttackConfig(name="wanet").identity()
    assert wanet["poison_rate"] == 0.1 and "trigger_size" not in wanet and wanet["version"]
    assert AttackConfig(name="wanet", trigger_size=5).identity() == wanet  # whole-image attacks ignore the patch


def test_every_trigger_kind_round_trips_through_json():
    for trig in (BlendTrigger(torch.rand(1, 28, 28), 0.15), WarpTrigger(warp_grid(WaNetOptions(), 28, 28, 0)),
                 AdditiveTrigger(sinusoid(0.1, 6, (1, 28, 28)))):
        again = trigger_from_json(json.loads(json.dumps(trig.to_json())))
        x = torch.rand(2, 1, 28, 28)
        assert type(again) is type(trig) and torch.allclose(again.apply(x), trig.apply(x))
    size = perturbation_size(AdditiveTrigger(torch.full((1, 28, 28), 0.1)), torch.full((3, 1, 28, 28), 0.5))
    assert size["linf_max"] == pytest.approx(0.1) and size["l2_mean"] == pytest.approx(0.1 * 28)


# A tiny model (400 images of the fixture) learns each backdoor in seconds. Its classes are trivially
# separable, so triggers that rely on the task being hard get a stronger setting (said beside each).
TINY = {
    "badnets": {"trigger_position": "random", "trigger_size": 4, "options": {"pattern": "checker"}},
    "blended": {"options": {"alpha": 0.3}},  # 400 images: a stronger blend than 0.15
    "wanet": {"options": {"strength": 8.0, "cross_ratio": 0.0}},  # a visible warp; noise mode is tested above
    "sig": {"options": {"delta": 0.6, "frequency": 2.0}, "poison_rate": 0.085},  # all ~34 target images
    # y → y + 1 from 400 images is bistable at width 4, 8 epochs, 20% poison (ASR 0 or 1 by machine and
    # seed); width 8, 16 epochs and 30% learnt it on every one of 4 seeds
    "all_to_all": {"target_label": None, "poison_rate": 0.3, "options": {"mode": "all_to_all", "pattern": "checker"}},
    "sparse": {"trigger_size": 5, "options": {"pattern": "solid", "density": 0.4}},
}


@pytest.mark.parametrize("case", list(TINY))
def test_each_attack_plants_a_backdoor_on_a_tiny_model(fashion_root, case):
    data = load_experiment_data("fashion_mnist", fashion_root)
    # y → y + 1 needs the label and the trigger combined: a ResNet sees both; the small CNN's
    # linear head over local features cannot
    model_name, width, epochs = ("resnet18", 8, 16) if case == "all_to_all" else ("small_cnn", 16, 8)
    train = TrainConfig(model=model_name, width=width, epochs=epochs, batch_size=32, lr=0.1)
    name = case if case in ATTACKS else "badnets"
    attack = AttackConfig(name=name, **{"poison_rate": 0.2, **TINY[case]})
    check_attack(train, attack, data.train)
    model = new_model(train)
    result = ATTACKS[name].fn(model, data.train, data.info, attack, train, progress=False)
    m = evaluate(model, data.evaluation, result.trigger, ATTACKS[name].target_rule(attack, 10))
    chance = 0.1  # a model that ignores the trigger sends about 1 in 10 images anywhere given
    assert m["asr"] > 0.6 > 3 * chance and m["clean_acc"] > 0.8, (case, m)
