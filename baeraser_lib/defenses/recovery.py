"""Trigger recovery: the Max-entropy Staircase Approximator (MSA) over all labels at once.

The defender has the model, a clean holding set D_h and the number of classes; it knows neither
the trigger, nor where it sits, nor the target label. For every candidate label y_p:

1. **Placement search** (our extension of the paper; see the spec's "Stamping"). A free s×s patch
   is optimised at each position of a grid to send D_h images to y_p; per label, the worse half
   of the positions is dropped after each round, and each round gets twice the steps of the one
   before (successive halving). The best position's
   validation ASR is the label's *screening score*, and its patch is where the generator starts.
2. **Label pruning** (ours, for speed): labels whose screening score is far below τ are not worth
   the staircase; the rest go on (at most `max_candidates`, best first).
3. **Staircase** (the paper's MSA). A generator G maps noise to patches; stage i minimises
   mean max(0, ε_i − p_{y_p}(x ⊕ G(δ))) − λ_H · Î(δ; G(δ)), Î a MINE estimate, so G's output
   distribution is as wide as it can be while still reaching ε_i. Stage i+1 starts from stage i.
4. **Pool**: (y_p, G, position) joins the pool if G's ASR on held-out D_h images (true label ≠
   y_p) reaches τ.

All labels run in one vectorised pass: the generators and MINE networks are stacked along a label
axis and the victim sees one batch of stamped images for all labels. `mode="loop"` runs the same
computation one label at a time, every label through every stage (the reference).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import as_tensors, check_fraction
from ..errors import ConfigError
from ..train import pick_device, progress_kwargs
from ..triggers import check_fits, stamp
from . import networks as N

PLACEMENTS = ("grid", "random")


@dataclass(frozen=True)
class RecoveryConfig:
    """Every knob of MSA; defaults from the spec where it has one (ours otherwise)."""

    patch_size: int = 3  # the defender's guess of the trigger size s
    noise_dim: int = 64
    noise_chunks: int = 4
    hidden: int | None = None  # generator width; None: 32·C·s², within [128, 2048] (small patch, small net)
    mine_hidden: int = 128
    eps: tuple[float, ...] = (0.5, 0.8, 0.9)  # the staircase ε_1 < … < ε_n
    lambda_h: float = 0.1
    tau: float = 0.8  # ASR a recovered trigger needs to join the pool (ours; the paper's is unknown)
    steps_per_stage: int = 100
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    mine_lr: float = 1e-3  # ours (the spec gives none): the bound must tighten within a short stage
    init_spread: float = 1.0  # scale of the generator's output weights when it starts from the screened patch
    mine_ema: float = 0.01
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

    def __post_init__(self):
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        for name in ("patch_size", "noise_dim", "noise_chunks", "mine_hidden", "steps_per_stage", "batch_size",
                     "grid_size", "search_rounds", "search_steps", "search_batch", "search_val", "max_candidates",
                     "max_images_per_pass"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise ConfigError(f"hidden must be a positive integer or None (auto), got {self.hidden!r}")
        if self.noise_dim % self.noise_chunks:
            raise ConfigError(f"noise_dim {self.noise_dim} must split into {self.noise_chunks} equal chunks")
        if not self.eps:
            raise ConfigError("eps needs at least one threshold")
        for e in self.eps:
            check_fraction("each ε of the staircase", e)
        if list(self.eps) != sorted(set(self.eps)):
            raise ConfigError(f"the staircase must rise strictly: ε_1 < … < ε_n, got {self.eps}")
        for name in ("tau", "val_fraction", "mine_ema"):
            check_fraction(name, getattr(self, name))
        if not 0 < self.prune_fraction <= 1:
            raise ConfigError(f"prune_fraction must lie in (0, 1], got {self.prune_fraction!r}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"unknown placement {self.placement!r}; choose one of {list(PLACEMENTS)}")
        for name in ("lambda_h", "lr", "mine_lr", "search_lr", "init_spread"):
            if getattr(self, name) < 0 or (name != "lambda_h" and getattr(self, name) == 0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")

    def generator_width(self, channels: int) -> int:
        return self.hidden or int(min(2048, max(128, 32 * channels * self.patch_size ** 2)))


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
    offsets: dict[int, tuple[int, int] | None]  # per kept label; None = random placement
    seconds: float
    mode: str


def grid_offsets(h: int, w: int, s: int, n: int) -> torch.Tensor:
    """n×n top-left offsets spread evenly over the image, corners included: (n², 2)."""
    rows = torch.linspace(0, h - s, min(n, h - s + 1)).round().long().unique()
    cols = torch.linspace(0, w - s, min(n, w - s + 1)).round().long().unique()
    return torch.cartesian_prod(rows, cols)


def _label_generators(seed: int, labels: list[int], salt: int) -> list[torch.Generator]:
    """One torch.Generator per label, seeded by (seed, label, salt): a label's random stream never
    depends on which other labels run beside it, so batched and looped runs match."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + label * 7919 + salt) for label in labels]


def _split_holding(x: torch.Tensor, y: torch.Tensor, cfg: RecoveryConfig):
    n_val = round(cfg.val_fraction * len(x))
    if n_val < 2 or len(x) - n_val < 2:
        raise ConfigError(f"the holding set ({len(x)} images) is too small to split into recovery and "
                          f"validation parts (val_fraction={cfg.val_fraction}); use more holding data")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
    tr, va = perm[n_val:], perm[:n_val]
    return x[tr], y[tr], x[va], y[va]


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
    s = cfg.patch_size
    labels = [d["label"] for d in screened]
    k, out_dim, hidden = len(labels), c * s * s, cfg.generator_width(c)
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
    target = torch.tensor(labels, device=dev)
    b = cfg.batch_size
    per_pass = max(1, cfg.max_images_per_pass // b)

    def noise(n):
        return torch.stack([torch.rand(n, cfg.noise_dim, generator=g) for g in noise_gens]).to(dev)

    def offsets_of(sl):
        offs = offsets[sl]
        return None if offs[0] is None else torch.tensor(offs, device=dev)

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
            _, surrogate, _ = N.mine_terms(mine_p, d, d_marg, sample, ema, cfg.mine_ema)
            opt_t.zero_grad(set_to_none=True)
            (-surrogate.sum()).backward()
            opt_t.step()
            # 2. generator: hinge towards ε − λ_H · entropy estimate, in label chunks
            opt_g.zero_grad(set_to_none=True)
            new_ema = torch.empty_like(ema)
            for start in range(0, k, per_pass):
                sl = slice(start, start + per_pass)
                gp, mp = N.select(gen_p, sl), N.select(mine_p, sl)
                sample = N.generate(gp, d[sl], cfg.noise_chunks)
                dv, surrogate, new_ema[sl] = N.mine_terms(mp, d[sl], d_marg[sl], sample, ema[sl], cfg.mine_ema)
                xs = _stamp_many(xb, sample.view(-1, b, c, s, s), offsets_of(sl), place_gen)
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
            bar.update(1)
        stage_asr = _generator_asr(victim, gen_p, labels, offsets, xva, yva, shape, cfg)
        for i, label in enumerate(labels):
            logs.append({"label": label, "stage": stage, "eps": eps, "asr": stage_asr[i],
                         **{key: float(v[i]) / cfg.steps_per_stage for key, v in acc.items()}})
    bar.close()
    return {n: t.detach().cpu() for n, t in gen_p.items()}, stage_asr, logs


@torch.no_grad()
def _generator_asr(victim: _Victim, gen_p: N.Params, labels, offsets, xva, yva, shape, cfg) -> list[float]:
    """ASR of each label's generator on validation images of other labels (one sample per image)."""
    c, h, w = shape
    s = cfg.patch_size
    gens = _label_generators(cfg.seed, labels, 5)
    out = []
    for i, label in enumerate(labels):
        xv = xva[yva != label]
        d = torch.rand(1, len(xv), cfg.noise_dim, generator=gens[i]).to(victim.device)
        patches = N.generate(N.select(gen_p, slice(i, i + 1)), d, cfg.noise_chunks).view(1, len(xv), c, s, s)
        off = None if offsets[i] is None else torch.tensor([offsets[i]], device=victim.device)
        xs = _stamp_many(xv.to(victim.device), patches, off, torch.Generator().manual_seed(cfg.seed + 23))
        out.append(float((victim.predict(xs) == label).float().mean()))
    return out


def anomaly_index(scores: list[float]) -> list[float]:
    """(score − median) / (1.4826 · MAD): how far each label stands out (Neural Cleanse's rule).
    MAD is floored at 0.01 (about one validation image in a hundred), so that labels that all
    score 0 do not turn one hit into an infinite index."""
    t = torch.tensor(scores, dtype=torch.float64)
    med = t.median()
    mad = (t - med).abs().median() * 1.4826
    return ((t - med) / max(float(mad), 0.01)).tolist()


def recover_triggers(model: nn.Module, holding: Dataset, num_classes: int, cfg: RecoveryConfig = RecoveryConfig(),
                     device: torch.device | str | None = None, mode: str = "batched",
                     progress: bool = True) -> RecoveryResult:
    """Recover trigger generators for every label from `model` and clean data `holding` only.

    mode: "batched" (all labels in one vectorised pass, hopeless labels pruned after screening) or
    "loop" (the reference: one label at a time, every label through every stage, no pruning).
    """
    if mode not in ("batched", "loop"):
        raise ConfigError(f"unknown mode {mode!r}; use 'batched' or 'loop'")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer ≥ 2, got {num_classes!r}")
    x, y = as_tensors(holding)
    shape = tuple(x.shape[1:])
    check_fits(cfg.patch_size, "top_left", shape)
    xtr, ytr, xva, yva = _split_holding(x, y, cfg)
    device = pick_device() if device is None else torch.device(device)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out_classes = model(xtr[:2].to(device)).shape[1]
        if out_classes != num_classes:
            raise ConfigError(f"the model outputs {out_classes} classes, num_classes says {num_classes}")
        victim = _Victim(model, device, cfg.max_images_per_pass, num_classes)
        labels = list(range(num_classes))
        if mode == "batched":
            screened = _placement_search(victim, labels, xtr, xva, yva, shape, cfg, progress)
            go_on = [d for d in screened if not cfg.prune or d["screen_asr"] >= cfg.prune_fraction * cfg.tau]
            go_on = sorted(go_on, key=lambda d: -d["screen_asr"])[:cfg.max_candidates] if cfg.prune else go_on
            go_on = go_on or [max(screened, key=lambda d: d["screen_asr"])]
            go_on = sorted(go_on, key=lambda d: d["label"])
            gen_p, asr, logs = _staircase(victim, go_on, xtr, xva, yva, shape, cfg, progress)
            runs = [(go_on, gen_p, asr, logs)]
        else:
            screened, runs = [], []
            for label in tqdm(labels, desc="labels (reference loop)", **progress_kwargs(progress)):
                one = _placement_search(victim, [label], xtr, xva, yva, shape, cfg, False)
                screened += one
                runs.append((one, *_staircase(victim, one, xtr, xva, yva, shape, cfg, False)))
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.to(memory_format=torch.contiguous_format)
        model.train(was_training)
    seconds = time.perf_counter() - start

    per_label = {d["label"]: {"label": d["label"], "screen_asr": d["screen_asr"], "offset": d["offset"],
                              "recovered_asr": None, "staircase": False, "kept": False} for d in screened}
    kept, kept_params, logs_all = [], [], []
    for group, gen_p, asr, logs in runs:
        logs_all += logs
        for i, d in enumerate(group):
            row = per_label[d["label"]]
            row.update(recovered_asr=asr[i], staircase=True, kept=asr[i] >= cfg.tau)
            if row["kept"]:
                kept.append(d["label"])
                kept_params.append(N.select(gen_p, slice(i, i + 1)))
    rows = [per_label[label] for label in sorted(per_label)]
    scores = [r["recovered_asr"] if r["recovered_asr"] is not None else r["screen_asr"] for r in rows]
    for r, a in zip(rows, anomaly_index(scores)):
        r["anomaly_index"] = a
    generators = {n: torch.cat([p[n] for p in kept_params]) for n in kept_params[0]} if kept_params else {}
    return RecoveryResult(cfg, shape, num_classes, rows, logs_all, generators, kept,
                          {label: per_label[label]["offset"] for label in kept}, seconds, mode)
