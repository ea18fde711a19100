import pytest
import torch

from baeraser_lib.errors import ConfigError
from baeraser_lib.triggers import Trigger, check_fits, random_pattern, stamp

CORNERS = {"top_left": (0, 0), "top_right": (0, 7), "bottom_left": (5, 0), "bottom_right": (5, 7), "center": (2, 3)}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("position,offset", list(CORNERS.items()) + [((1, 2), (1, 2))])
def test_stamp_writes_exactly_the_patch_pixels(channels, position, offset):
    x = torch.rand(4, channels, 8, 10)  # non-square, to catch row/col mix-ups
    pattern = torch.arange(channels * 9, dtype=torch.float32).view(channels, 3, 3) / 100
    out = stamp(x, pattern, position)
    r, c = offset
    assert torch.equal(out[:, :, r:r + 3, c:c + 3], pattern.expand(4, channels, 3, 3))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, :, r:r + 3, c:c + 3] = False
    assert torch.equal(out[mask], x[mask])  # nothing else changed
    assert not torch.equal(out, x) and x.shape == out.shape


def test_stamp_single_image_and_one_channel_pattern_on_rgb():
    x = torch.zeros(3, 6, 6)
    out = stamp(x, torch.ones(1, 2, 2), "top_left")
    assert out.shape == (3, 6, 6) and out[:, :2, :2].eq(1).all() and out.sum() == 12


def test_random_positions_are_seeded_and_inside_the_image():
    x = torch.zeros(64, 1, 9, 9)
    a = stamp(x, torch.ones(1, 3, 3), "random", torch.Generator().manual_seed(5))
    b = stamp(x, torch.ones(1, 3, 3), "random", torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert (a.sum(dim=(1, 2, 3)) == 9).all()  # the whole patch landed in every image
    assert len({tuple(torch.nonzero(img[0])[0].tolist()) for img in a}) > 10  # places vary


def test_per_image_patterns_and_offsets():
    x = torch.zeros(2, 1, 5, 5)
    patterns = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), 0.25)])
    out = stamp(x, patterns, torch.tensor([[0, 0], [3, 3]]))
    assert out[0, 0, :2, :2].eq(0.5).all() and out[1, 0, 3:, 3:].eq(0.25).all()
    assert out.sum() == pytest.approx(4 * 0.75)


def test_stamp_is_differentiable_in_the_patch():
    pattern = torch.full((1, 3, 3), 0.3, requires_grad=True)
    stamp(torch.rand(5, 1, 8, 8), pattern, "bottom_right").sum().backward()
    assert torch.equal(pattern.grad, torch.full((1, 3, 3), 5.0))
    pattern.grad = None
    stamp(torch.rand(5, 1, 8, 8), pattern, "random", torch.Generator().manual_seed(0)).sum().backward()
    assert torch.equal(pattern.grad, torch.full((1, 3, 3), 5.0))


def test_trigger_larger_than_the_image_is_refused():
    with pytest.raises(ConfigError, match="larger than the 28×28 image"):
        check_fits(29, "bottom_right", (1, 28, 28))
    with pytest.raises(ConfigError, match="larger than"):
        stamp(torch.zeros(1, 1, 4, 4), torch.ones(1, 5, 5))
    with pytest.raises(ConfigError, match="leaves the"):
        check_fits(3, (26, 0), (1, 28, 28))


def test_bad_positions_and_channel_mismatch():
    with pytest.raises(ConfigError, match="unknown trigger position 'middle'"):
        Trigger(torch.ones(1, 3, 3), "middle")
    with pytest.raises(ConfigError, match="2 channels; the images have 3"):
        stamp(torch.zeros(1, 3, 8, 8), torch.ones(2, 3, 3))


def test_trigger_json_round_trip_is_exact():
    t = Trigger(random_pattern(3, 3, seed=7), (4, 5))
    back = Trigger.from_json(t.to_json())
    assert torch.equal(back.pattern, t.pattern) and back.position == (4, 5) and back.size == 3
    assert torch.equal(random_pattern(3, 1, 0), random_pattern(3, 1, 0))
    assert not torch.equal(random_pattern(3, 1, 0), random_pattern(3, 1, 1))
