"""Counting image passes: what is counted, by kind, and what is not."""

import copy

import pytest
import torch
from torch import nn

from baeraser_lib import passes as P


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.body(x)


def test_forwards_of_the_class_and_its_copies_are_counted_by_images_and_kind():
    net, helper = Net(), nn.Linear(4, 2)
    with P.counting_passes(Net) as counts:
        net(torch.zeros(5, 4)).sum().backward()  # training-like: weight gradients
        copy.deepcopy(net)(torch.zeros(3, 4))  # a defense's copy counts too
        with torch.no_grad():
            net(torch.zeros(7, 4))  # evaluation
        for p in net.parameters():
            p.requires_grad_(False)
        x = torch.zeros(2, 4, requires_grad=True)
        net(x).sum().backward()  # a trigger search: frozen weights, gradient to the input
        net(torch.zeros(4, 4))  # frozen weights, no input gradient: no graph
        helper(torch.zeros(11, 4))  # another network: not counted
    assert counts == {"weights": 8, "inputs": 2, "forward": 11}
    assert P.work(counts) == 3 * 8 + 2 * 2 + 11
    net(torch.zeros(2, 4))  # after the block: the hook is gone
    assert counts == {"weights": 8, "inputs": 2, "forward": 11}


def test_training_work_and_bad_input():
    assert P.training_work(60000, 4) == 3 * 240000
    with pytest.raises(ValueError):
        P.training_work(0, 4)
    with pytest.raises(TypeError):
        with P.counting_passes(Net()):
            pass
