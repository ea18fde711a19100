"""Building blocks of the ablations (notebook 04) and of the widget panel.

`AblationBench` holds one experiment's data and configs and hands out victims and trigger pools
from the artifact cache (training or recovering only what is missing), so a sweep never
retrains what did not change. `run_defenses` runs defenses by name on one footing;
`position_figures` scores a model with the true trigger moved elsewhere. The claims judged on
these numbers live in `claims`.

As everywhere, defenses receive a model, D_h and (BAERASER) the recovered pool; test data and the
true trigger appear only in the scoring helpers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import AttackConfig, TrainConfig
from ..data import ExperimentData, holding_sweep
from ..defenses import DEFENSES, ANPConfig, BaeraserConfig, IBAUConfig, NCConfig, SAUConfig, names
from ..defenses.fineprune import FinePruneConfig
from ..defenses.finetune import FinetuneConfig
from ..defenses.nad import NADConfig
from ..defenses.detection import DEFAULT_CONFIRM_RATIO
from ..defenses.pool import TriggerPool, obtain_pool
from ..defenses.recovery import RecoveryConfig
from ..defenses.unlearning import UnlearnConfig, unlearn_or_keep
from ..errors import ConfigError
from ..metrics import backdoor_metrics, der, evaluate
from ..triggers import Trigger, check_fits, fixed_offset, parse_position
from ..artifacts import is_complete
from ..victims import TrainedModel, check_attack, model_path, obtain_model

COMPARED = tuple(names("ours", "baseline"))  # BAERASER and the paper's baselines, in registry order
RUNNABLE = tuple(names("ours", "baseline", "peer"))  # what the panel and `run_defenses` can run: the peers too

# Sweep grids by name: "full" is the grid, "reduced" what `make reports` runs on a CPU,
# "smoke" what the tests run. Each key may be overridden by a notebook parameter.
GRIDS: dict[str, dict] = {
    "full": {"beta_ratios": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "holding_ratios": [0.01, 0.02, 0.05, 0.1],
             "trigger_sizes": [3, 5, 7], "lambda_h_values": [0.0, 0.01, 0.1, 1.0]},
    "reduced": {"beta_ratios": [1e-4, 1.0, 100.0], "holding_ratios": [0.01, 0.05], "trigger_sizes": [3, 7],
                "lambda_h_values": [0.0, 0.1, 1.0]},
    "smoke": {"beta_ratios": [1e-4, 100.0], "holding_ratios": [0.2, 0.25], "trigger_sizes": [3, 5],
              "lambda_h_values": [0.0, 0.1]},
}


def check_ablation_attack(attack: AttackConfig, dataset: str) -> None:
    """ConfigError unless the ablations can run on `attack`: they resize and move a patch and score
    one target label, so they need an all-to-one patch attack (BadNets, TrojanNN, IMC)."""
    from ..data import dataset_info

    rule = attack.spec.target_rule(attack, dataset_info(dataset).num_classes)
    if not attack.spec.patch or rule.mode != "all_to_one":
        raise ConfigError(f"notebook 04's ablations resize and move a patch trigger with one target label; "
                          f"attack {attack.name!r} ({rule.describe()}) is not such an attack: run 04 on "
                          f"badnets, trojannn or imc (all-to-one)")


def grid_values(grid: str, **overrides) -> dict:
    """The sweep values of `grid`, with any non-None override replacing the grid's list."""
    if grid not in GRIDS:
        raise ConfigError(f"unknown grid {grid!r}; choose one of {list(GRIDS)}")
    unknown = set(overrides) - set(GRIDS[grid])
    if unknown:
        raise ConfigError(f"unknown sweep(s) {sorted(unknown)}; the grids sweep {sorted(GRIDS[grid])}")
    out = {k: list(v) for k, v in GRIDS[grid].items()}
    for k, v in overrides.items():
        if v is None:
            continue
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"the sweep {k} must be a list of values, got {v!r}")
        out[k] = list(v)
    for k, v in out.items():
        if len(v) < 2:
            raise ConfigError(f"the sweep {k} needs at least two values to show a trend, got {v!r}")
    for v in out["beta_ratios"]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ConfigError(f"β/α values must be positive numbers, got {v!r}")
    for v in out["holding_ratios"]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ConfigError(f"holding ratios must lie in (0, 1), got {v!r}")
    for v in out["lambda_h_values"]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"λ_H values must be numbers ≥ 0, got {v!r}")
    for v in out["trigger_sizes"]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"trigger sizes must be positive integers, got {v!r}")
    return out


@dataclass(frozen=True)
class DefenseSuite:
    """The settings of every defense, so a sweep changes one and keeps the rest."""

    unlearn: UnlearnConfig = UnlearnConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    fineprune: FinePruneConfig = FinePruneConfig()
    nad: NADConfig = NADConfig()
    nc: NCConfig = NCConfig()
    ibau: IBAUConfig = IBAUConfig()
    sau: SAUConfig = SAUConfig()
    anp: ANPConfig = ANPConfig()
    confirm_ratio: float = DEFAULT_CONFIRM_RATIO  # BAERASER's confirmation of suspects (with `per_label`)

    def config(self, name: str, pool: TriggerPool | None = None):
        """The registered defense `name`'s config in this suite (BAERASER's recovery part: the pool's)."""
        if name == "baeraser":
            recovery = pool.config if pool is not None else RecoveryConfig()
            return BaeraserConfig(recovery=recovery, unlearn=self.unlearn, confirm_ratio=self.confirm_ratio)
        return getattr(self, name)


@dataclass
class Repaired:
    model: nn.Module
    history: list[dict]
    seconds: float


def run_defenses(model: nn.Module, holding: Dataset, pool: TriggerPool | None, suite: DefenseSuite,
                 names=COMPARED, device=None, progress: bool = True, on_epoch=None,
                 per_label: list[dict] | None = None, num_classes: int | None = None) -> dict[str, Repaired]:
    """Run the registered defenses `names` on (model, D_h); BAERASER also gets the recovered pool.

    With recovery's `per_label` rows, BAERASER is the whole default defense (`repair`: unlearn,
    confirm the suspects, leave a model judged clean alone); without them, plain unlearning of the
    pool (for sweeps of unlearning's own settings).

    NAD's teacher is the fine-tuned model when fine-tuning runs too (its time is then added to
    NAD's), as in notebook 03. An empty pool leaves BAERASER's model unchanged.
    `on_epoch` is passed to unlearning only (plotting-only evaluation; never steers it).
    """
    unknown = [n for n in names if n not in RUNNABLE]
    if unknown:
        raise ConfigError(f"unknown defense(s) {unknown}; choose from {list(RUNNABLE)}")
    num_classes = num_classes or (len(per_label) if per_label else None)  # recovery has one row per label
    if num_classes is None and "nc" in names:
        raise ConfigError("Neural Cleanse searches every label: pass num_classes")
    out: dict[str, Repaired] = {}
    for name in names:
        if name == "baeraser" and (per_label is None or pool is None):
            start, spent = time.perf_counter(), {}
            repaired, history = unlearn_or_keep(model, holding, pool, suite.unlearn, device=device, progress=progress,
                                                on_epoch=on_epoch, seconds=spent)
            out[name] = Repaired(repaired.eval(), history, time.perf_counter() - start - spent.get("overhead", 0.0))
            continue
        given = {}
        if name == "baeraser":
            given = {"pool": pool, "per_label": per_label, "on_epoch": on_epoch}  # flagged: the pool's labels
        if name == "nad" and "finetune" in out:
            given = {"teacher": out["finetune"].model}
        d = DEFENSES[name].run(model, holding, num_classes, suite.config(name, pool), device=device,
                               progress=progress, **given)
        seconds = d.seconds["total"] + (out["finetune"].seconds if name == "nad" and "finetune" in out else 0.0)
        out[name] = Repaired(d.model, d.history, seconds)
    return out


def moved(trigger: Trigger, position) -> Trigger:
    """The same pattern at another position (a name, a (row, col) pair, or "random")."""
    return Trigger(trigger.pattern, position, trigger.mask)


def position_figures(model: nn.Module, evaluation: Dataset, trigger: Trigger, target: int, positions,
                     device=None) -> dict[str, float]:
    """ASR of `model` with the true pattern stamped at each of `positions` (evaluation only)."""
    out = {}
    for p in positions:
        figs = backdoor_metrics(model, evaluation, moved(trigger, p), target, device=device)
        out[p if isinstance(p, str) else f"{p[0]},{p[1]}"] = figs["asr"]
    return out


def check_positions(positions, size: int, image_shape) -> list:
    """Validate trigger positions for a trigger of `size` before any compute."""
    if not positions:
        raise ConfigError("give at least one trigger position")
    out = [parse_position(tuple(p) if isinstance(p, list) else p) for p in positions]
    for p in out:
        check_fits(size, p, image_shape)
    return out


@dataclass
class AblationBench:
    """One experiment (dataset, training and attack settings, D_h sweep) with cached victims and
    pools. `victim(...)` and `pool(...)` load from `artifacts_dir`, training or recovering only on
    a cache miss; `score(...)` is the evaluation side (test images, true trigger)."""

    data: ExperimentData
    train: TrainConfig
    attack: AttackConfig
    recovery: RecoveryConfig
    artifacts_dir: str | os.PathLike
    holding_ratios: list[float]
    evaluation_reserve: float = 0.0  # evaluation also avoids the first this-share of images (a fixed set)
    device: torch.device | None = None
    progress: bool = True
    _victims: dict = field(default_factory=dict, repr=False)
    _pools: dict = field(default_factory=dict, repr=False)
    _before: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        ratios = sorted(set(self.holding_ratios) | ({self.evaluation_reserve} if self.evaluation_reserve else set()))
        self.holdings, self.evaluation = holding_sweep(self.data, ratios)
        self.holdings = {r: self.holdings[r] for r in sorted(set(self.holding_ratios))}

    def attack_config(self, name: str | None = None, trigger_size: int | None = None) -> AttackConfig:
        """The base attack with another name and/or trigger size (an attack's options stay only
        with that attack; another attack runs with its defaults)."""
        name = name or self.attack.name
        cfg = dataclasses.replace(self.attack, name=name, trigger_size=trigger_size or self.attack.trigger_size,
                                  options=self.attack.options if name == self.attack.name else {})
        check_attack(self.train, cfg)
        check_ablation_attack(cfg, self.train.dataset)
        return cfg

    def victim(self, name: str | None = None, trigger_size: int | None = None) -> TrainedModel:
        cfg = self.attack_config(name, trigger_size)
        key = (cfg.name, cfg.trigger_size)
        if key not in self._victims:
            if not is_complete(model_path(self.artifacts_dir, self.train, cfg)):
                print(f"victim {cfg.name} {cfg.trigger_size}×{cfg.trigger_size} is not cached under {self.artifacts_dir}: "
                      f"training it now ({self.train.epochs} epochs: minutes on a CPU; progress below). "
                      f"Later runs load it.", flush=True)
            self._victims[key] = obtain_model(self.train, cfg, self.data, self.artifacts_dir, self.device,
                                              progress=self.progress)
        return self._victims[key]

    def pool(self, victim: TrainedModel, ratio: float, recovery: RecoveryConfig | None = None
             ) -> tuple[TriggerPool, dict]:
        """The pool recovered from `victim` on D_h of `ratio` (with `recovery` instead of the
        bench's recovery settings if given). Every victim gets the same settings: nothing here
        knows its trigger size."""
        if ratio not in self.holdings:
            raise ConfigError(f"holding ratio {ratio} is not in this bench's sweep {sorted(self.holdings)}")
        cfg = recovery or self.recovery
        key = (victim.path.name, ratio, cfg)
        if key not in self._pools:
            holding = self.holdings[ratio]
            holding_key = {"dataset": self.data.info.name, "holding_ratio": ratio, "seed": self.data.seed,
                           "n": len(holding)}
            pool, meta, _, _ = obtain_pool(victim.model, victim.path.name, holding, self.data.info.num_classes, cfg,
                                           self.artifacts_dir, holding_key, device=self.device,
                                           progress=self.progress)
            self._pools[key] = (pool, meta)
        return self._pools[key]

    def before(self, victim: TrainedModel) -> dict:
        """The victim's own figures on the evaluation set, measured once per victim."""
        if victim.path.name not in self._before:
            self._before[victim.path.name] = self.score(victim.model, victim)
        return self._before[victim.path.name]

    def score(self, model: nn.Module, victim: TrainedModel, on: Dataset | None = None) -> dict:
        """Clean accuracy, ASR and robust accuracy on the fixed evaluation set (true trigger)."""
        return evaluate(model, self.evaluation if on is None else on, victim.trigger, victim.rule,
                        device=self.device)


def scored(bench: AblationBench, victim: TrainedModel, repaired: dict[str, Repaired], before: dict) -> dict:
    """Evaluation figures and DER of each repaired model against `before` (the victim's own)."""
    out = {}
    for name, r in repaired.items():
        figs = bench.score(r.model, victim)
        out[name] = {**figs, "der": der(before["clean_acc"], figs["clean_acc"], before["asr"], figs["asr"]),
                     "seconds": r.seconds}
    return out


def recovered_vs_true(bench: AblationBench, victims: dict[int, TrainedModel], holding_ratio: float, seed: int):
    """For each trigger size's victim: how its pool's entry for the TRUE target (looked up here, on
    the evaluation side; recovery never knew it) compares with the true trigger. Mask form: the
    share of the recovered mask on the true patch; patch form (same size): the share of pixels
    within 0.25 of the true value. Returns (rows, image panels, panel titles) for notebook 04."""
    rows, panels, titles = {}, {}, {}
    for s, v in victims.items():
        p = bench.pool(v, holding_ratio)[0]
        true, where = v.trigger.pattern, v.trigger.set_pixels()  # a sparse trigger sets only some pixels
        found = v.target_label in p.labels
        key = f"{s}×{s}"
        if found and p.masks is not None:  # mask form: how much of the recovered mask lies on the true patch
            i = p.labels.index(v.target_label)
            c, h, w = p.image_shape
            r0, c0 = fixed_offset(v.trigger.position, s, h, w)
            m = p.masks[i][0]
            rows[s] = {"found": True, "mask_share_on_true_patch": float(m[r0:r0 + s, c0:c0 + s].sum() / m.sum()),
                       "mask_size": float(m.sum())}
            sample = p.sample(i, 2, torch.Generator().manual_seed(seed))[0]
            panels[key] = torch.stack([v.trigger.apply(torch.zeros(1, c, h, w))[0], m[None].expand(c, h, w),
                                       m * sample])
            titles[key] = ["true, on black", "recovered mask", "mask × pattern"]
        elif found and p.config.patch_size == v.trigger.size:
            i = p.labels.index(v.target_label)
            samples = p.sample(i, 64, torch.Generator().manual_seed(seed))
            gap = (samples.mean(0) - true).abs()[where]
            rows[s] = {"found": True, "offset": p.offsets[i], "pixels_within_0.25": (gap <= 0.25).float().mean().item(),
                       "mean_abs_diff": gap.mean().item()}
            panels[key] = torch.cat([true[None], samples[:5]])
            titles[key] = ["true"] + [f"recovered {k + 1}" for k in range(5)]
        elif found:  # the hinted patch size differs from the trigger: no pixel-wise comparison
            rows[s] = {"found": True, "size_differs": True}
        else:
            rows[s] = {"found": False}
    return rows, panels, titles
