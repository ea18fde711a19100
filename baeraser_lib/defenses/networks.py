"""Stacked generators and MINE statistics networks: one set of weights per candidate label,
held as tensors with a leading label axis, so all labels train in one pass of batched matmuls.

Generator G (the spec's MSA generator): noise δ ~ U[0,1)^D in `chunks` equal pieces, fed as skip
inputs to a 4-layer MLP (LeakyReLU 0.2 + BatchNorm over the noise batch on hidden layers), sigmoid
output of C×s×s pixels. BatchNorm always uses the statistics of the batch it is given (sample
in batches of ≥ 2), which keeps the batched and the per-label computations identical.

Statistics network T(δ, g): a 3-layer MLP on the concatenation [δ, g] → a scalar, for the
Donsker–Varadhan bound of I(δ; G(δ)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Params = dict[str, torch.Tensor]


def _linear(gens: list[torch.Generator], fan_in: int, fan_out: int, scale: float = 1.0):
    """Stacked (K, fan_in, fan_out) weights and (K, fan_out) biases, PyTorch's default uniform init,
    each label's slice drawn from its own generator (so one label's init never depends on K)."""
    bound = 1.0 / math.sqrt(fan_in)
    w = torch.stack([(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound * scale for g in gens])
    b = torch.stack([(torch.rand(fan_out, generator=g) * 2 - 1) * bound * scale for g in gens])
    return w, b


def _bmm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.baddbmm(b.unsqueeze(1), x, w)  # (K, B, in) @ (K, in, out) + (K, 1, out)


def _batchnorm(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = h.mean(1, keepdim=True)
    var = h.var(1, unbiased=False, keepdim=True)
    return (h - mean) / torch.sqrt(var + eps) * gamma.unsqueeze(1) + beta.unsqueeze(1)


def init_generators(gens: list[torch.Generator], noise_dim: int, chunks: int, hidden: int, out_dim: int,
                    init_output: torch.Tensor | None = None, init_spread: float = 1.0) -> Params:
    """Generator weights for len(gens) labels. `init_output` (K, out_dim) in (0, 1), if given, is
    where each generator starts: the output bias is its logit, and the output weights are scaled by
    `init_spread` (how widely the first samples scatter around it, in logit units)."""
    c = noise_dim // chunks
    p: Params = {}
    p["w1"], p["b1"] = _linear(gens, c, hidden)
    p["w2"], p["b2"] = _linear(gens, hidden + c, hidden)
    p["w3"], p["b3"] = _linear(gens, hidden + c, hidden)
    p["w4"], p["b4"] = _linear(gens, hidden + c, out_dim, scale=init_spread if init_output is not None else 1.0)
    if init_output is not None:
        p["b4"] = torch.logit(init_output.clamp(0.02, 0.98)).to(p["b4"].dtype)
    for i in (1, 2, 3):
        p[f"g{i}"] = torch.ones(len(gens), hidden)
        p[f"beta{i}"] = torch.zeros(len(gens), hidden)
    return p


def generate(p: Params, noise: torch.Tensor, chunks: int) -> torch.Tensor:
    """(K, B, noise_dim) noise → (K, B, out_dim) pixels in [0, 1]."""
    parts = noise.chunk(chunks, dim=-1)
    h = F.leaky_relu(_batchnorm(_bmm(parts[0], p["w1"], p["b1"]), p["g1"], p["beta1"]), 0.2)
    for i, part in zip((2, 3), parts[1:3]):
        h = F.leaky_relu(_batchnorm(_bmm(torch.cat([h, part], -1), p[f"w{i}"], p[f"b{i}"]),
                                    p[f"g{i}"], p[f"beta{i}"]), 0.2)
    return torch.sigmoid(_bmm(torch.cat([h, parts[-1]], -1), p["w4"], p["b4"]))


def init_statistics(gens: list[torch.Generator], noise_dim: int, out_dim: int, hidden: int) -> Params:
    p: Params = {}
    p["w1"], p["b1"] = _linear(gens, noise_dim + out_dim, hidden)
    p["w2"], p["b2"] = _linear(gens, hidden, hidden)
    p["w3"], p["b3"] = _linear(gens, hidden, 1)
    return p


def statistics(p: Params, noise: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
    """T(δ, g) for (K, B, D) noise and (K, B, out_dim) samples → (K, B)."""
    h = F.leaky_relu(_bmm(torch.cat([noise, sample], -1), p["w1"], p["b1"]), 0.2)
    h = F.leaky_relu(_bmm(h, p["w2"], p["b2"]), 0.2)
    return _bmm(h, p["w3"], p["b3"]).squeeze(-1)


def mine_terms(p: Params, noise: torch.Tensor, noise_marginal: torch.Tensor, sample: torch.Tensor,
               ema: torch.Tensor, ema_rate: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Donsker–Varadhan estimate of I(δ; g) per label, its bias-corrected surrogate, and the new EMA.

    dv = mean T(δ, g) − log mean exp T(δ', g)  (δ' independent noise: the product of marginals).
    The surrogate has the same value up to a constant but divides the second term's gradient by a
    moving average of mean exp T instead of the batch's own (MINE, Belghazi et al. 2018, §3.2),
    which removes the bias of mini-batch gradients.
    """
    t_joint = statistics(p, noise, sample)
    t_marg = statistics(p, noise_marginal, sample)
    log_mean_exp = torch.logsumexp(t_marg, 1) - math.log(t_marg.shape[1])
    dv = t_joint.mean(1) - log_mean_exp
    mean_exp = log_mean_exp.detach().exp()
    new_ema = torch.where(ema > 0, (1 - ema_rate) * ema + ema_rate * mean_exp, mean_exp)
    surrogate = t_joint.mean(1) - torch.exp(log_mean_exp - torch.log(new_ema))
    return dv, surrogate, new_ema


def select(p: Params, idx) -> Params:
    """The weights of the labels at positions `idx` of the stack (a view for autograd)."""
    return {k: v[idx] for k, v in p.items()}
