import pytest

from baeraser_lib.artifacts import config_hash
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.data import load_experiment_data
from baeraser_lib.errors import ConfigError
from baeraser_lib.victims import obtain_model


@pytest.mark.parametrize("kwargs,message", [
    ({"dataset": "svhn"}, "unknown dataset 'svhn'"),
    ({"model": "vgg16"}, "unknown model 'vgg16'"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"schedule": "step"}, "unknown schedule"),
    ({"lr": -1.0}, r"lr must lie in \(0, "),
    ({"train_subset": 0}, "train_subset must be a positive integer"),
])
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "wanet2"}, "unknown attack 'wanet2'.*badnets"),
    ({"poison_rate": 0.0}, "poison_rate must lie in"),
    ({"poison_rate": 1.0}, "poison_rate must lie in"),
    ({"poison_rate": 1.5}, "poison_rate must lie in"),
    ({"trigger_size": 0}, "trigger_size must be a positive integer"),
    ({"trigger_position": "middle"}, "unknown trigger position"),
    ({"target_label": -1}, "target_label must be a non-negative integer"),
])
def test_attack_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttackConfig(**kwargs)


def test_attack_must_fit_the_dataset():
    with pytest.raises(ConfigError, match="larger than the 28×28 image"):
        AttackConfig(trigger_size=29).check_against("fashion_mnist")
    with pytest.raises(ConfigError, match="target_label 10 is not a class"):
        AttackConfig(target_label=10).check_against("mnist")
    AttackConfig(target_label=99, trigger_size=32).check_against("cifar100")


def test_bad_attack_fails_before_training_and_writes_nothing(fashion_root, tmp_path):
    data = load_experiment_data("fashion_mnist", fashion_root)
    art = tmp_path / "artifacts"
    with pytest.raises(ConfigError, match="larger than"):
        obtain_model(TrainConfig(model="small_cnn"), AttackConfig(trigger_size=30), data, art)
    with pytest.raises(ConfigError, match="data is 'fashion_mnist'"):
        obtain_model(TrainConfig(dataset="mnist", model="small_cnn"), None, data, art)
    with pytest.raises(ConfigError, match="subset of 100 images but the data's training set has 400"):
        obtain_model(TrainConfig(model="small_cnn", train_subset=100), None, data, art)
    assert not art.exists()


def test_config_hash_is_stable_and_sensitive():
    a, b = TrainConfig(), TrainConfig()
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(TrainConfig(seed=1))
    assert config_hash(a, AttackConfig()) != config_hash(a, AttackConfig(trigger_size=5))
    assert AttackConfig(trigger_position=[3, 4]).trigger_position == (3, 4)


def test_train_config_takes_the_training_names_and_ignores_the_rest():
    from baeraser_lib.params import train_config

    cfg = train_config({"model": "small_cnn", "epochs": 2, "attack": "badnets", "holding_ratio": 0.05})
    assert (cfg.model, cfg.epochs) == ("small_cnn", 2)
    assert cfg.lr == TrainConfig().lr  # absent names keep the default
    with pytest.raises(ConfigError):
        train_config({"epochs": 0})
