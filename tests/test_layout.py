"""The layout rules: the core never imports the lab, no import circles, one mapping from notebook
parameters to configs (whose defaults the notebooks keep), one registry per kind."""

import ast
from pathlib import Path

import pytest

import baeraser_lib
from baeraser_lib import params as P
from baeraser_lib.lab.notebooks import NOTEBOOKS, NOTEBOOKS_DIR, parameters_of

PKG = Path(baeraser_lib.__file__).resolve().parent
ENTRY_POINTS = {"baeraser_lib.__main__"}  # `python -m baeraser_lib`: forwards to the lab's command


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every baeraser_lib module that `path` imports: at module level, inside functions, and under
    `if TYPE_CHECKING:` too (a circle of type-only imports is still a circle)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("baeraser_lib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("baeraser_lib"):
                continue
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names if (PKG.parent / f"{mod}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    or (PKG.parent / f"{mod}.{a.name}".replace(".", "/") / "__init__.py").exists()}
    return out


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def is_lab(m: str) -> bool:
    return m == "baeraser_lib.lab" or m.startswith("baeraser_lib.lab.")


def test_the_core_never_imports_the_lab():
    core = [m for m in MODULES if not is_lab(m) and m not in ENTRY_POINTS]
    assert "baeraser_lib.api" in core and "baeraser_lib.defenses.baeraser" in core
    offenders = {m: sorted(i for i in GRAPH[m] if is_lab(i)) for m in core}
    assert not {m: v for m, v in offenders.items() if v}, "core modules import the lab"


def test_no_import_circles():
    """Package `__init__`s re-export their children, so an edge into a package's own children is
    not a circle; every other cycle is."""
    def edges(m):
        return {i for i in GRAPH[m] if not i.startswith(m + ".")}

    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in edges(m):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles[:3]}"


def test_config_does_not_hide_an_import_of_the_attacks():
    assert "baeraser_lib.attacks" in GRAPH["baeraser_lib.config"]
    assert not any(i.startswith("baeraser_lib.config") for a in MODULES if a.startswith("baeraser_lib.attacks")
                   for i in GRAPH[a])


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_defaults_equal_the_dataclass_defaults(notebook):
    params = parameters_of(NOTEBOOKS_DIR / f"{notebook}.py")
    assert P.default_mismatches(params) == []


def test_default_mismatches_sees_a_drift():
    assert P.default_mismatches({"unlearn_lr": 0.5, "tau": 0.8, "nad_epochs": 3}) == [
        "unlearn_lr = 0.5, but UnlearnConfig.lr defaults to 0.01",
        "nad_epochs = 3, but NADConfig.student.epochs defaults to 10"]


def test_every_registered_defense_has_its_config_mapping():
    from baeraser_lib.defenses import DEFENSES

    assert set(P.DEFENSE_CONFIGS) == set(DEFENSES)
    for name, spec in DEFENSES.items():
        assert isinstance(P.defense_config(name, {}), spec.config)
        assert P.defense_config(name, {}) == spec.config()  # no parameters: the dataclass defaults


def test_one_split_of_the_holding_set():
    """`data.split_parts` is the only place that permutes D_h into train and validation parts:
    no defense permutes the holding set itself."""
    assert "def split_parts(" in (PKG / "data.py").read_text()
    import re

    split = re.compile(r"val_fraction \*|\* \w*\.?val_fraction|n_val\b")
    hits = [module_name(p) for p in (PKG / "defenses").glob("*.py") if split.search(p.read_text())]
    assert hits == []
    assert split.search((PKG / "data.py").read_text())  # the pattern does find the one split


def test_lab_extras_are_not_needed_to_import_the_core():
    lab_only = ("papermill", "ipywidgets", "dask", "distributed", "jupytext", "nbconvert", "yaml")
    for m, p in MODULES.items():
        if is_lab(m) or m in ENTRY_POINTS:
            continue
        tree = ast.parse(p.read_text())
        top = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        top |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not top & set(lab_only), (m, top & set(lab_only))


def test_no_defense_module_imports_an_attack_even_indirectly():
    """A defense cannot reach an attack (and so a true trigger) or the reactivation check (which
    re-tunes with one) through any chain of imports; the package root, which re-exports both
    registries, is the one node left out of the chains."""
    def reach(m, seen):
        for n in GRAPH[m] - {"baeraser_lib"}:
            if n not in seen:
                seen.add(n)
                reach(n, seen)
        return seen

    for m in MODULES:
        if m.startswith("baeraser_lib.defenses"):
            hits = sorted(i for i in reach(m, set()) if i.startswith("baeraser_lib.attacks")
                          or i in ("baeraser_lib.config", "baeraser_lib.reactivation"))
            assert not hits, (m, hits)
