"""The experiment's configs: `TrainConfig` (defined in `train`, beside its loop) and
`AttackConfig`, which sits above the attacks because it checks names and options against
`ATTACKS`; the attacks read it through the `attacks.base.AttackSettings` protocol. Their hash
(`artifacts.config_hash`) names the artifact folder.

Notebook parameters map onto these fields in one place, `params`. Every check runs in
`__post_init__`, so a bad value fails when the config is built, before any data is read or any
weight is trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from .attacks import ATTACKS
from .checks import rules, validate
from .data import dataset_info
from .errors import ConfigError
from .train import SCHEDULES, TrainConfig
from .triggers import check_fits, parse_position

__all__ = ["AttackConfig", "SCHEDULES", "TrainConfig"]


@dataclass(frozen=True)
class AttackConfig:
    """Which backdoor is planted and how: trigger, poison rate, target label.

    `trigger_size` and `trigger_position` place the patch of patch attacks (BadNets, TrojanNN,
    IMC); whole-image attacks ignore them. `poison_rate` None takes the attack's own default (5%;
    WaNet 10%, as in its paper). `target_label` is None exactly for all-to-all attacks."""

    name: str = "badnets"
    trigger_size: int = 3
    trigger_position: str | tuple[int, int] = "bottom_right"
    poison_rate: float | None = None
    target_label: int | None = 0
    seed: int = 0
    options: dict = field(default_factory=dict)  # the attack's own knobs, e.g. {"neurons": 3}

    RULES: ClassVar = rules(trigger_size="[1, 4096]", poison_rate="(0, 1)", target_label="[0, 100000]",
                            seed="[0, 4294967295]")

    def __post_init__(self):
        if not isinstance(self.options, dict):
            raise ConfigError(f"attack options must be a dict, got {self.options!r}")
        validate(self)
        if self.name not in self.registry():
            raise ConfigError(f"unknown attack {self.name!r}; choose one of {sorted(self.registry())}")
        resolved = self.resolved_options()  # unknown or bad option names fail here
        if resolved is not None:  # the options as the attack reads them (arrays become lists: JSON-ready)
            object.__setattr__(self, "options", {k: getattr(resolved, k) for k in self.options})
        object.__setattr__(self, "trigger_position", parse_position(self.trigger_position))
        self.spec.target_rule(self, None)  # the attack's own rule checks its mode against target_label

    @staticmethod
    def registry() -> dict:
        return ATTACKS

    @property
    def spec(self):
        return self.registry()[self.name]

    @property
    def rate(self) -> float:
        """The poison rate in force: `poison_rate`, or the attack's default."""
        return self.spec.default_poison_rate if self.poison_rate is None else self.poison_rate

    def resolved_options(self):
        """The attack's options dataclass with `options` applied (None for option-less attacks)."""
        spec = self.registry()[self.name]
        if not isinstance(self.options, dict):
            raise ConfigError(f"attack options must be a dict, got {self.options!r}")
        if spec.options is None:
            if self.options:
                raise ConfigError(f"attack {self.name!r} takes no options, got {sorted(self.options)}")
            return None
        known = {f.name for f in fields(spec.options)}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for attack {self.name!r}; it takes {sorted(known)}")
        return spec.options(**self.options)

    def identity(self) -> dict:
        """What names the victim: every field that matters to the attack, the poison rate in
        force, its options resolved to their full defaults, and its algorithm version. Left out
        where they change nothing, so BadNets' default names predate them: the options of an
        unversioned attack when all are defaults, the patch's size and place for whole-image
        attacks."""
        spec = self.spec
        d = asdict(self)
        d["poison_rate"] = self.rate
        resolved = self.resolved_options()
        if resolved is None or (not spec.version and resolved == spec.options()):
            d.pop("options")
        else:  # an option that names a file also names its contents (`fingerprint`)
            d["options"] = resolved.fingerprint() if hasattr(resolved, "fingerprint") else asdict(resolved)
        if not spec.patch:
            d.pop("trigger_size"), d.pop("trigger_position")
        if spec.version:
            d["version"] = spec.version
        return d

    def check_against(self, dataset: str) -> None:
        """ConfigError unless the trigger fits the images and the target is a class of `dataset`."""
        info = dataset_info(dataset)
        if self.spec.patch:
            check_fits(self.trigger_size, self.trigger_position, info.shape)
        self.spec.target_rule(self, info.num_classes)  # the target is a class of `dataset`
        if self.spec.check_info is not None:
            self.spec.check_info(self, info)
