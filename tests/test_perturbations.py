"""The random perturbations of unlearning's augmented invariance: generic, bounded, reproducible."""

import pytest
import torch

from baeraser_lib.defenses import perturbations as P


def test_each_kind_changes_the_image_within_its_bounds_and_leaves_the_input_alone():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 28, 28, generator=gen) * 0.5 + 0.25
    before = x.clone()
    out = P.perturb(x, torch.Generator().manual_seed(1))
    assert torch.equal(x, before) and out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    changed = (out - x).abs() > 1e-6
    per_image = changed.flatten(1).sum(1)
    assert (per_image > 0).all()  # every image is changed
    # a patch touches at most 7×7 = 49 pixels; warps and blends touch (nearly) all of them
    small = per_image <= 49
    assert 60 < int(small.sum()) < 140  # about a third are patches
    assert ((out - x).abs().flatten(1).amax(1)[~small] > 0).all()
    blendish = (out - x).abs().flatten(1).amax(1) <= P.BLEND + 1e-6
    assert blendish.any()
    assert torch.equal(out, P.perturb(x, torch.Generator().manual_seed(1)))  # the same stream, the same copy
    assert not torch.equal(out, P.perturb(x, torch.Generator().manual_seed(2)))


def test_a_warp_moves_pixels_by_at_most_its_bound_and_colour_images_work():
    x = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(4, 3, 32, 32).contiguous()  # a horizontal ramp
    warped = P._warp(x.clone(), torch.Generator().manual_seed(0))
    step = 1 / 31  # one pixel of the ramp
    assert (warped - x).abs().max() <= P.WARP_PIXELS * step + 1e-5
    assert P.perturb(torch.rand(5, 3, 32, 32), torch.Generator().manual_seed(0)).shape == (5, 3, 32, 32)
    with pytest.raises(ValueError, match="batch"):
        P.perturb(torch.rand(3, 32, 32), torch.Generator())
