"""Grid files: notebooks × parameter axes, expanded into independent runs and checked up front.

A grid is a YAML file:

    name: cpu                        # reports go to reports/<name>/ (default: the file's stem)
    description: what the grid is for
    notebooks: [01_inject, 02_recover_triggers, 03_unlearn]   # run in this order within a run
    parameters: {width: 16, epochs: 4}                          # every run
    axes:                                                       # the cartesian product is the runs
      dataset: [fashion_mnist, mnist_5k]
      attack: [badnets, trojannn, imc]
    overrides:                                                  # optional: settings for some runs
      - when: {dataset: mnist_5k}
        set: {train_subset: null, epochs: 8}
    variants:                                                   # optional: named settings, one run each
      - name: badnets_5x5_left                                  # (crossed with the axes, if any)
        set: {attack: badnets, trigger_size: 5, trigger_position: [12, 0]}

Variants are the runs that are no cartesian product (one attack with several option sets,
say); they appear as an axis `variant` in the run names, reports and index.

Each run gets the parameters its notebooks declare; a name no notebook declares, a value of the
wrong type, or a value the library's configs refuse (unknown dataset or attack, a trigger larger
than the image, a poison rate outside (0, 1)) is an error before anything runs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..safepath import check_name
from .notebooks import NOTEBOOKS_DIR, RUNNER_PARAMS, parameters_of

GRID_KEYS = {"name", "description", "notebooks", "parameters", "axes", "overrides", "variants"}
SET_BY_SWEEP = ("artifacts_dir", "data_root")  # the sweep command's --artifacts / --data set these


@dataclass(frozen=True)
class Run:
    """One point of a grid: its axis values, the notebooks it runs and their parameters."""

    run_id: str
    axes: dict
    notebooks: tuple[str, ...]
    parameters: dict  # merged: grid parameters, overrides, axis values (not the sweep's paths)

    def own(self, notebook: str, declared: dict[str, dict]) -> dict:
        """The parameters `notebook` declares (papermill refuses the others)."""
        return {k: v for k, v in self.parameters.items() if k in declared[notebook]}


@dataclass
class Grid:
    name: str
    notebooks: list[str]
    parameters: dict
    axes: dict[str, list]
    overrides: list[dict] = field(default_factory=list)
    description: str = ""
    source: Path | None = None
    variants: list[dict] = field(default_factory=list)  # [{name, set}]: named settings, one run each

    @property
    def axis_names(self) -> list[str]:
        """The run's axes in order: `variant` first when the grid has variants."""
        return (["variant"] if self.variants else []) + list(self.axes)

    def runs(self, defaults: dict | None = None) -> list[Run]:
        """The cartesian product of the axes, in file order; each with its merged parameters.
        An override's `when` compares with the run's value: its axis value, else the grid's
        parameter, else the notebooks' default (`defaults`)."""
        names = list(self.axes)
        defaults = defaults or {}
        out = []
        for variant, values in itertools.product(self.variants or [None], itertools.product(
                *(self.axes[n] for n in names))):
            point = dict(zip(names, values))
            params = dict(self.parameters)
            if variant is not None:
                params.update(variant["set"])
                point = {"variant": variant["name"], **point}
            for rule in self.overrides:
                if all({**defaults, **params, **point}.get(k) == v for k, v in rule["when"].items()):
                    params.update(rule["set"])
            params.update({k: v for k, v in point.items() if k != "variant"})
            out.append(Run(run_id(point), point, tuple(self.notebooks), params))
        ids = [check_name(r.run_id, f"grid {self.name!r}: run id") for r in out]
        clash = sorted({i for i in ids if ids.count(i) > 1})
        if clash:
            raise ConfigError(f"grid {self.name!r}: axis values give the same run name(s) {clash}")
        return out


def _slug(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_").lstrip(".") or "_"  # never '..' or hidden


def run_id(point: dict) -> str:
    """A readable folder name for one grid point: string values as they are, others prefixed by
    their axis (`fashion_mnist-badnets-seed1`)."""
    return "-".join(_slug(v) if isinstance(v, str) else f"{_slug(k)}{_slug(v)}" for k, v in point.items()) or "run"


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and shape-check a grid file (values are checked by `validate`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {path} not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"grid file {path} is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"grid file {path}: expected a mapping with keys {sorted(GRID_KEYS)}")
    unknown = sorted(set(doc) - GRID_KEYS)
    if unknown:
        raise ConfigError(f"grid file {path}: unknown key(s) {unknown}; a grid has {sorted(GRID_KEYS)}")
    notebooks = doc.get("notebooks")
    if not isinstance(notebooks, list) or not notebooks or not all(isinstance(n, str) for n in notebooks):
        raise ConfigError(f"grid file {path}: 'notebooks' must be a non-empty list of notebook names")
    odd = [n for n in notebooks if not re.fullmatch(r"[A-Za-z0-9_]+", n)]
    if odd:
        raise ConfigError(f"grid file {path}: notebook names are file stems of notebooks/ "
                          f"(letters, digits, '_'), got {odd}")
    params = doc.get("parameters") or {}
    axes = doc.get("axes") or {}
    if not isinstance(params, dict) or not isinstance(axes, dict):
        raise ConfigError(f"grid file {path}: 'parameters' and 'axes' must be mappings")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid file {path}: axis {name!r} must be a non-empty list of values")
    both = sorted(set(params) & set(axes))
    if both:
        raise ConfigError(f"grid file {path}: {both} is both a fixed parameter and an axis")
    for o in doc.get("overrides") or []:
        clash = sorted(set(o.get("set") or {}) & set(axes)) if isinstance(o, dict) and isinstance(o.get("set"), dict) \
            else []
        if clash:
            raise ConfigError(f"grid file {path}: an override sets {clash}, which is an axis: "
                              f"make it a `when` condition or drop it from the axes")
    overrides = doc.get("overrides") or []
    if not isinstance(overrides, list) or not all(
            isinstance(o, dict) and set(o) == {"when", "set"} and isinstance(o["when"], dict)
            and isinstance(o["set"], dict) for o in overrides):
        raise ConfigError(f"grid file {path}: 'overrides' must be a list of {{when: {{...}}, set: {{...}}}}")
    variants = doc.get("variants") or []
    if not isinstance(variants, list) or not all(
            isinstance(v, dict) and set(v) == {"name", "set"} and isinstance(v["set"], dict) for v in variants):
        raise ConfigError(f"grid file {path}: 'variants' must be a list of {{name: letters/digits/_.-, set: {{...}}}}")
    for v in variants:
        check_name(v["name"], f"grid file {path}: variant name")
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        raise ConfigError(f"grid file {path}: variant names must differ, got {names}")
    for v in variants:
        clash = sorted(set(v["set"]) & set(axes))
        if clash:
            raise ConfigError(f"grid file {path}: variant {v['name']!r} sets {clash}, which is an axis")
    name = check_name(doc.get("name") or path.stem, f"grid file {path}: grid name")
    return Grid(name, list(notebooks), dict(params), {k: list(v) for k, v in axes.items()}, list(overrides),
                str(doc.get("description") or ""), path, list(variants))


def declared_parameters(notebooks: list[str], notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, dict]:
    """Each notebook's default parameters; ConfigError for a notebook that does not exist."""
    unknown = [n for n in notebooks if not (notebooks_dir / f"{n}.py").is_file()]
    if unknown:
        known = sorted(p.stem for p in notebooks_dir.glob("*.py"))
        raise ConfigError(f"unknown notebook(s) {unknown}; available: {known}")
    return {n: parameters_of(notebooks_dir / f"{n}.py") for n in notebooks}


def _type_ok(default, value) -> bool:
    """`value` has the type of its notebook default; lists item by item (a list default's items
    give the type), and a string default takes a [row, col] pair only for `trigger_position`."""
    if default is None or value is None:
        return True  # None defaults take any literal; None is a value every optional knob understands
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list) and all(_type_ok(default[0], v) for v in value) if default \
            else isinstance(value, list)
    return isinstance(value, type(default))


def _type_ok_named(name: str, default, value) -> bool:
    if name == "trigger_position" and isinstance(value, list):
        return len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return _type_ok(default, value)


def check_parameters(params: dict, every: dict, notebooks) -> None:
    """The one check of a run's parameters before any kernel starts, shared by the sweep and the
    report runner: each value has its notebook default's type, and the library's configs, built
    from them as the notebooks build them, pass their own checks (unknown dataset, attack or loss;
    a trigger or patch larger than the image; a number that is NaN, infinite or out of range).
    `every`: the notebooks' declared defaults, merged."""
    for k, v in params.items():
        if k in every and not _type_ok_named(k, every[k], v):
            raise ConfigError(f"{k}={v!r} should be like its default {every[k]!r} ({type(every[k]).__name__})")
    try:
        _check_configs({**every, **params}, tuple(notebooks))
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None


def _check_configs(p: dict, notebooks: tuple[str, ...]) -> None:
    from ..data import dataset_info
    from ..params import DEFENSE_CONFIGS, attack_config, recovery_config, train_config
    from ..train import check_layout, check_precision
    from ..triggers import check_fits
    from ..victims import check_attack

    if p.get("device", "auto") != "auto":
        import torch

        try:
            torch.device(p["device"])
        except (RuntimeError, TypeError, ValueError):
            raise ConfigError(f"unknown device {p['device']!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if "precision" in p:
        check_precision(p["precision"])
    if "layout" in p:
        check_layout(p["layout"])
    if "dataset" not in p:
        return
    train = train_config(p)
    if "attack" in p:
        attack = attack_config(p)
        check_attack(train, attack)
        if "04_ablations" in notebooks:
            from .ablations import check_ablation_attack

            check_ablation_attack(attack, train.dataset)
    if "trigger_form" in p:  # notebooks 02–04: MSA's recovery
        cfg = recovery_config(p)
        if cfg.form == "patch":
            check_fits(cfg.patch_size, "top_left", dataset_info(train.dataset).shape)
    if "unlearn_lr" in p:  # notebooks 03–04: every defense's config, built as the notebooks build them
        for build, _ in DEFENSE_CONFIGS.values():
            build(p)


def validate(grid: Grid, notebooks_dir: Path = NOTEBOOKS_DIR) -> tuple[list[Run], dict[str, dict]]:
    """Every run of `grid`, checked: notebooks exist, each name is declared by some notebook, each
    value has its default's type and passes the library's own config checks. Nothing runs."""
    declared = declared_parameters(grid.notebooks, notebooks_dir)
    every = {}
    for d in declared.values():
        every.update(d)
    names = set(grid.parameters) | set(grid.axes)
    for v in grid.variants:
        names |= set(v["set"])
    for rule in grid.overrides:
        names |= set(rule["when"]) | set(rule["set"])
    reserved = sorted(names & set(RUNNER_PARAMS))
    if reserved:
        raise ConfigError(f"grid {grid.name!r}: {reserved} are set by the runner, not by a grid")
    paths = sorted(names & set(SET_BY_SWEEP))
    if paths:
        raise ConfigError(f"grid {grid.name!r}: {paths} are set by the sweep command (--artifacts, --data), "
                          f"so one grid file serves every machine")
    unknown = sorted(names - set(every))
    if unknown:
        raise ConfigError(f"grid {grid.name!r}: unknown parameter(s) {unknown}; the notebooks "
                          f"{grid.notebooks} declare {sorted(set(every) - set(RUNNER_PARAMS))}")
    runs = grid.runs(every)
    for run in runs:
        try:
            check_parameters(run.parameters, every, run.notebooks)
        except ConfigError as err:
            raise ConfigError(f"grid {grid.name!r}, run {run.run_id}: {err}") from None
    return runs, declared
