"""Trigger recovery: the Max-entropy Staircase Approximator (MSA) over all labels at once.

The defender has the model, a clean holding set D_h and the number of classes; it knows neither
the trigger (its size, shape, place or kind), nor the target label. Two trigger *forms*:

* `mask` (the default; our extension, see the spec's "Stamping"): a trigger is a full-image mask
  m ∈ [0,1]^{H×W} and a pattern p, stamped as (1 − m)⊙x + m⊙p. Patches of any size and place,
  sparse pixel sets and faint blends are all masks, so no guess is needed.
  1. **Mask search** (`mask_search`, Neural Cleanse's insight): per label, the smallest mask that
     sends D_h images there. All K labels in one stacked pass.
  2. **Detection** (`detection`): a backdoor's target needs a far smaller mask than the others;
     labels whose mask size is an outlier (anomaly index ≥ `anomaly_threshold`) are flagged. No
     flag: the model is judged clean, and the pool stays empty (unlearning leaves it alone).
  3. **Staircase** (the paper's MSA) on the flagged labels only (hopeless labels are pruned): a
     generator G maps noise to patterns inside the flagged mask; stage i minimises
     mean max(0, ε_i − p_{y_p}(x ⊕ G(δ))) − λ_H · Î(δ; m⊙G(δ)), Î a MINE estimate, so G's output
     distribution is as wide as it can be while still reaching ε_i. Stage i+1 starts from stage i.
  4. **Pool**: (y_p, G, m) joins the pool if G's ASR on held-out D_h images reaches τ.
* `patch` (the paper's authors' form, kept as an option): an s×s patch, s the defender's hint
  `patch_size`, placed by a successive-halving search over a grid of positions; labels are screened
  by that patch's ASR and the best go through the same staircase.

All labels run in one vectorised pass: masks, generators and MINE networks are stacked along a
label axis and the victim sees one batch of stamped images for all labels. `mode="loop"` runs the
same computation one label at a time, every label through every stage (the reference).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..checks import check_interval, rules, validate
from ..data import as_tensors, check_images, split_parts
from ..errors import ConfigError
from ..train import pick_device, progress_kwargs
from ..triggers import check_fits, stamp, stamp_mask
from . import networks as N
from .detection import DEFAULT_THRESHOLD, anomaly_index, flag_labels, size_anomaly_index
from .mask_search import label_generators as _label_generators
from .mask_search import mask_search

PLACEMENTS = ("grid", "random")
FORMS = ("mask", "patch")


@dataclass(frozen=True)
class RecoveryConfig:
    """Every knob of MSA; defaults from the spec where it has one (ours otherwise)."""

    form: str = "mask"  # mask: a full-image mask and pattern, no guess needed; patch: an s×s patch (hint below)
    patch_size: int = 3  # form="patch" only: the defender's guess of the trigger size s
    noise_dim: int = 64
    noise_chunks: int = 4
    hidden: int | None = None  # generator width; None: 256 for masks, 32·C·s² within [128, 2048] for patches
    mine_hidden: int = 128
    eps: tuple[float, ...] = (0.5, 0.8, 0.9)  # the staircase ε_1 < … < ε_n
    lambda_h: float = 0.1
    tau: float = 0.8  # ASR a recovered trigger needs to join the pool (ours; the paper's is unknown)
    steps_per_stage: int = 60
    batch_size: int = 32
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    mine_lr: float = 1e-3  # ours (the spec gives none): the bound must tighten within a short stage
    init_spread: float = 1.0  # scale of the generator's output weights when it starts from the screened patch
    mine_ema: float = 0.01
    mask_steps: int = 200  # form="mask": Adam steps of the mask search
    mask_batch: int = 16  # images per label and step of the mask search
    # halfway, only the labels with the smaller half of the masks go on: faster, but the stopped
    # labels' sizes are upper bounds that widen the MAD (a tiny victim's target fell from index ≥ 2
    # to 0.67), so it is off by default
    mask_halving: bool = False
    mask_lr: float = 0.1
    mask_init: float = 0.0  # the masks' starting logit (0: every pixel half covered)
    mask_cost: float = 1e-3  # the mask-size weight λ_k each label starts from
    cost_up: float = 1.2  # λ_k × cost_up when the batch reaches mask_asr, ÷ cost_up^1.5 when not
    mask_asr: float = 0.9  # the ASR each mask must keep while it shrinks
    anomaly_threshold: float = DEFAULT_THRESHOLD  # flag labels whose mask-size anomaly index reaches this
    placement: str = "grid"  # grid: search a grid of positions; random: a new place per image (authors' code)
    grid_size: int = 5  # grid_size × grid_size candidate positions, corners included
    search_rounds: int = 3  # successive-halving rounds of the placement search
    search_steps: int = 8  # Adam steps in the last round; each earlier round has half the next one's
    search_batch: int = 8
    search_val: int = 128  # validation images per label to score the surviving positions
    search_lr: float = 0.1
    prune: bool = True
    prune_fraction: float = 0.5  # go on only if screening score ≥ prune_fraction · τ
    max_candidates: int = 3
    val_fraction: float = 0.25  # share of D_h held out to measure recovered ASR
    max_images_per_pass: int = 256  # victim images per forward pass (memory bound; ~fastest on CPU)
    seed: int = 0

    RULES: ClassVar = rules(
        patch_size="[1, 4096]", noise_dim="[1, 65536]", noise_chunks="[1, 65536]", hidden="[1, 65536]",
        mine_hidden="[1, 65536]", lambda_h="[0, 1000]", tau="(0, 1)", steps_per_stage="[1, 1000000]",
        batch_size="[1, 65536]", lr="(0, 10]", mine_lr="(0, 10]", init_spread="(0, 1000]", mine_ema="(0, 1)",
        mask_steps="[1, 1000000]", mask_batch="[2, 65536]", mask_lr="(0, 1000]", mask_init="[-20, 20]",
        mask_cost="(0, 1000]", cost_up="(1, 10]", mask_asr="(0, 1)", anomaly_threshold="(0, 100]",
        grid_size="[1, 4096]", search_rounds="[1, 100]", search_steps="[1, 1000000]", search_batch="[1, 65536]",
        search_val="[1, 1000000]", search_lr="(0, 1000]", prune_fraction="(0, 1]", max_candidates="[1, 1000]",
        val_fraction="(0, 1)", max_images_per_pass="[1, 1000000]", seed="[0, 4294967295]")

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.form not in FORMS:
            raise ConfigError(f"unknown trigger form {self.form!r}; choose one of {list(FORMS)}")
        if self.noise_dim % self.noise_chunks:
            raise ConfigError(f"noise_dim {self.noise_dim} must split into {self.noise_chunks} equal chunks")
        if not self.eps:
            raise ConfigError("eps needs at least one threshold")
        for e in self.eps:
            check_interval("each ε of the staircase", e, "(0, 1)")
        if list(self.eps) != sorted(set(self.eps)):
            raise ConfigError(f"the staircase must rise strictly: ε_1 < … < ε_n, got {self.eps}")
        if len(self.betas) != 2:
            raise ConfigError(f"betas must be Adam's pair (β₁, β₂), got {self.betas}")
        for b in self.betas:
            check_interval("each Adam β", b, "[0, 1)")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"unknown placement {self.placement!r}; choose one of {list(PLACEMENTS)}")

    def generator_width(self, channels: int) -> int:
        if self.hidden:
            return self.hidden
        return 256 if self.form == "mask" else int(min(2048, max(128, 32 * channels * self.patch_size ** 2)))

    def pattern_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """What the generator emits: the whole image (mask form) or an s×s patch."""
        c, h, w = image_shape
        return (c, h, w) if self.form == "mask" else (c, self.patch_size, self.patch_size)


@dataclass
class RecoveryResult:
    """What recovery found. `per_label[k]` has the screening and staircase figures of label k."""

    config: RecoveryConfig
    image_shape: tuple[int, int, int]
    num_classes: int
    per_label: list[dict]
    stage_logs: list[dict]  # one row per (label, stage): hinge, entropy estimate, target probability
    generators: N.Params  # stacked weights of the labels in `kept`, in that order
    kept: list[int]
    offsets: dict[int, tuple[int, int] | None]  # per kept label; None = random placement or a mask
    seconds: float
    mode: str
    flagged: list[int]  # the verdict: labels judged to be backdoor targets, most anomalous first
    masks: dict[int, torch.Tensor]  # mask form: per kept label, its (1, H, W) mask

    @property
    def backdoored(self) -> bool:
        """Does the model look backdoored (some label flagged)?"""
        return bool(self.flagged)


def grid_offsets(h: int, w: int, s: int, n: int) -> torch.Tensor:
    """n×n top-left offsets spread evenly over the image, corners included: (n², 2)."""
    rows = torch.linspace(0, h - s, min(n, h - s + 1)).round().long().unique()
    cols = torch.linspace(0, w - s, min(n, w - s + 1)).round().long().unique()
    return torch.cartesian_prod(rows, cols)


def _split_holding(x: torch.Tensor, y: torch.Tensor, cfg: RecoveryConfig):
    return split_parts(x, y, cfg.val_fraction, cfg.seed, user="recovery")


class _Victim:
    """The frozen model: forward passes with input gradients only, in chunks that bound memory.
    On CPU, inputs go in channels-last layout (several times faster for these convolutions)."""

    def __init__(self, model: nn.Module, device: torch.device, max_images: int, num_classes: int):
        self.model, self.device, self.max_images, self.num_classes = model, device, max_images, num_classes
        self.layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=self.layout)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.model(self._in(x)), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(self._in(c)).argmax(1) for c in x.split(self.max_images)])


def _stamp_many(x: torch.Tensor, patches: torch.Tensor, offsets, gen: torch.Generator | None) -> torch.Tensor:
    """x (B, C, H, W), patches (M, B, C, s, s), offsets (M, 2) or None (random) → (M·B, C, H, W)."""
    m, b = patches.shape[:2]
    xs = x.unsqueeze(0).expand(m, *x.shape).reshape(m * b, *x.shape[1:])
    flat = patches.reshape(m * b, *patches.shape[2:])
    if offsets is None:
        return stamp(xs, flat, "random", gen)
    return stamp(xs, flat, offsets.repeat_interleave(b, 0))


def _placement_search(victim: _Victim, labels: list[int], xtr, xva, yva, shape, cfg, progress):
    """Per label: best position and its optimised patch, and the screening ASR there."""
    c, h, w = shape
    s = cfg.patch_size
    k = len(labels)
    cand = grid_offsets(h, w, s, cfg.grid_size) if cfg.placement == "grid" else None
    n_pos = len(cand) if cand is not None else 1
    gens = _label_generators(cfg.seed, labels, salt=1)
    logits = torch.stack([torch.rand(n_pos, c, s, s, generator=g) * 4 - 2 for g in gens]).to(victim.device)
    offsets = (cand.unsqueeze(0).expand(k, n_pos, 2).clone() if cand is not None else None)
    img_gen = torch.Generator().manual_seed(cfg.seed + 11)
    target = torch.tensor(labels, device=victim.device)
    pairs_per_pass = max(1, cfg.max_images_per_pass // cfg.search_batch)
    # successive halving: few steps while many positions compete, more as they thin out
    steps = [max(1, cfg.search_steps >> (cfg.search_rounds - 1 - r)) for r in range(cfg.search_rounds)]
    bar = tqdm(total=sum(steps), desc="placement search", leave=False,
               **progress_kwargs(progress))
    for rnd in range(cfg.search_rounds):
        logits = logits.detach().requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=cfg.search_lr)
        score = torch.zeros(k, logits.shape[1], device=victim.device)
        for _ in range(steps[rnd]):
            idx = torch.randint(0, len(xtr), (cfg.search_batch,), generator=img_gen)
            xb = xtr[idx].to(victim.device)
            opt.zero_grad(set_to_none=True)
            flat_logits = logits.reshape(k * logits.shape[1], c, s, s)
            flat_off = offsets.reshape(-1, 2) if offsets is not None else None
            flat_target = target.repeat_interleave(logits.shape[1])
            lp_all = []
            for start in range(0, len(flat_logits), pairs_per_pass):  # memory-bounded chunks
                sl = slice(start, start + pairs_per_pass)
                patches = torch.sigmoid(flat_logits[sl]).unsqueeze(1).expand(-1, len(xb), c, s, s)
                xs = _stamp_many(xb, patches, flat_off[sl] if flat_off is not None else None, img_gen)
                lp = victim.log_probs(xs).view(-1, len(xb), victim.num_classes)
                lp_t = lp.gather(2, flat_target[sl].view(-1, 1, 1).expand(-1, len(xb), 1)).squeeze(2)
                (-lp_t.mean(1)).sum().backward()
                lp_all.append(lp_t.detach().exp().mean(1))
            if not torch.isfinite(logits.grad).all():
                raise FloatingPointError("placement search: the patch gradients became non-finite")
            opt.step()
            score = torch.cat(lp_all).view(k, -1)  # the last step's mean target probability
            bar.update(1)
        if rnd < cfg.search_rounds - 1 and logits.shape[1] > 1:  # successive halving, per label
            keep = score.topk(max(1, math.ceil(logits.shape[1] / 2)), dim=1).indices
            logits = torch.stack([logits[i, keep[i]] for i in range(k)]).detach()
            if offsets is not None:
                offsets = torch.stack([offsets[i, keep[i].cpu()] for i in range(k)])
    bar.close()
    patches = torch.sigmoid(logits.detach())  # (k, P_left, c, s, s)
    val_gen = torch.Generator().manual_seed(cfg.seed + 12)
    asr = torch.zeros(k, patches.shape[1])
    for i, label in enumerate(labels):
        xv = xva[yva != label][:cfg.search_val]
        for j in range(patches.shape[1]):
            xs = _stamp_many(xv, patches[i, j].expand(1, len(xv), c, s, s).cpu(),
                             offsets[i, j:j + 1] if offsets is not None else None, val_gen)
            asr[i, j] = (victim.predict(xs).cpu() == label).float().mean()
    best = (asr + 1e-3 * score.cpu()).argmax(1)  # ties broken by the target probability
    out = []
    for i, label in enumerate(labels):
        j = int(best[i])
        off = tuple(int(v) for v in offsets[i, j]) if offsets is not None else None
        out.append({"label": label, "screen_asr": float(asr[i, j]), "offset": off, "patch": patches[i, j].cpu()})
    return out


def _staircase(victim: _Victim, screened: list[dict], xtr, xva, yva, shape, cfg: RecoveryConfig, progress):
    """Train stacked generators through the ε staircase; return weights, per-label ASR, stage logs."""
    c, h, w = shape
    labels = [d["label"] for d in screened]
    out_dim = math.prod(cfg.pattern_shape(shape))
    k, hidden = len(labels), cfg.generator_width(c)
    dev = victim.device
    init_out = torch.stack([d["patch"].reshape(-1) for d in screened])
    gen_p = {n: t.to(dev).requires_grad_(True) for n, t in N.init_generators(
        _label_generators(cfg.seed, labels, 2), cfg.noise_dim, cfg.noise_chunks, hidden, out_dim, init_out,
        cfg.init_spread).items()}
    mine_p = {n: t.to(dev).requires_grad_(True) for n, t in N.init_statistics(
        _label_generators(cfg.seed, labels, 3), cfg.noise_dim, out_dim, cfg.mine_hidden).items()}
    opt_g = torch.optim.Adam(gen_p.values(), lr=cfg.lr, betas=cfg.betas)
    opt_t = torch.optim.Adam(mine_p.values(), lr=cfg.mine_lr, betas=cfg.betas)
    ema = torch.zeros(k, device=dev)
    noise_gens = _label_generators(cfg.seed, labels, 4)
    img_gen = torch.Generator().manual_seed(cfg.seed + 21)
    place_gen = torch.Generator().manual_seed(cfg.seed + 22)
    offsets = [d["offset"] for d in screened]
    # mask form: each suspect's mask goes on from the search, free to grow as far as the hinge needs
    # (no size penalty here); the entropy term acts on the pattern only (the mask is detached there)
    mask_logit = torch.logit(torch.stack([d["mask"] for d in screened]).clamp(1e-4, 1 - 1e-4)).to(dev) \
        .requires_grad_(True) if cfg.form == "mask" else None
    opt_m = torch.optim.Adam([mask_logit], lr=cfg.mask_lr, betas=(0.5, 0.9)) if mask_logit is not None else None
    target = torch.tensor(labels, device=dev)
    b = cfg.batch_size
    per_pass = max(1, cfg.max_images_per_pass // b)

    def noise(n):
        return torch.stack([torch.rand(n, cfg.noise_dim, generator=g) for g in noise_gens]).to(dev)

    def offsets_of(sl):
        offs = offsets[sl]
        return None if offs[0] is None else torch.tensor(offs, device=dev)

    def masks_now():
        return torch.sigmoid(mask_logit) if mask_logit is not None else None

    def visible(masks):  # what the entropy term sees: the part of a sample inside the mask
        return masks.detach().expand(-1, c, h, w).reshape(len(masks), 1, -1) if masks is not None else None

    logs = []
    bar = tqdm(total=len(cfg.eps) * cfg.steps_per_stage, desc=f"staircase ({k} labels)", leave=False,
               **progress_kwargs(progress))
    for stage, eps in enumerate(cfg.eps, start=1):
        acc = {"hinge": torch.zeros(k), "entropy": torch.zeros(k), "target_prob": torch.zeros(k)}
        for _ in range(cfg.steps_per_stage):
            idx = torch.randint(0, len(xtr), (b,), generator=img_gen)
            xb = xtr[idx].to(dev)
            d, d_marg = noise(b), noise(b)
            # 1. tighten the MINE bound (generator fixed)
            with torch.no_grad():
                sample = N.generate(gen_p, d, cfg.noise_chunks)
                masks = masks_now()
            _, surrogate, _ = N.mine_terms(mine_p, d, d_marg, _seen(sample, visible(masks)), ema, cfg.mine_ema)
            opt_t.zero_grad(set_to_none=True)
            (-surrogate.sum()).backward()
            opt_t.step()
            # 2. generator: hinge towards ε − λ_H · entropy estimate, in label chunks
            opt_g.zero_grad(set_to_none=True)
            if opt_m is not None:
                opt_m.zero_grad(set_to_none=True)
            new_ema = torch.empty_like(ema)
            for start in range(0, k, per_pass):
                sl = slice(start, start + per_pass)
                gp, mp = N.select(gen_p, sl), N.select(mine_p, sl)
                sample = N.generate(gp, d[sl], cfg.noise_chunks)
                m = torch.sigmoid(mask_logit[sl]) if mask_logit is not None else None
                dv, surrogate, new_ema[sl] = N.mine_terms(mp, d[sl], d_marg[sl], _seen(sample, visible(m)),
                                                          ema[sl], cfg.mine_ema)
                xs = _stamp_samples(xb, sample, cfg, shape, offsets_of(sl), m, place_gen)
                lp = victim.log_probs(xs).view(-1, b, victim.num_classes)
                p_t = lp.gather(2, target[sl].view(-1, 1, 1).expand(-1, b, 1)).squeeze(2).exp()
                hinge = F.relu(eps - p_t).mean(1)
                loss = hinge - cfg.lambda_h * surrogate
                if not torch.isfinite(loss).all():
                    bad = [labels[start + i] for i in torch.nonzero(~torch.isfinite(loss)).flatten().tolist()]
                    raise FloatingPointError(f"recovery: the generator loss became non-finite at stage {stage} "
                                             f"for labels {bad}; lower lr or lambda_h")
                loss.sum().backward()
                acc["hinge"][sl] += hinge.detach().cpu()
                acc["entropy"][sl] += dv.detach().cpu()
                acc["target_prob"][sl] += p_t.detach().mean(1).cpu()
            ema = new_ema.detach()
            opt_g.step()
            if opt_m is not None:
                opt_m.step()
            bar.update(1)
        with torch.no_grad():
            stage_asr = _generator_asr(victim, gen_p, labels, offsets, masks_now(), xva, yva, shape, cfg)
        for i, label in enumerate(labels):
            logs.append({"label": label, "stage": stage, "eps": eps, "asr": stage_asr[i],
                         **{key: float(v[i]) / cfg.steps_per_stage for key, v in acc.items()}})
    bar.close()
    final = masks_now()
    return ({n: t.detach().cpu() for n, t in gen_p.items()}, stage_asr, logs,
            final.detach().cpu() if final is not None else None)


def _seen(sample: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
    """Mask form: only the pixels inside the mask count for the entropy estimate."""
    return sample if visible is None else sample * visible


def _stamp_samples(x: torch.Tensor, sample: torch.Tensor, cfg: RecoveryConfig, shape, offsets, masks,
                   gen: torch.Generator | None) -> torch.Tensor:
    """x (B, C, H, W) and generator samples (M, B, out_dim) → (M·B, C, H, W) stamped images: through
    each label's mask (M, 1, H, W) for the mask form, as patches at `offsets` for the patch form."""
    m, b = sample.shape[:2]
    pattern = sample.view(m, b, *cfg.pattern_shape(shape))
    if cfg.form == "mask":
        return stamp_mask(x.unsqueeze(0), masks.unsqueeze(1), pattern).reshape(m * b, *shape)
    return _stamp_many(x, pattern, offsets, gen)


@torch.no_grad()
def _generator_asr(victim: _Victim, gen_p: N.Params, labels, offsets, masks, xva, yva, shape, cfg) -> list[float]:
    """ASR of each label's generator on validation images of other labels (one sample per image)."""
    gens = _label_generators(cfg.seed, labels, 5)
    out = []
    for i, label in enumerate(labels):
        xv = xva[yva != label].to(victim.device)
        d = torch.rand(1, len(xv), cfg.noise_dim, generator=gens[i]).to(victim.device)
        sample = N.generate(N.select(gen_p, slice(i, i + 1)), d, cfg.noise_chunks)
        off = None if offsets[i] is None else torch.tensor([offsets[i]], device=victim.device)
        xs = _stamp_samples(xv, sample, cfg, shape, off, masks[i:i + 1] if masks is not None else None,
                            torch.Generator().manual_seed(cfg.seed + 23))
        out.append(float((victim.predict(xs) == label).float().mean()))
    return out


def recover_triggers(model: nn.Module, holding: Dataset, num_classes: int, cfg: RecoveryConfig = RecoveryConfig(),
                     device: torch.device | str | None = None, mode: str = "batched",
                     progress: bool = True) -> RecoveryResult:
    """Recover trigger generators for every label from `model` and clean data `holding` only, and
    judge whether the model looks backdoored (`result.flagged`, `result.backdoored`).

    mode: "batched" (all labels in one vectorised pass, hopeless labels pruned after screening) or
    "loop" (the reference: one label at a time, every label through every stage, no pruning).
    """
    if mode not in ("batched", "loop"):
        raise ConfigError(f"unknown mode {mode!r}; use 'batched' or 'loop'")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 3:
        raise ConfigError(f"num_classes must be an integer ≥ 3 (detection compares labels), got {num_classes!r}")
    x, y = as_tensors(holding)
    check_images(x, None, None, "holding data")
    shape = tuple(x.shape[1:])
    if cfg.form == "patch":
        check_fits(cfg.patch_size, "top_left", shape)
    xtr, ytr, xva, yva = _split_holding(x, y, cfg)
    device = pick_device() if device is None else torch.device(device)
    check_model_input(model, x, num_classes, device)
    check_images(x, y, num_classes, "holding data")
    start = time.perf_counter()
    with _frozen(model, device):
        victim = _Victim(model, device, cfg.max_images_per_pass, num_classes)
        search = _mask_screen if cfg.form == "mask" else _placement_search
        if mode == "loop":  # the reference: every label runs the whole schedule
            cfg = dataclasses.replace(cfg, mask_halving=False)
        labels = list(range(num_classes))
        if mode == "batched":
            screened = search(victim, labels, xtr, xva, yva, shape, cfg, progress)
            go_on = _candidates(screened, cfg)
            runs = [(go_on, *_staircase(victim, go_on, xtr, xva, yva, shape, cfg, progress))] if go_on else []
        else:
            screened, runs = [], []
            for label in tqdm(labels, desc="labels (reference loop)", **progress_kwargs(progress)):
                one = search(victim, [label], xtr, xva, yva, shape, cfg, False)
                screened += one
                runs.append((one, *_staircase(victim, one, xtr, xva, yva, shape, cfg, False)))
            if cfg.form == "mask":
                _rank(screened, cfg)
    seconds = time.perf_counter() - start
    return _result(screened, runs, cfg, shape, num_classes, seconds, mode)


@contextlib.contextmanager
def _frozen(model: nn.Module, device: torch.device):
    """The model in eval mode on `device`, no weight gradients (channels-last on CPU); restored after."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def mask_sizes(model: nn.Module, holding: Dataset, num_classes: int, labels: list[int],
               cfg: RecoveryConfig = RecoveryConfig(), device=None) -> dict[int, float]:
    """The smallest working mask size of each of `labels`: the mask search alone, on the same split
    of D_h and the same image batches as `recover_triggers` (used to confirm suspects)."""
    return {d["label"]: d["mask_size"] for d in reverse_masks(model, holding, num_classes, labels, cfg, device)}


def reverse_masks(model: nn.Module, holding: Dataset, num_classes: int, labels: list[int] | None = None,
                  cfg: RecoveryConfig = RecoveryConfig(), device=None, progress: bool = False) -> list[dict]:
    """Neural Cleanse's reverse engineering: per label (all by default), the smallest working mask
    (1, H, W) and its pattern (C, H, W), their size and validation ASR; the mask search alone, on
    recovery's own split of D_h."""
    x, y = as_tensors(holding)
    check_images(x, None, None, "holding data")
    xtr, _, xva, yva = _split_holding(x, y, cfg)
    device = pick_device() if device is None else torch.device(device)
    check_model_input(model, x, num_classes, device)
    check_images(x, y, num_classes, "holding data")
    labels = list(range(num_classes)) if labels is None else list(labels)
    with _frozen(model, device):
        victim = _Victim(model, device, cfg.max_images_per_pass, num_classes)
        return mask_search(victim, labels, xtr, xva, yva, tuple(x.shape[1:]),
                           dataclasses.replace(cfg, mask_halving=False), progress=progress)


def check_model_input(model: nn.Module, x: torch.Tensor, num_classes: int, device) -> None:
    """A clear ConfigError before any compute if the model cannot take the holding images (shape,
    channels), outputs another number of classes, or outputs NaN or inf."""
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and x.ndim == 4 and first_conv.in_channels != x.shape[1]:
        raise ConfigError(f"the holding images have {x.shape[1]} channel(s), the model's first convolution "
                          f"takes {first_conv.in_channels}: give holding data of the model's own input format")
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:8].to(device))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"the model does not accept holding images of shape {tuple(x.shape[1:])}: "
                          f"{str(err).splitlines()[0]}") from None
    finally:
        model.train(was)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ConfigError(f"the model outputs shape {tuple(out.shape)} for a batch; num_classes says {num_classes}")
    if not torch.isfinite(out).all():
        raise ConfigError("the model outputs NaN or inf on clean holding images: nothing to recover from "
                          "(check the checkpoint and the input scaling, [0, 1] pixels)")


def _mask_screen(victim, labels, xtr, xva, yva, shape, cfg, progress) -> list[dict]:
    """Mask search, in the row format the staircase starts from."""
    return [{**d, "patch": d["pattern"], "offset": None, "screen_asr": d["mask_asr"]}
            for d in mask_search(victim, labels, xtr, xva, yva, shape, cfg, progress)]


def _rank(screened: list[dict], cfg: RecoveryConfig) -> list[int]:
    """Mask form: the anomaly index of each label's mask size (log scale) and the flagged labels:
    index ≥ `anomaly_threshold`, most anomalous first, at most `max_candidates`."""
    index = size_anomaly_index([d["mask_size"] for d in screened])
    flagged = [screened[i]["label"] for i in flag_labels(index, cfg.anomaly_threshold)][:cfg.max_candidates]
    for d, a in zip(screened, index):
        d["anomaly_index"], d["candidate"] = a, d["label"] in flagged
    return flagged


def _candidates(screened: list[dict], cfg: RecoveryConfig) -> list[dict]:
    """Which labels go through the staircase (batched mode), in label order.

    Mask form: the flagged labels (none for a model judged clean). Patch form: labels whose
    screening ASR reaches prune_fraction · τ, best first."""
    if cfg.form == "mask":
        flagged = _rank(screened, cfg)
        return sorted((d for d in screened if d["label"] in flagged), key=lambda d: d["label"])
    go_on = [d for d in screened if not cfg.prune or d["screen_asr"] >= cfg.prune_fraction * cfg.tau]
    go_on = sorted(go_on, key=lambda d: -d["screen_asr"])[:cfg.max_candidates] if cfg.prune else go_on
    go_on = go_on or [max(screened, key=lambda d: d["screen_asr"])]
    return sorted(go_on, key=lambda d: d["label"])


def _result(screened, runs, cfg: RecoveryConfig, shape, num_classes: int, seconds: float, mode: str) -> RecoveryResult:
    """Per-label rows, the pool's generators and the verdict."""
    per_label = {}
    for d in screened:
        row = {"label": d["label"], "screen_asr": d["screen_asr"], "offset": d["offset"],
               "recovered_asr": None, "staircase": False, "kept": False}
        if cfg.form == "mask":
            row.update(mask_size=d["mask_size"], mask_asr=d["mask_asr"], mask_steps=d["mask_steps"],
                       anomaly_index=d["anomaly_index"], candidate=d["candidate"])
        per_label[d["label"]] = row
    masks_of = {}
    kept, kept_params, logs_all = [], [], []
    for group, gen_p, asr, logs, masks in runs:
        logs_all += logs
        for i, d in enumerate(group):
            row = per_label[d["label"]]
            if masks is not None:  # the staircase's final mask of this label
                masks_of[d["label"]] = masks[i]
                row["staircase_mask_size"] = float(masks[i].sum())
            row.update(recovered_asr=asr[i], staircase=True,
                       kept=asr[i] >= cfg.tau and (cfg.form == "patch" or row["candidate"]))
            if row["kept"]:
                kept.append(d["label"])
                kept_params.append(N.select(gen_p, slice(i, i + 1)))
    rows = [per_label[label] for label in sorted(per_label)]
    if cfg.form == "patch":  # the recovered (or screening) ASR stands out for a backdoor's target
        scores = [r["recovered_asr"] if r["recovered_asr"] is not None else r["screen_asr"] for r in rows]
        for r, a in zip(rows, anomaly_index(scores, smaller_is_suspicious=False)):
            r["anomaly_index"], r["candidate"] = a, r["kept"]  # patch form: pooled = flagged
    flagged = sorted((r["label"] for r in rows if r["candidate"]), key=lambda k: -per_label[k]["anomaly_index"])
    generators = {n: torch.cat([p[n] for p in kept_params]) for n in kept_params[0]} if kept_params else {}
    masks = {k: masks_of[k] for k in kept} if cfg.form == "mask" else {}
    return RecoveryResult(cfg, shape, num_classes, rows, logs_all, generators, kept,
                          {label: per_label[label]["offset"] for label in kept}, seconds, mode, flagged, masks)
