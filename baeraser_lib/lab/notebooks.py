"""The notebooks of the main job and their parameters cells (one cell tagged `parameters`, literals only)."""

from __future__ import annotations

import ast
import os

from .reports import NOTEBOOKS, REPO

NOTEBOOKS_DIR = REPO / "notebooks"
RUNNER_PARAMS = ("reports_dir", "report_name")  # set by the runner on every notebook
__all__ = ["NOTEBOOKS", "NOTEBOOKS_DIR", "RUNNER_PARAMS", "parameters_of"]


def parameters_of(source: str | os.PathLike) -> dict:
    """Default parameters of a notebook: its one cell tagged `parameters`, literals only."""
    import jupytext

    nb = jupytext.read(source)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source}: expected one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for stmt in ast.parse(cells[0].source).body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
            stmt.target if isinstance(stmt, ast.AnnAssign) else None
        if not isinstance(target, ast.Name) or stmt.value is None:
            raise ValueError(f"{source}: the parameters cell may only assign literals to names")
        try:
            params[target.id] = ast.literal_eval(stmt.value)
        except ValueError:
            raise ValueError(f"{source}: parameter {target.id} is not a literal") from None
    return params
