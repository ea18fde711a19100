"""Screening every label with a full-image mask: how small a change sends clean images there?

For each candidate label k (all K at once, stacked along a label axis), a mask m_k ∈ [0,1]^{H×W}
and a pattern p_k ∈ [0,1]^{C×H×W} are optimised so that x' = (1 − m_k)⊙x + m_k⊙p_k goes to k:

    minimise  CE(F(x'), k) + λ_k · mean(m_k)

λ_k adapts per label and per step (Neural Cleanse's schedule, compressed): up by `cost_up` when the
batch reaches the ASR asked, down by cost_up^1.5 when it does not, so each mask shrinks as far as
it can while still working. A square patch at any place, a sparse set of pixels and a faint
full-image blend are all masks, so nothing here assumes a size, a shape, a place or a kind.

A label's score is its mask size |m_k|₁ in pixels, averaged over the last quarter of its steps
(λ hovers around the ASR asked there, so the average is steadier than any one step). With
`mask_halving` (off by default), the labels whose masks are larger than the median stop halfway
and keep their size so far as an upper bound.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from ..train import progress_kwargs
from ..triggers import stamp_mask


def label_generators(seed: int, labels: list[int], salt: int) -> list[torch.Generator]:
    """One torch.Generator per label, seeded by (seed, label, salt): a label's random stream never
    depends on which other labels run beside it, so batched and looped runs match."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + label * 7919 + salt) for label in labels]


def mask_search(victim, labels: list[int], xtr: torch.Tensor, xva: torch.Tensor, yva: torch.Tensor,
                shape: tuple[int, int, int], cfg, progress: bool = True, steps: int | None = None) -> list[dict]:
    """Per label: the final mask (1, H, W), pattern (C, H, W), mask size, validation ASR, and how
    many steps it ran (`steps`: the schedule's length, cfg.mask_steps by default)."""
    c, h, w = shape
    k, b, dev = len(labels), cfg.mask_batch, victim.device
    steps = steps or cfg.mask_steps
    gens = label_generators(cfg.seed, labels, salt=6)
    mask_logit = torch.full((k, 1, h, w), cfg.mask_init, device=dev, requires_grad=True)
    pattern_logit = torch.stack([torch.rand(c, h, w, generator=g) * 4 - 2 for g in gens]).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=cfg.mask_lr, betas=(0.5, 0.9))
    cost = torch.full((k,), cfg.mask_cost, device=dev)
    target = torch.tensor(labels, device=dev)
    img_gen = torch.Generator().manual_seed(cfg.seed + 31)
    per_pass = max(1, cfg.max_images_per_pass // b)
    active = torch.arange(k)
    ran = torch.full((k,), steps)
    size_sum, size_n = torch.zeros(k), torch.zeros(k)
    frozen = None  # (mask rows, pattern rows) of stopped labels, restored after every step
    for step in tqdm(range(steps), desc=f"mask search ({k} labels)", leave=False, **progress_kwargs(progress)):
        if cfg.mask_halving and step == steps // 2 and k > 2:  # successive halving: the smaller masks go on
            sizes = torch.sigmoid(mask_logit.detach()).sum((1, 2, 3)).cpu()
            keep = sizes.argsort()[:math.ceil(k / 2)].sort().values
            stop = torch.tensor([i for i in range(k) if i not in set(keep.tolist())], dtype=torch.long)
            ran[stop] = step
            active = keep
            frozen = (stop, mask_logit.detach()[stop].clone(), pattern_logit.detach()[stop].clone())
        xb = xtr[torch.randint(0, len(xtr), (b,), generator=img_gen)].to(dev)
        opt.zero_grad(set_to_none=True)
        hits = torch.zeros(k, device=dev)
        for start in range(0, len(active), per_pass):  # label chunks bound the victim's batch
            idx = active[start:start + per_pass].to(dev)
            m, p = torch.sigmoid(mask_logit[idx]), torch.sigmoid(pattern_logit[idx])
            xs = stamp_mask(xb.unsqueeze(0), m.unsqueeze(1), p.unsqueeze(1)).reshape(-1, c, h, w)
            lp = victim.log_probs(xs).view(-1, b, victim.num_classes)
            t = target[idx].view(-1, 1, 1).expand(-1, b, 1)
            ce = -lp.gather(2, t).squeeze(2).mean(1)
            (ce + cost[idx] * m.mean((1, 2, 3))).sum().backward()
            hits[idx] = (lp.detach().argmax(2) == t.squeeze(2)).float().mean(1)
        if not (torch.isfinite(mask_logit.grad).all() and torch.isfinite(pattern_logit.grad).all()):
            raise FloatingPointError("mask search: the mask or pattern gradients became non-finite")
        opt.step()
        with torch.no_grad():
            if frozen is not None:
                mask_logit[frozen[0]] = frozen[1]
                pattern_logit[frozen[0]] = frozen[2]
            ok = hits >= cfg.mask_asr
            cost = torch.where(ok, cost * cfg.cost_up, cost / cfg.cost_up ** 1.5).clamp(1e-6, 1e6)
            # the size score: the last quarter of each label's own run
            tail = torch.zeros(k, dtype=torch.bool)
            tail[active] = True
            tail &= (step >= ran - (ran // 4).clamp_min(1))
            if tail.any():
                size_sum[tail] += torch.sigmoid(mask_logit[tail.to(dev)]).sum((1, 2, 3)).cpu()
                size_n[tail] += 1
    masks = torch.sigmoid(mask_logit.detach()).cpu()
    patterns = torch.sigmoid(pattern_logit.detach()).cpu()
    sizes = torch.where(size_n > 0, size_sum / size_n.clamp_min(1), masks.sum((1, 2, 3)))
    out = []
    for i, label in enumerate(labels):
        xv = xva[yva != label][:cfg.search_val]
        xs = stamp_mask(xv, masks[i], patterns[i])
        asr = float((victim.predict(xs).cpu() == label).float().mean())
        out.append({"label": label, "mask": masks[i], "pattern": patterns[i], "mask_size": float(sizes[i]),
                    "mask_asr": asr, "mask_steps": int(ran[i])})
    return out
