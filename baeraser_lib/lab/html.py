"""Executed notebooks as HTML pages that open anywhere: no script from a network, no widget box
that renders empty.

nbconvert's `lab` template loads require.js and MathJax from one CDN and the widget renderer from
another; offline, or behind a network that drops packets, such a page waits or breaks. The
`offline` template (in `templates/`) drops those scripts. Widget outputs need a live kernel, so
each is replaced by a short note saying where to use it, and the notebook's widget state is left
out of the page.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..atomic import atomic_open

TEMPLATES = Path(__file__).resolve().parent / "templates"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ("[An interactive widget: it needs a running kernel. Open this notebook in JupyterLab "
               "(make lab) to use it.]")
_URL = r"""(?P<url>(?:https?:)?//[^"'\s)>]+)"""
EXTERNAL = re.compile(r"""<(?:script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)\s*=\s*["']?""" + _URL
                      + r"""|url\(\s*["']?""" + _URL.replace("url>", "url2>")
                      + r"""|@import\s+["']?""" + _URL.replace("url>", "url3>"), re.I)


def strip_widgets(nb) -> int:
    """Replace every widget output of `nb` (in place) by a plain-text note; drop the saved widget
    state. Returns how many outputs were replaced."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and WIDGET_MIME in data:
                out["data"] = {"text/plain": WIDGET_NOTE}
                n += 1
    nb.metadata.pop("widgets", None)
    return n


def external_references(page: str) -> list[str]:
    """The URLs `page` would fetch from a network (scripts, styles, images, CSS imports)."""
    return [m.group("url") or m.group("url2") or m.group("url3") for m in EXTERNAL.finditer(page)]


def notebook_html(nb) -> str:
    """The offline HTML page of an executed notebook (widgets stripped from a copy)."""
    import copy

    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    strip_widgets(nb)
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    return body


def write_notebook_html(nb, path: str | Path) -> Path:
    with atomic_open(path, encoding="utf-8") as f:
        f.write(notebook_html(nb))
    return Path(path)
