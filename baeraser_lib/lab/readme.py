"""The README's generated tables: each is written from committed JSON, never typed.

A generated table sits between two HTML comments, invisible on GitHub:

    <!-- generated: families-summary -->
    | defense | mean DER | ... |
    <!-- /generated: families-summary -->

`baeraser report readme` rewrites every such block from `BLOCKS` (after a sweep row lands, say),
and `--check` only says which are stale; a test holds that none is. Every problem is a
ConfigError naming the block, before anything is written: a name `BLOCKS` does not know, a
block opened and never closed (or nested, or there twice), a closing comment with no opening,
a table whose JSON is missing or unreadable.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Callable

from ..atomic import atomic_open
from ..errors import ConfigError


def _blocks() -> dict[str, Callable[[Path], str]]:
    """Block name → the function of the repository root that writes it (imports kept lazy)."""
    from .grid_report import (detection_markdown, erasure_markdown, grid_markdown, runs_markdown, summary_markdown,
                              targets_markdown)
    from .site import (attack_markdown, augment_markdown, budget_markdown, example_markdown, inject_markdown,
                       invariance_markdown, path_markdown, peer_column_markdown, peer_sanity_markdown, persistence_markdown,
                       prune_markdown, reactivation_markdown, reference_masks_markdown, reset_markdown,
                       schedule_markdown, shift_markdown, trigger_agnostic_markdown, verdict_markdown)
    from .seeds_report import seeds_markdown
    from .studies_report import studies_markdown
    from .timing_report import timing_markdown, work_markdown

    families = lambda root: root / "reports" / "families"  # noqa: E731
    return {
        "attacks": lambda root: attack_markdown(root / "reports"),
        "injects": lambda root: inject_markdown(root / "reports"),
        "claims": lambda root: verdict_markdown(root / "reports"),
        "cpu-grid": lambda root: grid_markdown(root / "reports" / "cpu"),
        "families-injects": lambda root: inject_markdown(families(root), "*/01_inject.json"),
        "families-grid": lambda root: grid_markdown(families(root)),
        "families-summary": lambda root: summary_markdown(families(root)),
        "families-erasure": lambda root: erasure_markdown(families(root)),
        "families-targets": lambda root: targets_markdown(families(root)),
        "families-runs": lambda root: runs_markdown(families(root)),
        "families-detection": lambda root: detection_markdown(families(root)),
        "families-timing": lambda root: timing_markdown(families(root), root / "reports" / "benchmarks"
                                                        / "path_step.json"),
        "families-work": lambda root: work_markdown(root / "reports" / "benchmarks" / "work_ratio.json"),
        "reference-masks": lambda root: reference_masks_markdown(root / "reports" / "benchmarks"
                                                                 / "natural_shortcuts_reference_masks.json"),
        "trigger-agnostic": lambda root: trigger_agnostic_markdown(root / "reports" / "benchmarks"
                                                                   / "trigger_agnostic.json"),
        "peer-sanity": lambda root: peer_sanity_markdown(root / "reports" / "benchmarks" / "peer_sanity.json",
                                                         root / "reports" / "03_unlearn.json"),
        "peer-column": lambda root: peer_column_markdown(root / "reports" / "benchmarks" / "peer_column.json"),
        "persistence": lambda root: persistence_markdown(root / "reports" / "benchmarks" / "persistence.json"),
        "reactivation": lambda root: reactivation_markdown(root / "reports" / "03_unlearn.json"),
        "reactivation-seeds": lambda root: seeds_markdown(root / "reports" / "benchmarks" / "reactivation_seeds.json"),
        "unlearning-budget": lambda root: budget_markdown(root / "reports" / "benchmarks" / "unlearning_budget.json"),
        "unlearning-schedule": lambda root: schedule_markdown(root / "reports" / "benchmarks"
                                                              / "unlearning_schedule.json"),
        "path-step": lambda root: path_markdown(root / "reports" / "benchmarks" / "path_step.json"),
        "weight-reset": lambda root: reset_markdown(root / "reports" / "benchmarks" / "weight_reset.json"),
        "stage-invariance": lambda root: invariance_markdown(root / "reports" / "benchmarks" / "stage_invariance.json"),
        "trigger-channels": lambda root: prune_markdown(root / "reports" / "benchmarks" / "trigger_channels.json"),
        "head-shift": lambda root: shift_markdown(root / "reports" / "benchmarks" / "head_shift.json"),
        "augment-invariance": lambda root: augment_markdown(root / "reports" / "benchmarks"
                                                            / "augment_invariance.json"),
        "relearning-studies": lambda root: studies_markdown(root / "reports" / "benchmarks"),
        "example": lambda root: example_markdown(root / "reports" / "examples" / "defend-badnets" / "defense.json"),
    }


BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated: (?P=name) -->)", re.S)
OPENING = re.compile(r"<!-- generated: ([\w-]+) -->")
CLOSING = re.compile(r"<!-- /generated: ([\w-]+) -->")
MARKER = re.compile(r"<!-- /?generated:")


def _check_blocks(text: str, known) -> list[re.Match]:
    """The blocks of `text`, each opened, closed, known and there once; else a ConfigError."""
    matches = list(BLOCK.finditer(text))
    names = [m.group("name") for m in matches]
    twice = sorted(n for n, c in Counter(names).items() if c > 1)
    if twice:
        raise ConfigError(f"README blocks there more than once: {twice}")
    nested = sorted(n for m in matches for n in OPENING.findall(m.group("body")) + CLOSING.findall(m.group("body")))
    unclosed = sorted((Counter(OPENING.findall(text)) - Counter(names)).elements())
    unopened = sorted((Counter(CLOSING.findall(text)) - Counter(names)).elements())
    if nested or unclosed or unopened:
        raise ConfigError(f"README blocks nested {nested}, opened but never closed {unclosed}, or closed but never "
                          f"opened {unopened}: each block is one opening and one closing comment, in that order")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown generated README blocks {unknown}; known: {sorted(known)}")
    return matches


def _table(name: str, write: Callable[[Path], str], root: Path) -> str:
    """One block's fresh text, or a ConfigError naming the block and why it could not be written."""
    try:
        text = write(root).rstrip("\n")
    except ConfigError as err:
        raise ConfigError(f"README block {name}: {err}") from None
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"README block {name}: its JSON under {root / 'reports'} is missing or not what this "
                          f"code reads ({type(err).__name__}: {err}); re-run what writes it, or re-index the grid")
    if MARKER.search(text):
        raise ConfigError(f"README block {name}: its generated text holds a block comment itself")
    return text


def render(text: str, root: Path) -> str:
    """`text` (a README, "\\n" line ends) with every generated block rewritten from the committed
    JSON under `root`."""
    blocks = _blocks()
    _check_blocks(text, blocks)
    return BLOCK.sub(lambda m: m.group(1) + _table(m.group("name"), blocks[m.group("name")], root) + "\n"
                     + m.group(4), text)


def stale(text: str, root: Path) -> list[str]:
    """Names of the blocks whose text differs from what `render` would write, in README order."""
    fresh = [m.group("body") for m in BLOCK.finditer(render(text, root))]  # render checks the blocks
    now = [(m.group("name"), m.group("body")) for m in BLOCK.finditer(text)]
    return [name for (name, body), new in zip(now, fresh) if body != new]


def update(readme: Path, check: bool = False) -> list[str]:
    """Rewrite `readme`'s generated blocks in place, atomically, keeping its line ends (or, with
    `check`, only list the stale ones)."""
    try:
        raw = readme.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {readme}: {err}") from None
    crlf = "\r\n" in raw
    text, root = raw.replace("\r\n", "\n"), readme.resolve().parent
    names = stale(text, root)
    if names and not check:
        new = render(text, root)
        with atomic_open(readme, "w", encoding="utf-8", newline="") as f:
            f.write(new.replace("\n", "\r\n") if crlf else new)
    return names
