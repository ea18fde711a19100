"""Reports open anywhere: no script from a network, no empty widget box, checked in a real
headless browser with the network off when one is installed (Debian's chromium)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from baeraser_lib.lab import browser as B
from baeraser_lib.lab.html import WIDGET_MIME, WIDGET_NOTE, external_references, notebook_html, strip_widgets
from baeraser_lib.lab.site import write_index

REPO = Path(__file__).resolve().parents[1]


def executed_notebook():
    """A small executed notebook as papermill leaves one: prose, code, printed lines, a progress
    bar's widget output and two matplotlib figures."""
    import base64
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def figure(n):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        ax.plot(range(n), [i * i for i in range(n)], marker="o", label="ASR")
        ax.imshow([[i * j for j in range(8)] for i in range(8)], extent=(0, n, 0, n * n), alpha=0.4)
        ax.legend()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()

    v4 = nbformat.v4
    cells = [v4.new_markdown_cell("# 03 · Unlearn the backdoor\n\n| defense | ASR |\n|---|---|\n| baeraser | 0.001 |")]
    code = v4.new_code_cell("print('unlearning'); plot()")
    code.outputs = [v4.new_output("stream", name="stdout", text="unlearning epoch 1/5\n"),
                    v4.new_output("display_data", data={WIDGET_MIME: {"model_id": "bar", "version_major": 2,
                                                                      "version_minor": 0}, "text/plain": "HBox()"}),
                    v4.new_output("display_data", data={"image/png": figure(5), "text/plain": "<Figure>"}),
                    v4.new_output("display_data", data={"image/png": figure(9), "text/plain": "<Figure>"})]
    return v4.new_notebook(cells=cells + [code], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                         "language": "python"}})


def executed_with_a_widget():
    nb = executed_notebook()
    cell = nbformat.v4.new_code_cell("panel")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        WIDGET_MIME: {"model_id": "abc", "version_major": 2, "version_minor": 0}, "text/plain": "VBox()"})]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_widget_outputs_become_a_note_and_the_state_is_dropped():
    nb = executed_with_a_widget()
    widgets = [o for c in nb.cells for o in c.get("outputs", []) if WIDGET_MIME in o.get("data", {})]
    assert len(widgets) > 1  # the one added, and the progress bar the kernel drew
    assert strip_widgets(nb) == len(widgets)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if WIDGET_MIME in o.get("data", {})]
    assert nb.cells[-1].outputs[0]["data"] == {"text/plain": WIDGET_NOTE} and "widgets" not in nb.metadata


def test_the_offline_page_references_nothing_on_a_network():
    page = notebook_html(executed_with_a_widget())
    assert external_references(page) == [] and "<script src" not in page
    assert WIDGET_NOTE.split(":")[0] in page and "data:image/png;base64" in page  # the figures are inline


def test_the_lab_template_would_have_fetched_from_cdns():
    """The control: what the check catches in nbconvert's own template."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(executed_with_a_widget())
    assert any("cdnjs" in r or "unpkg" in r for r in external_references(body))


needs_browser = pytest.mark.skipif(B.find_browser() is None, reason="no Chromium-family browser installed")


@needs_browser
def test_a_report_and_the_index_open_in_a_browser_with_the_network_off(tmp_path):
    page = tmp_path / "03_unlearn.html"
    page.write_text(notebook_html(executed_with_a_widget()), encoding="utf-8")
    shutil.copy(REPO / "reports" / "03_unlearn.json", tmp_path / "03_unlearn.json")
    (tmp_path / "runs.json").write_text(json.dumps({"03_unlearn": {"status": "ok", "parameters": {}}}))
    index = write_index(tmp_path)
    seen = B.visit(page)
    assert seen.loaded and seen.remote_requests == [], seen.requests
    assert seen.images >= 2 and seen.images_decoded == seen.images  # every figure decoded and drawn
    seen = B.visit(index)
    assert seen.loaded and seen.remote_requests == [] and seen.title == "baeraser reports"


@needs_browser
def test_the_browser_check_sees_a_page_that_reaches_out(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><head><script src="https://cdn.example.org/x.js"></script></head>'
                    '<body><img src="https://cdn.example.org/figure.png"></body></html>')
    seen = B.visit(page)
    assert set(seen.remote_requests) == {"https://cdn.example.org/x.js", "https://cdn.example.org/figure.png"}
    assert seen.images == 1 and seen.images_decoded == 0  # the network is off: the figure never arrives


def test_old_pages_are_made_offline_exported_anew_or_scrubbed(tmp_path):
    from nbconvert import HTMLExporter

    from baeraser_lib.lab.html import make_offline, scrub_page

    old, _ = HTMLExporter(template_name="lab").from_notebook_node(executed_with_a_widget())
    assert external_references(old)
    scrubbed = scrub_page(old)
    assert external_references(scrubbed) == [] and "<script" not in scrubbed
    widget = ('<div class="jupyter-widgets jp-OutputArea-output" id="7a1b" tabindex="0">\n<script type="text/javascript">'
              "\nvar element = document.getElementById('7a1b');\n</script>\n"
              '<script type="application/vnd.jupyter.widget-view+json">\n{"model_id": "89"}\n</script>\n</div>')
    assert scrub_page(f"<html><body>{widget}</body></html>").count(WIDGET_NOTE) == 1  # as the lab template wrote them
    assert scrubbed.count("data:image/png;base64") == old.count("data:image/png;base64")  # figures kept
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "03_unlearn.html").write_text(old)
    nbformat.write(executed_with_a_widget(), tmp_path / "run" / "03_unlearn.ipynb")  # its executed notebook: exported anew
    (tmp_path / "orphan.html").write_text(old)  # none: scrubbed
    (tmp_path / "index.html").write_text("<html><body>static</body></html>")
    assert make_offline(tmp_path) == {"exported": 1, "scrubbed": 1, "already offline": 1}
    assert all(not external_references(p.read_text()) for p in tmp_path.rglob("*.html"))


def test_pages_are_compact_and_old_pages_are_made_so_without_losing_a_figure(tmp_path):
    """JupyterLab's index.css (240 KB) gives way to compact.css and figures become 256-colour PNGs:
    the same page, several times smaller, its figures the same size; compacting twice changes nothing."""
    import base64
    import io

    from nbconvert import HTMLExporter
    from PIL import Image

    from baeraser_lib.lab.html import _PNG, compact_page, compact_reports

    nb = executed_with_a_widget()
    old, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    new = notebook_html(nb)
    assert "jp-Cell-Placeholder" in old and "jp-Cell-Placeholder" not in new and ".jp-RenderedHTMLCommon table" in new
    assert len(new) < len(old) / 2, (len(old), len(new))
    def figure_sizes(page):  # the body's figures (index.css held a few tiny icons too)
        return [Image.open(io.BytesIO(base64.b64decode(b))).size for b in _PNG.findall(page[page.index("<body"):])]

    assert figure_sizes(old) == figure_sizes(new) == [(600, 300), (600, 300)]
    again = compact_page(old)
    assert "jp-Cell-Placeholder" not in again and len(again) < len(old) / 2 and compact_page(again) == again
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.html").write_text(old)
    (tmp_path / "new.html").write_text(new)
    counts = compact_reports(tmp_path)
    assert counts["compacted"] == 1 and counts["unchanged"] == 1 and counts["bytes_after"] < counts["bytes_before"]
    assert (tmp_path / "a" / "old.html").read_text() == again
