"""Classifiers by name: a CIFAR-style ResNet-18 (the paper's model) and a small CNN for tests.

Models take images in [0, 1] and normalise them in their first layer, so triggers and
generators work in pixel space. A user's own `nn.Module` works everywhere a model is taken.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean/std are saved with the weights."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR style: 3×3 stem, no max-pool; stages `layer1`..`layer4` of width w..8w."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 64,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.normalize = Normalize(mean or [0.0] * in_channels, std or [1.0] * in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths, cin = [width, 2 * width, 4 * width, 8 * width], width
        for i, (w, stride) in enumerate(zip(widths, [1, 2, 2, 2]), start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.linear = nn.Linear(cin, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (the inputs of `linear`)."""
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head: seconds to train, for tests and smoke runs."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 16,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.normalize = Normalize(mean or [0.0] * in_channels, std or [1.0] * in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1, 1)
        self.linear = nn.Linear(2 * width * 16, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.max_pool2d(F.relu(self.conv1(self.normalize(x))), 2)
        out = F.relu(self.conv2(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 4), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def resnet18(num_classes: int, in_channels: int = 3, width: int = 64, **kw) -> ResNet18:
    return ResNet18(num_classes, in_channels, width, **kw)


def small_cnn(num_classes: int, in_channels: int = 1, width: int = 16, **kw) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width, **kw)


MODELS: dict[str, Callable[..., nn.Module]] = {"resnet18": resnet18, "small_cnn": small_cnn}


def build_model(name: str, num_classes: int, in_channels: int, width: int,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """Instantiate model `name` from the registry (ConfigError naming the choices if unknown)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"width must be a positive integer, got {width!r}")
    return MODELS[name](num_classes, in_channels, width, mean=mean, std=std)
