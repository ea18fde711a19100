"""One validation place for numbers (`checks.validate`): every numeric field of every config
rejects NaN, ±inf, text, bools and out-of-range values when the config is built."""

import dataclasses
import math
import types
import typing

import numpy as np
import pytest
import torch

from baeraser_lib.attacks import ATTACKS
from baeraser_lib.checks import Interval, interval, rules, rules_of, validate
from baeraser_lib.config import AttackConfig, TrainConfig
from baeraser_lib.defenses import DEFENSES, FinetuneConfig, RecoveryConfig, UnlearnConfig
from baeraser_lib.errors import ConfigError


def config_classes() -> list[type]:
    """Every config the library builds: the registries' own, and those they nest."""
    found = [TrainConfig, AttackConfig, RecoveryConfig, UnlearnConfig, FinetuneConfig]
    found += [spec.config for spec in DEFENSES.values()]
    found += [spec.options for spec in ATTACKS.values() if spec.options is not None]
    return list(dict.fromkeys(found))


def numeric_fields(cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if int in members or float in members:
            out.append(f.name)
    return out


CASES = [(cls, name) for cls in config_classes() for name in numeric_fields(cls)]


def test_every_config_is_covered():
    names = {c.__name__ for c in config_classes()}
    assert {"TrainConfig", "AttackConfig", "RecoveryConfig", "UnlearnConfig", "IBAUConfig", "SAUConfig",
            "ANPConfig", "NCConfig", "NADConfig", "FinePruneConfig", "BadNetsOptions", "WaNetOptions",
            "SIGOptions", "BlendedOptions", "TrojanNNOptions", "IMCOptions"} <= names
    assert len(CASES) > 80  # the numeric knobs of all of them


@pytest.mark.parametrize("cls, name", CASES, ids=[f"{c.__name__}.{n}" for c, n in CASES])
def test_every_numeric_field_has_a_stated_range(cls, name):
    assert name in rules_of(cls), f"{cls.__name__}.{name} has no interval in RULES"


def _build(cls, **kw):
    if cls is AttackConfig:
        return AttackConfig(**kw)
    if cls in [spec.options for spec in ATTACKS.values()]:
        attack = next(n for n, s in ATTACKS.items() if s.options is cls)
        return AttackConfig(name=attack, options=kw)
    return cls(**kw)


@pytest.mark.parametrize("cls, name", CASES, ids=[f"{c.__name__}.{n}" for c, n in CASES])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1e12, 1e300, 10 ** 400, "1", True],
                         ids=["nan", "inf", "-inf", "-1e12", "1e300", "10**400", "text", "bool"])
def test_every_numeric_field_rejects_nonsense_at_construction(cls, name, bad):
    with pytest.raises(ConfigError, match=name):
        _build(cls, **{name: bad})


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_default_passes_its_own_rules(cls):
    """The defaults build, and each numeric default lies inside its own stated interval."""
    built = _build(cls)
    default = built if cls is AttackConfig or not isinstance(built, AttackConfig) else built.resolved_options()
    assert isinstance(default, cls)
    stated = rules_of(cls)
    for name in numeric_fields(cls):
        value = getattr(default, name)
        if value is not None:  # None means "chosen from the data" (a documented default)
            assert interval(stated[name]).holds(value), f"{cls.__name__}.{name} = {value!r} outside {stated[name]}"


def test_numpy_numbers_become_python_numbers_and_keep_the_hash():
    from baeraser_lib.artifacts import config_hash

    a = TrainConfig(epochs=np.int64(4), lr=np.float64(0.05), momentum=np.float32(0.5))
    assert type(a.epochs) is int and type(a.lr) is float and type(a.momentum) is float
    assert config_hash(TrainConfig(epochs=np.int64(4), lr=np.float64(0.05))) == config_hash(TrainConfig())
    r = RecoveryConfig(eps=np.array([0.5, 0.8, 0.9]), prune=np.bool_(True))
    assert r.eps == (0.5, 0.8, 0.9) and r.prune is True and config_hash(r) == config_hash(RecoveryConfig())


def test_the_message_names_the_field_its_range_and_the_value():
    with pytest.raises(ConfigError, match=r"UnlearnConfig\.stop_asr must lie in \[0, 1\], got nan"):
        UnlearnConfig(stop_asr=math.nan)
    with pytest.raises(ConfigError, match=r"UnlearnConfig\.momentum must lie in \[0, 1\), got -5"):
        UnlearnConfig(momentum=-5)
    with pytest.raises(ConfigError, match=r"TrainConfig\.epochs must be a positive integer ≤ 10000, got 2\.5"):
        TrainConfig(epochs=2.5)
    with pytest.raises(ConfigError, match=r"TrainConfig\.dataset must be str, got 3"):
        TrainConfig(dataset=3)
    with pytest.raises(ConfigError, match=r"BaeraserConfig takes a RecoveryConfig"):
        from baeraser_lib.defenses import BaeraserConfig
        BaeraserConfig(recovery={"lr": 1})


def test_containers_of_numbers_are_checked_item_by_item():
    with pytest.raises(ConfigError, match="eps"):
        RecoveryConfig(eps=(0.5, math.nan))
    with pytest.raises(ConfigError, match="betas"):
        RecoveryConfig(betas=(0.5, math.inf))
    with pytest.raises(ConfigError, match="Adam β"):
        RecoveryConfig(betas=(0.5, 1.5))
    with pytest.raises(ConfigError, match="blend pattern array"):
        AttackConfig(name="blended", options={"pattern": [[0.1, math.nan]]})


def test_interval_text_parses_every_kind_of_end():
    assert interval("(0, 1]") == Interval(0.0, 1.0, True, False)
    assert interval("[1, inf)", integer=True).holds(10 ** 9)
    assert not interval("(0, 1)").holds(1.0)
    assert str(interval("[-20, 20]")) == "[-20, 20]"
    with pytest.raises(ValueError):
        rules(lr="0 to 1")


def test_a_subclass_adds_to_its_parents_rules():
    from baeraser_lib.attacks.imc import IMCOptions

    assert {"neurons", "lr", "trigger_steps", "trigger_lr"} <= set(rules_of(IMCOptions))
    with pytest.raises(ConfigError, match="IMCOptions.neurons"):
        IMCOptions(neurons=0)


def test_rules_naming_unknown_fields_are_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Broken:
        lr: float = 0.1
        RULES: typing.ClassVar = {"rate": "(0, 1]"}

        def __post_init__(self):
            validate(self)

    with pytest.raises(AssertionError, match="rate"):
        Broken()


def test_grid_dry_run_rejects_nan_before_any_kernel(tmp_path):
    from baeraser_lib.lab.grid import load_grid, validate as validate_grid

    path = tmp_path / "g.yaml"
    path.write_text("name: g\nnotebooks: [01_inject, 02_recover_triggers, 03_unlearn]\n"
                    "parameters: {unlearn_lr: .nan}\n")
    with pytest.raises(ConfigError, match="lr must lie in"):
        validate_grid(load_grid(path))


@pytest.mark.parametrize("params, message", [
    ({"poison_rate": math.nan}, "poison_rate must lie in"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"epochs": 2.5}, "epochs=2.5 should be like its default"),
])
def test_the_report_runner_checks_like_the_sweep_before_any_kernel(tmp_path, params, message):
    from baeraser_lib.lab import runner

    with pytest.raises(SystemExit, match=message):
        runner.run(["01_inject"], params, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing written, no kernel started


# --- the data door -----------------------------------------------------------------------------

def _tiny_model():
    from baeraser_lib.models import build_model

    return build_model("small_cnn", 10, 1, 4)


@pytest.mark.parametrize("x, y, message", [
    (lambda: (torch.rand(48, 1, 28, 28) * 255).to(torch.uint8), lambda: torch.arange(48) % 10, "uint8.*divide by 255"),
    (lambda: torch.rand(48, 1, 28, 28) * 255, lambda: torch.arange(48) % 10, r"pixels must lie in \[0, 1\]"),
    (lambda: torch.full((48, 1, 28, 28), math.nan), lambda: torch.arange(48) % 10, "NaN or inf"),
    (lambda: torch.rand(48, 28, 28), lambda: torch.arange(48) % 10, r"\(N, C, H, W\)"),
    (lambda: torch.rand(48, 1, 28, 28), lambda: torch.arange(48) % 10 + 10, r"48 labels lie outside \[0, 10\)"),
    (lambda: torch.rand(48, 1, 28, 28), lambda: torch.rand(48), "labels must be integers"),
])
def test_the_data_door_refuses_bad_images_and_labels_everywhere(x, y, message):
    from torch.utils.data import TensorDataset

    from baeraser_lib import api
    from baeraser_lib.data import check_images
    from baeraser_lib.defenses.finetune import finetune
    from baeraser_lib.errors import DataError
    from baeraser_lib.metrics import evaluate
    from baeraser_lib.train import fit

    data = TensorDataset(x(), y())
    model = _tiny_model()
    calls = [lambda: check_images(*data.tensors, 10),
             lambda: evaluate(model, data),
             lambda: fit(model, data, TrainConfig(model="small_cnn", width=4, epochs=1), progress=False),
             lambda: finetune(model, data, progress=False),
             lambda: api.defend(model, data, 10, method="finetune", progress=False)]
    for call in calls:
        with pytest.raises(DataError, match=message):
            call()


def test_a_malformed_idx_file_is_a_data_error_naming_the_files(tmp_path):
    from baeraser_lib.data import load_split
    from baeraser_lib.errors import DataError

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="FashionMNIST/raw.*malformed"):
        load_split("fashion_mnist", tmp_path, train=False)


def test_idx_labels_outside_the_classes_are_refused(tmp_path):
    import numpy as np

    from baeraser_lib.data import load_split
    from baeraser_lib.errors import DataError
    from conftest import write_idx

    raw = tmp_path / "FashionMNIST" / "raw"
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    labels = np.full(20, 200, dtype=np.uint8)
    write_idx(raw, "t10k", images, labels)
    write_idx(raw, "train", images, labels)
    with pytest.raises(DataError, match=r"20 labels lie outside \[0, 10\)"):
        load_split("fashion_mnist", tmp_path, train=False)


def test_a_malformed_cifar_batch_is_a_data_error_naming_the_folder(tmp_path, no_cifar_md5):
    from baeraser_lib.data import load_split
    from baeraser_lib.errors import DataError
    from conftest import write_cifar

    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cifar10 .*cifar-10-batches-py.*malformed"):
        load_split("cifar10", tmp_path, train=False)


def test_progress_bars_are_off_when_the_report_runner_says_so(monkeypatch):
    """tqdm.notebook does not read TQDM_DISABLE: each bar is told explicitly (no empty widget box)."""
    from baeraser_lib.train import progress_kwargs

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert progress_kwargs(True) == {"disable": True}
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert progress_kwargs(True) == {} and progress_kwargs(False) == {"disable": True}


def test_images_that_do_not_fit_the_model_are_a_data_error_before_compute():
    from torch.utils.data import TensorDataset

    from baeraser_lib.defenses.finetune import finetune
    from baeraser_lib.errors import DataError
    from baeraser_lib.metrics import evaluate
    from baeraser_lib.train import fit

    rgb = TensorDataset(torch.rand(48, 3, 32, 32), torch.arange(48) % 10)
    model = _tiny_model()  # one channel, 28×28
    for call in (lambda: evaluate(model, rgb), lambda: finetune(model, rgb, progress=False)):
        with pytest.raises(DataError, match=r"\(3, 32, 32\) \(C, H, W\) do not fit the model"):
            call()
    with pytest.raises(DataError, match=r"training data: images of shape \(3, 32, 32\)"):
        fit(model, rgb, TrainConfig(model="small_cnn", width=4, epochs=1), progress=False)
