import pytest
import torch

from baeraser_lib.errors import ConfigError
from baeraser_lib.models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 100), (3, 20, 7)])
def test_models_take_any_channels_size_and_classes(name, channels, size, classes):
    m = build_model(name, classes, channels, width=4).eval()
    assert m(torch.rand(2, channels, size, size)).shape == (2, classes)


def test_resnet18_is_cifar_style_and_width_scales():
    m = build_model("resnet18", 10, 3, width=8)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
    assert [getattr(m, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [8, 16, 32, 64]
    assert m.linear.in_features == 64
    assert sum(isinstance(mod, torch.nn.Conv2d) for mod in m.modules()) == 1 + 16 + 3  # stem, blocks, shortcuts


def test_normalisation_is_part_of_the_weights():
    m = build_model("resnet18", 10, 1, 4, mean=[0.5], std=[0.25])
    sd = m.state_dict()
    assert sd["normalize.mean"].flatten().tolist() == [0.5] and sd["normalize.std"].flatten().tolist() == [0.25]


def test_unknown_model_and_bad_width():
    with pytest.raises(ConfigError, match="unknown model 'vgg'.*resnet18"):
        build_model("vgg", 10, 3, 64)
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        build_model("resnet18", 10, 3, 0)
