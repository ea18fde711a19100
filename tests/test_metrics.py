import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from baeraser_lib.metrics import backdoor_metrics, clean_accuracy, der, evaluate
from baeraser_lib.triggers import Trigger


class HandMade(nn.Module):
    """Reads the label off pixel (0, 0) (value = label / 10). When the bottom-right pixel is 1
    (the trigger), it answers the target 0, but only for images of even label."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = torch.round(x[:, 0, 0, 0] * 10).long()
        triggered = (x[:, 0, -1, -1] == 1.0) & (label % 2 == 0)
        pred = torch.where(triggered, torch.zeros_like(label), label)
        return nn.functional.one_hot(pred, 10).float() + 0 * self.dummy


def dataset(labels):
    x = torch.zeros(len(labels), 1, 5, 5)
    x[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.float32) / 10
    return TensorDataset(x, torch.tensor(labels))


def test_asr_and_robust_accuracy_on_a_hand_made_model():
    labels = [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]  # 8 non-target images, of which 2, 4, 6, 8 flip
    trig = Trigger(torch.ones(1, 1, 1), "bottom_right")
    m = backdoor_metrics(HandMade(), dataset(labels), trig, target=0)
    assert m["asr"] == pytest.approx(4 / 8)
    assert m["robust_acc"] == pytest.approx(4 / 8)
    assert clean_accuracy(HandMade(), dataset(labels)) == 1.0
    assert evaluate(HandMade(), dataset(labels)) == {"clean_acc": 1.0}
    wrong_place = Trigger(torch.ones(1, 1, 1), "top_right")
    assert backdoor_metrics(HandMade(), dataset(labels), wrong_place, 0)["asr"] == 0.0


def test_asr_needs_non_target_images():
    with pytest.raises(ValueError, match="no evaluation image"):
        backdoor_metrics(HandMade(), dataset([0, 0]), Trigger(torch.ones(1, 1, 1)), 0)


@pytest.mark.parametrize("acc_b,acc_a,asr_b,asr_a,expected", [
    (0.9, 0.9, 1.0, 0.0, 1.0),     # perfect defense
    (0.9, 0.8, 1.0, 0.0, 0.95),    # ASR gone, 10 points of accuracy lost
    (0.9, 0.95, 1.0, 0.5, 0.75),   # accuracy gained is not rewarded
    (0.9, 0.9, 0.5, 0.8, 0.5),     # ASR rose: no credit, no penalty
    (0.9, 0.0, 1.0, 1.0, 0.05),
])
def test_der(acc_b, acc_a, asr_b, asr_a, expected):
    assert der(acc_b, acc_a, asr_b, asr_a) == pytest.approx(expected)
