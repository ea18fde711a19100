"""The peers' named settings for their sanity check on the default victim (issue #16).

One table for `benchmarks/peer_sanity.py` (which runs them on the default BadNets 3×3 victim) and
`benchmarks/peer_column.py` (which runs one of them across the families grid). Each row: the
defense, its config, and why the setting was run; the benchmark's text says which were named in
advance and which were added after a miss.
"""

from __future__ import annotations

from ..defenses import ANPConfig, IBAUConfig, NCConfig, SAUConfig

BAR = {"asr_after": 0.10, "acc_drop_points": 5.0}
SETTINGS = {  # row name → (defense, config, why)
    "nc · published": ("nc", NCConfig(), "the paper's settings (the registry's default)"),
    "nc · log-scale MAD": ("nc", NCConfig(scale="log"), "norms compared by ratios, as BAERASER's detector"),
    "ibau · published": ("ibau", IBAUConfig(), "BackdoorBench's config (the registry's default)"),
    "ibau · authors' repository": ("ibau", IBAUConfig(lr=1e-3, batch_size=100),
                                   "the authors' defense.py: Adam lr 1e-3, batch 100"),
    "sau · published": ("sau", SAUConfig(), "BackdoorBench's config, 5 epochs (the registry's default)"),
    "sau · 20 epochs": ("sau", SAUConfig(epochs=20), "four times our CPU budget (the paper: 100)"),
    "sau · 100 epochs": ("sau", SAUConfig(epochs=100), "the paper's epoch count (about 70 minutes on this CPU)"),
    "sau · the paper's step count": ("sau", SAUConfig(epochs=13, batch_size=32),
                                     "batch 32, 13 epochs: ≈ 975 Adam steps on D_h's 2,400 training images, the "
                                     "paper's ≈ 1,000 (100 epochs of batch 256 on ≈ 2,500), in an eighth of its "
                                     "passes (added after 20 epochs missed)"),
    "sau · BatchNorm in train mode": ("sau", SAUConfig(train_mode=True),
                                      "the authors' --train_mode switch (lower ASR, some accuracy, by their note); "
                                      "5 epochs"),
    "sau · BatchNorm in train mode, 10 epochs": ("sau", SAUConfig(train_mode=True, epochs=10),
                                                 "the same switch at twice our CPU budget (added after 5 epochs "
                                                 "missed by 0.013 ASR)"),
    "anp · published": ("anp", ANPConfig(), "the paper's settings, 300 iterations (the registry's default)"),
    "anp · 2,000 iterations": ("anp", ANPConfig(iterations=2000), "the paper's iteration count"),
    "anp · cut chosen on validation": ("anp", ANPConfig(select="validation"),
                                       "BackdoorBench's sweep of cuts, the largest within 5 points on D_h "
                                       "validation (added after the two above missed)"),
}
