"""Executed notebooks as HTML pages that open anywhere: no script from a network, no widget box
that renders empty.

nbconvert's `lab` template loads require.js and MathJax from one CDN and the widget renderer from
another; offline, or behind a network that drops packets, such a page waits or breaks. The
`offline` template (in `templates/`) drops those scripts. Widget outputs need a live kernel, so
each is replaced by a short note saying where to use it, and the notebook's widget state is left
out of the page.
"""

from __future__ import annotations

import functools
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


_WIDGET_DIV = re.compile(r'<div class="jupyter-widgets jp-OutputArea-output"[^>]*>\s*(?:<script\b[^>]*>.*?</script>\s*)+</div>',
                         re.S)
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>\s*", re.S | re.I)


def scrub_page(page: str) -> str:
    """An HTML page exported earlier with the `lab` template, made offline: each widget output
    becomes the note, and every script goes (a static report needs none; they only fetched the
    CDN's require.js, MathJax, Mermaid and widget renderer). For pages whose executed notebook
    is gone; where it is there, `notebook_html` exports the page anew."""
    note = f'<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="text/plain"><pre>{WIDGET_NOTE}</pre></div>'
    return _SCRIPT.sub("", _WIDGET_DIV.sub(lambda _: note, page))


def make_offline(folder: str | Path) -> dict[str, int]:
    """Every `*.html` report under `folder` made offline: exported anew from its executed notebook
    (beside it, or in `.executed/`), else scrubbed. Pages that fetch nothing are left alone."""
    import nbformat

    counts = {"exported": 0, "scrubbed": 0, "already offline": 0}
    for page in sorted(Path(folder).rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        if not external_references(text) and "<script" not in text:
            counts["already offline"] += 1
            continue
        source = next((p for p in (page.with_suffix(".ipynb"), page.parent / ".executed" / f"{page.stem}.ipynb")
                       if p.is_file()), None)
        if source is not None:
            write_notebook_html(nbformat.read(source, as_version=4), page)
            counts["exported"] += 1
        else:
            with atomic_open(page, encoding="utf-8") as f:
                f.write(scrub_page(text))
            counts["scrubbed"] += 1
    return counts


_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
_STYLE = re.compile(r"(<style[^>]*>)(.*?)(</style>)", re.S)
_LAB_INDEX_CSS = "jp-Cell-Placeholder"  # a rule only JupyterLab's index.css has
_COMPACT_CSS = "baeraser's report style"  # compact.css's first line: an older copy is brought up to date


def smaller_png(b64: str) -> str:
    """A base64 PNG as a 256-colour PNG where that is smaller: matplotlib's figures shrink about
    3.5× and look the same (few colours, antialiased edges); tiny or already small ones stay."""
    import base64
    import io

    from PIL import Image

    raw = base64.b64decode(b64)
    with Image.open(io.BytesIO(raw)) as im:
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            return b64
        method = Image.Quantize.FASTOCTREE if im.mode in ("RGBA", "LA") else Image.Quantize.MEDIANCUT
        q = im.convert("RGBA" if im.mode in ("RGBA", "LA") else "RGB").quantize(256, method=method)
    out = io.BytesIO()
    q.save(out, "PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode("ascii") if out.tell() < len(raw) else b64


@functools.cache
def _compact_css() -> str:
    return (TEMPLATES / "offline" / "compact.css").read_text(encoding="utf-8")


def compact_page(page: str) -> str:
    """A report page made small: JupyterLab's index.css (240 KB in every page) replaced by
    compact.css, and every figure by `smaller_png`. Pages already compact come back unchanged."""
    css = _compact_css()
    page = _STYLE.sub(lambda m: m.group(1) + "\n" + css + m.group(3)
                      if _LAB_INDEX_CSS in m.group(2) or _COMPACT_CSS in m.group(2) else m.group(0), page)
    return _PNG.sub(lambda m: "data:image/png;base64," + smaller_png(m.group(1)), page)


def compact_reports(folder: str | Path) -> dict[str, int]:
    """`compact_page` on every `*.html` under `folder`, rewritten atomically where it changes.
    Returns the pages rewritten and the bytes before and after."""
    counts = {"compacted": 0, "unchanged": 0, "bytes_before": 0, "bytes_after": 0}
    for page in sorted(Path(folder).rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        small = compact_page(text)
        counts["bytes_before"] += len(text.encode())
        counts["bytes_after"] += len(small.encode())
        if small != text:
            with atomic_open(page, encoding="utf-8") as f:
                f.write(small)
            counts["compacted"] += 1
        else:
            counts["unchanged"] += 1
    return counts


def notebook_html(nb) -> str:
    """The offline HTML page of an executed notebook (widgets stripped from a copy)."""
    import copy

    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    strip_widgets(nb)
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    return compact_page(body)


def write_notebook_html(nb, path: str | Path) -> Path:
    with atomic_open(path, encoding="utf-8") as f:
        f.write(notebook_html(nb))
    return Path(path)
