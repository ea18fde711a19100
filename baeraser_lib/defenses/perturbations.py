"""Random, trigger-agnostic perturbations of clean images, for unlearning's invariance term.

Each image gets one of three generic changes, drawn at random, none of them a guess of any
particular trigger: a small square of random pixels at a random place (random erasing, Zhong et
al. 2020), a smooth random warp (an elastic deformation, Simard et al. 2003), or a faint blend with
uniform noise. They are the standard augmentations whose kinds backdoor triggers also take
(a patch, a warp, a blend); DeepSweep (Qiu et al., AsiaCCS 2021) fine-tuned with such
augmentations to weaken backdoors. Their sizes are fixed here, in advance, relative to the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("patch", "warp", "blend")
PATCH_SIDE = (1 / 14, 1 / 4)  # a square's side, as a fraction of the image's shorter side (2–7 px on 28×28)
WARP_PIXELS = 1.5  # a warp's largest displacement, in pixels (at most)
WARP_GRID = 4  # the random displacements live on a 4×4 grid, upsampled smoothly to the image
BLEND = 0.2  # a blend's largest weight on the noise


def perturb(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A perturbed copy of the batch `x` (N, C, H, W) in [0, 1]: each image one of `KINDS`, its
    size and place drawn from `gen` (a CPU generator). The result stays in [0, 1]."""
    if x.dim() != 4:
        raise ValueError(f"perturb takes a batch (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    out = x.detach().clone()
    kind = torch.randint(0, len(KINDS), (n,), generator=gen)
    for k, fn in enumerate((_patch, _warp, _blend)):
        idx = (kind == k).nonzero().flatten()
        if len(idx):
            out[idx.to(x.device)] = fn(out[idx.to(x.device)], gen)
    return out.clamp_(0.0, 1.0)


def _patch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    short = min(h, w)
    lo, hi = max(1, round(PATCH_SIDE[0] * short)), max(1, round(PATCH_SIDE[1] * short))
    for i in range(n):
        s = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        top = int(torch.randint(0, h - s + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - s + 1, (1,), generator=gen))
        x[i, :, top:top + s, left:left + s] = torch.rand(c, s, s, generator=gen).to(x)
    return x


def _warp(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    coarse = torch.rand(n, 2, WARP_GRID, WARP_GRID, generator=gen) * 2 - 1
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    flow = flow / flow.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # largest displacement: 1
    pixels = torch.rand(n, 1, 1, 1, generator=gen) * WARP_PIXELS
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).expand(n, h, w, 2)  # grid_sample's order: x, then y
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)])  # pixels → normalised coordinates
    grid = grid + (flow * pixels).permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="border", align_corners=True)


def _blend(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    a = (torch.rand(n, 1, 1, 1, generator=gen) * BLEND).to(x)
    return (1 - a) * x + a * torch.rand(x.shape, generator=gen).to(x)
