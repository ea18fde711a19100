import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from baeraser_lib import train as T
from baeraser_lib.config import TrainConfig
from baeraser_lib.victims import new_model


def toy(n=128):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.5
    x[y == 1, :, :6] += 0.5  # class 1: a bright top half
    return TensorDataset(x, y)


def test_pick_device_prefers_an_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert T.pick_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert T.pick_device().type == "cuda"
    assert T.pick_device("cpu").type == "cpu"


def test_fit_learns_and_is_reproducible():
    cfg = TrainConfig(model="small_cnn", width=4, epochs=8, batch_size=16, lr=0.05, seed=1)
    weights = []
    for _ in range(2):
        m = new_model(cfg)
        hist = T.fit(m, toy(), cfg, torch.device("cpu"), progress=False)
        weights.append(m.state_dict())
    assert hist[-1]["train_acc"] > 0.9 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not m.training


def test_fit_calls_epoch_end_and_logs_its_figures():
    cfg = TrainConfig(model="small_cnn", width=4, epochs=2, batch_size=32)
    seen = []
    hist = T.fit(new_model(cfg), toy(), cfg, progress=False,
                 epoch_end=lambda m, e: seen.append((e, m.training)) or {"extra": 1.0})
    assert seen == [(1, False), (2, False)] and hist[1]["extra"] == 1.0 and "eval_seconds" in hist[1]


def test_fit_stops_on_a_non_finite_loss():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return torch.full((len(x), 2), float("nan")) * self.w

    with pytest.raises(FloatingPointError, match="loss became nan"):
        T.fit(Broken(), toy(), TrainConfig(epochs=1), progress=False)
