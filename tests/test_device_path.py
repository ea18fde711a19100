"""The GPU path's code, run on the CPU: device refusals, bf16 autocast and channels-last as
options of the same training and unlearning loops, and the out-of-memory advice."""

from types import SimpleNamespace

import pytest
import torch

from baeraser_lib import train as T
from baeraser_lib.config import TrainConfig
from baeraser_lib.errors import ConfigError, DeviceMemoryError
from baeraser_lib.victims import new_model
from test_train import toy


def test_a_device_this_machine_lacks_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        T.pick_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        T.pick_device("cuda:1")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available"):
        T.pick_device("mps")
    for bad in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(ConfigError, match="unknown device"):
            T.pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="1 CUDA GPU"):
        T.pick_device("cuda:3")
    assert T.pick_device("cuda:0") == torch.device("cuda:0")


def test_auto_precision_and_layout_are_bf16_and_channels_last_on_cuda_only_where_chosen():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert not T.uses_bf16(cpu) and T.uses_bf16(cuda) and not T.uses_bf16(mps)
    assert T.uses_bf16(cpu, "bf16") and not T.uses_bf16(cuda, "fp32")
    assert T.memory_format(cpu) == T.memory_format(cuda) == torch.channels_last
    assert T.memory_format(mps) == torch.contiguous_format
    assert T.memory_format(cuda, "contiguous") == torch.contiguous_format
    with pytest.raises(ConfigError, match="precision"):
        T.uses_bf16(cpu, "fp16")
    with pytest.raises(ConfigError, match="memory layout"):
        T.memory_format(cpu, "nhwc")


def trained(**kw):
    cfg = TrainConfig(model="small_cnn", width=4, epochs=2, batch_size=16, lr=0.05, seed=1)
    m = new_model(cfg)
    hist = T.fit(m, toy(64), cfg, torch.device("cpu"), progress=False, **kw)
    return m, hist


def test_cpu_training_is_bit_identical_whatever_auto_picks():
    a, _ = trained()
    b, _ = trained(precision="fp32", layout="channels_last")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_the_bf16_and_contiguous_steps_run_on_the_cpu_and_change_the_result():
    a, _ = trained()
    b, hist = trained(precision="bf16", layout="contiguous")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in b.parameters())  # fp32 master weights
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] * 1.5
    assert any(not torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_an_unknown_precision_is_refused_before_any_step():
    cfg = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=16)
    with pytest.raises(ConfigError, match="precision"):
        T.fit(new_model(cfg), toy(32), cfg, torch.device("cpu"), progress=False, precision="half")


class Exhausted(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_names_the_batch_size_to_try():
    cfg = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=64)
    with pytest.raises(DeviceMemoryError, match=r"batch size 64; try batch_size=32"):
        T.fit(Exhausted(new_model(cfg)), toy(64), cfg, torch.device("cpu"), progress=False)


def test_the_one_cycle_schedule_trains_at_every_short_length():
    """4 steps made torch's OneCycleLR divide by zero (a warm-up of length 0): every length runs."""
    for n in (16, 32, 64, 96, 128):  # 1, 2, 4, 6 and 8 steps of 16
        cfg = TrainConfig(model="small_cnn", width=4, epochs=1, batch_size=16)
        hist = T.fit(new_model(cfg), toy(n), cfg, torch.device("cpu"), progress=False)
        assert len(hist) == 1 and hist[0]["train_loss"] > 0


def test_defend_takes_a_precision_for_baeraser_and_refuses_what_a_method_cannot_do(monkeypatch):
    """`defend(precision=)` reaches BAERASER's unlearning (fp32 switches bf16 off on CUDA); an
    unknown precision, or bf16 for a method that runs fp32 only, fails before any compute."""
    import importlib

    from torch.utils.data import TensorDataset

    import baeraser_lib as B

    bae = importlib.import_module("baeraser_lib.defenses.baeraser")  # the module; the package exports the function

    model = new_model(TrainConfig(model="small_cnn", width=4, epochs=1))
    holding = TensorDataset(torch.rand(60, 1, 28, 28), torch.arange(60) % 10)
    seen = []

    def spy(*a, precision="auto", **k):
        seen.append(precision)
        raise RuntimeError("stop here")

    monkeypatch.setattr(bae, "unlearn", spy)
    found = SimpleNamespace(per_label=[], flagged=[0], seconds=0.0)  # recovery flagged label 0
    monkeypatch.setattr(bae, "recover_triggers", lambda *a, **k: found)
    monkeypatch.setattr(bae, "TriggerPool", SimpleNamespace(from_result=lambda res: OnePool()))
    for precision in ("auto", "fp32", "bf16"):
        with pytest.raises(RuntimeError, match="stop here"):
            B.defend(model, holding, 10, "baeraser", device="cpu", progress=False, precision=precision)
    assert seen == ["auto", "fp32", "bf16"]
    for method, precision, says in (("baeraser", "half", "unknown precision"), ("nc", "bf16", "fp32 only"),
                                    ("finetune", "bf16", "fp32 only")):
        with pytest.raises(ConfigError, match=says):
            B.defend(model, holding, 10, method, device="cpu", progress=False, precision=precision)
    assert len(seen) == 3  # refused before any compute
    assert {k for k, s in B.DEFENSES.items() if s.bf16} == {"baeraser", "vanilla"}


class OnePool:
    """Stands in for a recovered pool of one trigger (label 0): all `repair` asks of it."""
    labels = [0]

    def __len__(self):
        return 1


def test_direct_calls_refuse_a_bad_precision_before_recovery_and_devices_resolve_in_one_place(monkeypatch):
    import importlib

    from torch.utils.data import TensorDataset

    from baeraser_lib.api import resolve_device
    from baeraser_lib.defenses import baeraser, vanilla

    bae = importlib.import_module("baeraser_lib.defenses.baeraser")
    van = importlib.import_module("baeraser_lib.defenses.vanilla")

    def no_recovery(*a, **k):
        raise AssertionError("recovery ran before the precision was checked")

    monkeypatch.setattr(bae, "recover_triggers", no_recovery)
    monkeypatch.setattr(van, "recover_triggers", no_recovery)
    model = new_model(TrainConfig(model="small_cnn", width=4, epochs=1))
    holding = TensorDataset(torch.rand(60, 1, 28, 28), torch.arange(60) % 10)
    for fn in (baeraser, vanilla):
        with pytest.raises(ConfigError, match="unknown precision"):
            fn(model, holding, 10, device="cpu", progress=False, precision="fp16")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    assert resolve_device(torch.device("cpu")) == resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device(0)  # a CUDA index, as torch.device takes it


def test_vanilla_passes_its_precision_to_unlearning(monkeypatch):
    import importlib

    from torch.utils.data import TensorDataset

    import baeraser_lib as B

    van = importlib.import_module("baeraser_lib.defenses.vanilla")
    seen = []

    def spy(*a, precision="auto", **k):
        seen.append(precision)
        raise RuntimeError("stop here")

    monkeypatch.setattr(van, "unlearn_or_keep", spy)
    model = new_model(TrainConfig(model="small_cnn", width=4, epochs=1))
    holding = TensorDataset(torch.rand(60, 1, 28, 28), torch.arange(60) % 10)
    with pytest.raises(RuntimeError, match="stop here"):
        B.defend(model, holding, 10, "vanilla", device="cpu", progress=False, precision="bf16", pool=OnePool())
    assert seen == ["bf16"]
