"""The README's generated tables: each is written from committed JSON, never typed.

A generated table sits between two HTML comments, invisible on GitHub:

    <!-- generated: families-summary -->
    | defense | mean DER | ... |
    <!-- /generated: families-summary -->

`baeraser report readme` rewrites every such block from `BLOCKS` (after a sweep row lands, say),
and `--check` only says which are stale; a test holds that none is. A block name that `BLOCKS`
does not know, or a block opened and never closed, is an error, so no table drifts unnoticed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from ..errors import ConfigError


def _blocks() -> dict[str, Callable[[Path], str]]:
    """Block name → the function of the repository root that writes it (imports kept lazy)."""
    from .grid_report import erasure_markdown, grid_markdown, summary_markdown
    from .site import (attack_markdown, example_markdown, inject_markdown, peer_sanity_markdown,
                       trigger_agnostic_markdown, verdict_markdown)

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
        "trigger-agnostic": lambda root: trigger_agnostic_markdown(root / "reports" / "benchmarks"
                                                                   / "trigger_agnostic.json"),
        "peer-sanity": lambda root: peer_sanity_markdown(root / "reports" / "benchmarks" / "peer_sanity.json",
                                                         root / "reports" / "03_unlearn.json"),
        "example": lambda root: example_markdown(root / "reports" / "examples" / "defend-badnets" / "defense.json"),
    }


BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated: (?P=name) -->)", re.S)
OPENING = re.compile(r"<!-- generated: ([\w-]+) -->")


def render(text: str, root: Path) -> str:
    """`text` (a README) with every generated block rewritten from the committed JSON under `root`."""
    blocks = _blocks()
    opened = OPENING.findall(text)
    closed = [m.group("name") for m in BLOCK.finditer(text)]
    if opened != closed:
        raise ConfigError(f"README blocks opened but never closed: {sorted(set(opened) - set(closed))}")
    unknown = [n for n in opened if n not in blocks]
    if unknown:
        raise ConfigError(f"unknown generated README blocks {unknown}; known: {sorted(blocks)}")
    return BLOCK.sub(lambda m: m.group(1) + blocks[m.group("name")](root).rstrip("\n") + "\n" + m.group(4), text)


def stale(text: str, root: Path) -> list[str]:
    """Names of the blocks whose text differs from what `render` would write."""
    now = {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}
    fresh = {m.group("name"): m.group("body") for m in BLOCK.finditer(render(text, root))}
    return [n for n in now if now[n] != fresh[n]]


def update(readme: Path, check: bool = False) -> list[str]:
    """Rewrite `readme`'s generated blocks in place (or, with `check`, only list the stale ones)."""
    text, root = readme.read_text(encoding="utf-8"), readme.resolve().parent
    names = stale(text, root)
    if names and not check:
        readme.write_text(render(text, root), encoding="utf-8")
    return names
