"""Names a user gives (grid names, variant names, run ids, report names and suffixes) never
leave the folder they are meant for: `..`, `.`, absolute paths and separators are refused before
anything is written."""

from __future__ import annotations

import textwrap

import pytest

from baeraser_lib.errors import ConfigError
from baeraser_lib.lab import grid as G
from baeraser_lib.lab import runner as R
from baeraser_lib.lab import sweep as S
from baeraser_lib.lab.reports import write_report
from baeraser_lib.safepath import check_name, child

BAD = ["..", ".", "/etc", "a/b", "..\\x", "../reports", ".hidden", "-rf", "", "a\x00b", "x" * 201]


@pytest.mark.parametrize("name", BAD)
def test_check_name_refuses_every_way_out(name):
    with pytest.raises(ConfigError, match="plain file name"):
        check_name(name)
    with pytest.raises(ConfigError):
        child("reports", name)


@pytest.mark.parametrize("name", ["families", "cpu.v2", "run-1", "_scratch", "a.b-c_d"])
def test_plain_names_pass(name, tmp_path):
    assert child(tmp_path, name) == tmp_path / name


def _grid_file(tmp_path, name_line: str, variant: str = "a") -> str:
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(f"""\
        {name_line}
        notebooks: [01_inject]
        variants:
          - name: {variant!r}
            set: {{seed: 1}}
        """))
    return path


@pytest.mark.parametrize("name", ["'..'", "'.'", "/tmp/x", "a/b", "'../up'"])
def test_a_grid_named_to_leave_reports_is_refused_when_loaded(tmp_path, name):
    with pytest.raises(ConfigError, match="grid name"):
        G.load_grid(_grid_file(tmp_path, f"name: {name}"))


@pytest.mark.parametrize("variant", ["..", ".", "a/b", "/abs"])
def test_a_variant_named_to_leave_its_grid_is_refused(tmp_path, variant):
    with pytest.raises(ConfigError, match="variant name"):
        G.load_grid(_grid_file(tmp_path, "name: ok", variant))


def test_a_grid_built_in_python_with_a_bad_name_writes_nothing(tmp_path):
    grid = G.Grid("..", ["01_inject"], {}, {"seed": [0]})
    out = tmp_path / "reports" / "inner"
    out.mkdir(parents=True)
    with pytest.raises(ConfigError, match="grid name"):
        S.sweep(grid, out, tmp_path / "artifacts", dry_run=False, log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["inner", "reports"]


def test_report_names_and_suffixes_cannot_leave_the_reports_folder(tmp_path):
    with pytest.raises(ConfigError, match="report name"):
        write_report(tmp_path / "r", "../escaped", {"a": 1})
    with pytest.raises(SystemExit, match="report name"):
        R.run(["01_inject"], {}, tmp_path / "r", suffix="/../../escaped")
    assert not any(tmp_path.rglob("*escaped*")) and not (tmp_path / "r").exists()


def test_a_later_success_clears_the_failure_and_its_page(tmp_path):
    """runs.json keeps each report's last good run; failures.json the failures since; the index
    lists both, and other runs' folders."""
    from baeraser_lib.lab.site import write_index

    out = tmp_path / "reports"
    (out / "failed").mkdir(parents=True)
    (out / "failed" / "01_inject.html").write_text("<html>error</html>")
    R._record(out, "01_inject", {"status": "failed", "error": "ConfigError: x", "page": "failed/01_inject.html",
                                 "parameters": {}})
    (out / "runs" / "epochs-8").mkdir(parents=True)
    (out / "runs" / "epochs-8" / "runs.json").write_text('{"01_inject": {"status": "ok", "parameters": {"epochs": 8}}}')
    index = write_index(out).read_text()
    assert 'href="failed/01_inject.html"' in index and 'href="runs/epochs-8/index.html"' in index
    R._record(out, "01_inject", {"status": "ok", "error": None, "parameters": {}})
    assert not (out / "failed" / "01_inject.html").exists()
    assert R.json.loads((out / "failures.json").read_text()) == {}
    assert R.json.loads((out / "runs.json").read_text())["01_inject"]["status"] == "ok"
    assert "Failed runs" not in write_index(out).read_text()


def test_run_names_come_from_the_differing_parameters():
    assert R.run_name({"dataset": "cifar10", "epochs": 2}) == "dataset-cifar10-epochs-2"
    long = R.run_name({"data_root": "/somewhere/else", "epochs": 2})
    assert long.startswith("epochs-2-") and len(long) == len("epochs-2-") + 8  # folders summed up by a hash
    assert R.differing({"attack": "imc", "device": "cuda", "epochs": 4, "lr": 0.1},
                       {"01_inject": {"attack": "badnets", "device": "auto", "epochs": 4, "lr": 0.05}}) == {"lr": 0.1}
