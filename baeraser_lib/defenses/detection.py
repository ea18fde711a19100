"""Is this model backdoored? Neural Cleanse's outlier rule over per-label mask sizes.

A backdoor's target needs a far smaller change of the input than any other label (Wang et al.,
S&P 2019). `size_anomaly_index` says how many robust standard deviations a label's smallest
working mask sits below the others' (on a log scale: sizes compare by ratios, a 9- and a
90-pixel mask as far apart as 1 and 10). A label is flagged when its index reaches a threshold
fixed in advance: 2.0, Neural Cleanse's published value, not tuned on our victims.

`confirmed` is an optional second test (`BaeraserConfig(confirm=True)`): after unlearning, a
learned shortcut's smallest mask should grow. Measured here, it does not separate backdoors from
natural shortcuts (tiny clean models' labels grew 5.8–7.5×, a tiny backdoor's target 5.1×; on
Fashion-MNIST the natural "bag" shortcut grew 4.5–6.4×), so it is off by default.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError

DEFAULT_THRESHOLD = 2.0
DEFAULT_CONFIRM_RATIO = 2.0


def anomaly_index(scores: list[float], smaller_is_suspicious: bool = True) -> list[float]:
    """Robust z-score of each label against the others, positive = suspicious:
    (median − score) / (1.4826 · MAD), or its mirror. The MAD is floored at 0.01, so that equal
    scores do not turn a tiny difference into a huge index."""
    if len(scores) < 3:
        raise ConfigError(f"an anomaly index needs at least 3 labels, got {len(scores)}")
    t = torch.tensor(scores, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise ConfigError(f"per-label scores must be finite, got {scores}")
    med = t.median()
    mad = max(float((t - med).abs().median()) * 1.4826, 0.01)
    return ((med - t) / mad if smaller_is_suspicious else (t - med) / mad).tolist()


def size_anomaly_index(sizes: list[float]) -> list[float]:
    """The anomaly index of mask sizes (pixels), on a log scale (sizes below 0.1 pixel count as 0.1)."""
    return anomaly_index([math.log(max(s, 0.1)) for s in sizes])


def mask_growth(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """Per label: smallest working mask after unlearning / before (sizes below 0.1 pixel count as 0.1)."""
    return {k: after[k] / max(before[k], 0.1) for k in before}


def confirmed(before: dict[int, float], after: dict[int, float], ratio: float = DEFAULT_CONFIRM_RATIO) -> list[int]:
    """Suspects whose smallest working mask grew by `ratio` or more after unlearning, most grown first."""
    if not ratio > 1:
        raise ConfigError(f"the confirmation ratio must be greater than 1, got {ratio!r}")
    growth = mask_growth(before, after)
    return sorted((k for k, g in growth.items() if g >= ratio), key=lambda k: -growth[k])


def flag_labels(indices: list[float], threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """Positions whose anomaly index reaches the threshold, most anomalous first."""
    if not threshold > 0:
        raise ConfigError(f"the anomaly threshold must be positive, got {threshold!r}")
    return sorted((k for k, a in enumerate(indices) if a >= threshold), key=lambda k: -indices[k])
