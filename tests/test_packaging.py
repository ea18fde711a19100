"""The set-up users rely on: one list of pins, two README commands, CI calling the test one."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_one_list_of_pins():
    pins = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert all("==" in p for p in pins), "every dependency is pinned"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.txt" in pip_section  # conda reads the same pins


def test_readme_commands_and_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make reports" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "reports:" in makefile and "test:" in makefile and "-m venv" in makefile


def test_readme_results_match_the_committed_report():
    import json

    figures = json.loads((ROOT / "reports" / "01_inject.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert f"| {figures['clean_acc']:.3f} |" in readme
    assert f"| {figures['asr']:.4f} |" in readme
    assert f"| {figures['clean_model_acc']:.3f} |" in readme
    assert f"| {figures['acc_cost_points']:.2f} points |" in readme


def test_readme_recovery_figures_match_the_committed_reports():
    import json

    rec = json.loads((ROOT / "reports" / "02_recover_triggers.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert f"| {rec['recovered_asr']:.3f} |" in readme
    assert f"anomaly index {rec['target_anomaly_index']:.2f}, mask {rec['target_mask_size']:.2f} px |" in readme
    assert f"| {rec['mask_share_on_true_patch']:.2f} |" in readme
    assert f"| {rec['seconds_recovery']:.1f} s |" in readme
    assert f"| {len([k for k in rec['labels_kept'] if k != 0])} |" in readme
    bench = ROOT / "reports" / "benchmarks" / "recovery_speed.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        assert f"{b['speedup']:.1f}×" in readme and f"{b['k100_seconds']:.0f} s" in readme


def test_readme_unlearning_table_matches_the_committed_report():
    import json

    methods = json.loads((ROOT / "reports" / "03_unlearn.json").read_text())["methods"]
    readme = (ROOT / "README.md").read_text()
    for name, r in methods.items():
        assert f"| {name} | {r['clean_acc']:.4f} | {r['asr']:.4f} | {r['robust_acc']:.4f} | {r['der']:.3f} |" in readme


def test_readme_attack_table_matches_the_committed_reports():
    from baeraser_lib.lab.site import attack_markdown

    readme = (ROOT / "README.md").read_text()
    lines = attack_markdown(ROOT / "reports").splitlines()[2:]
    assert [line.split(" | ")[0] for line in lines] == ["| badnets", "| trojannn", "| imc"]
    for line in lines:
        assert line in readme, f"README's attack table is stale: {line}"


def test_readme_claims_table_matches_the_committed_ablation_report():
    from baeraser_lib.lab.site import verdict_markdown

    readme = (ROOT / "README.md").read_text()
    table = verdict_markdown(ROOT / "reports")
    assert table.count("\n") >= 8  # header, rule and one row per claim
    for line in table.splitlines():
        assert line in readme, f"README's claims table is stale: {line}"


def test_shipped_grids_expand_to_the_papers_table():
    from baeraser_lib.lab.grid import load_grid, validate

    for name, width in (("cpu", 16), ("paper", 64)):
        runs, _ = validate(load_grid(ROOT / "grids" / f"{name}.yaml"))
        assert len(runs) == 12, name  # 4 datasets × 3 attacks; every run carries all four defenses (03)
        assert {r.parameters["attack"] for r in runs} == {"badnets", "trojannn", "imc"}
        assert len({r.parameters["dataset"] for r in runs}) == 4
        assert {r.parameters["width"] for r in runs} == {width}
        assert all(r.notebooks[-1] == "03_unlearn" for r in runs)


def test_the_families_grid_covers_every_attack_and_option_of_the_bench():
    from baeraser_lib.attacks import ATTACKS
    from baeraser_lib.lab.grid import load_grid, validate

    runs, _ = validate(load_grid(ROOT / "grids" / "families.yaml"))
    params = {r.axes["variant"]: r.parameters for r in runs}
    assert {p["attack"] for p in params.values()} == set(ATTACKS)
    assert all(r.parameters["dataset"] == "fashion_mnist" and r.notebooks[-1] == "03_unlearn" for r in runs)
    badnets = [p for p in params.values() if p["attack"] == "badnets"]
    assert any(p.get("trigger_position") == "random" for p in badnets)
    assert any((p.get("attack_options") or {}).get("density", 1) < 1 for p in badnets)
    assert any((p.get("attack_options") or {}).get("mode") == "all_to_all" for p in badnets)
    for size in (5, 7):
        places = {str(p.get("trigger_position")) for p in badnets
                  if p.get("trigger_size") == size and not p.get("attack_options")}
        assert len(places) == 2 and "bottom_right" not in places and "None" not in places


def test_readme_grid_table_matches_the_committed_cpu_grid():
    from baeraser_lib.lab.grid_report import grid_markdown

    readme = (ROOT / "README.md").read_text()
    lines = grid_markdown(ROOT / "reports" / "cpu").splitlines()
    assert len(lines) == 2 + 12
    for line in lines:
        assert line in readme, f"README's grid table is stale: {line}"


def test_readme_attack_family_tables_match_the_committed_reports():
    from baeraser_lib.lab.grid_report import grid_markdown
    from baeraser_lib.lab.site import inject_markdown

    readme = (ROOT / "README.md").read_text()
    injects = inject_markdown(ROOT / "reports").splitlines()
    runs = inject_markdown(ROOT / "reports" / "families", "*/01_inject.json").splitlines()
    assert any(line.startswith("| 01_inject-blended |") for line in injects)
    assert any(line.startswith("| badnets_all_to_all |") for line in runs)
    for line in injects + runs + grid_markdown(ROOT / "reports" / "families").splitlines():
        assert line in readme, f"README's attack-family tables are stale: {line}"


def test_readme_trigger_agnostic_table_matches_the_benchmark():
    from baeraser_lib.lab.site import trigger_agnostic_markdown

    readme = (ROOT / "README.md").read_text()
    doc = json.loads((ROOT / "reports" / "benchmarks" / "trigger_agnostic.json").read_text())
    assert len({json.dumps(r["defense_config"], sort_keys=True) for r in doc["rows"]}) == 1  # one config for all
    for line in trigger_agnostic_markdown(ROOT / "reports" / "benchmarks" / "trigger_agnostic.json").splitlines():
        assert line in readme, f"README's trigger-agnostic table is stale: {line}"


def test_readme_peer_tables_match_the_committed_json():
    """The peers' sanity table and the per-defense summary of the families grid are generated from
    reports/benchmarks/peer_sanity.json and reports/families/grid.json, never typed."""
    from baeraser_lib.lab.grid_report import summary_markdown
    from baeraser_lib.lab.site import peer_sanity_markdown

    readme = (ROOT / "README.md").read_text()
    sanity = peer_sanity_markdown(ROOT / "reports" / "benchmarks" / "peer_sanity.json",
                                  ROOT / "reports" / "03_unlearn.json")
    assert len(sanity.splitlines()) >= 2 + 4  # one published row per peer at least
    for line in sanity.splitlines() + summary_markdown(ROOT / "reports" / "families").splitlines():
        assert line in readme, f"README's peer tables are stale: {line}"


def test_jupyterlab_opens_the_py_notebooks_as_notebooks(tmp_path):
    """`make lab`'s settings: JupyterLab (pinned) with jupytext's viewer as the default for .py
    files, checked on a real server's settings API; and the .py sources served as notebooks."""
    import json as _json
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import pytest

    pytest.importorskip("jupyterlab")  # pinned in requirements-lab.txt; absent only outside the set-up
    repo = Path(__file__).resolve().parents[1]
    assert "jupyterlab==" in (repo / "requirements-lab.txt").read_text()
    assert "lab:" in (repo / "Makefile").read_text() and "jupyter/overrides.json" in (repo / "Makefile").read_text()
    prefix = tmp_path / "prefix"
    settings = prefix / "share" / "jupyter" / "lab" / "settings"
    settings.mkdir(parents=True)
    shutil.copy(repo / "jupyter" / "overrides.json", settings / "overrides.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    lab_dir = Path(sys.prefix) / "share" / "jupyter" / "lab"
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
                             "--IdentityProvider.token=t", f"--ServerApp.root_dir={repo / 'notebooks'}",
                             f"--LabApp.app_settings_dir={settings}", f"--LabApp.app_dir={lab_dir}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                got = urllib.request.urlopen(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin?token=t",
                                             timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not start within 60 s")
        schema = _json.loads(got.read())["schema"]
        assert schema["properties"]["defaultViewers"]["default"] == {"python": "Jupytext Notebook"}
        nb = _json.loads(urllib.request.urlopen(f"{base}/api/contents/01_inject.py?token=t&type=notebook",
                                                timeout=10).read())
        assert nb["type"] == "notebook" and len(nb["content"]["cells"]) > 5
    finally:
        proc.terminate()
        proc.wait(10)
    js = " ".join(p.read_text(errors="ignore")
                  for p in (lab_dir / ".." / "labextensions" / "jupyterlab-jupytext").rglob("*.js"))
    assert "Jupytext Notebook" in js  # the viewer's name is the one jupytext's lab extension registers


def test_every_command_module_runs_as_a_module():
    """`python -m baeraser_lib.lab.<command> --help`, as the docstrings advertise."""
    import subprocess
    import sys

    for module in ("runner", "sweep", "artifacts_command", "defend_command", "attack_command"):
        done = subprocess.run([sys.executable, "-m", f"baeraser_lib.lab.{module}", "--help"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "usage" in done.stdout, (module, done.stderr[-500:])


def test_readme_generated_tables_are_current_and_each_is_there_once():
    """Every table that `baeraser report readme` writes is in the README once, and equals what
    the committed JSON gives now (`make readme` rewrites them)."""
    from baeraser_lib.lab.readme import OPENING, _blocks, stale

    text = (ROOT / "README.md").read_text()
    names = OPENING.findall(text)
    assert sorted(names) == sorted(_blocks()), "each generated table appears once"
    assert stale(text, ROOT) == [], "run `make readme`"


def test_readme_command_rewrites_stale_tables_and_refuses_unknown_ones(tmp_path, capsys):
    import re

    from baeraser_lib.errors import ConfigError
    from baeraser_lib.lab.readme import render
    from baeraser_lib.lab.runner import main as report_main
    from baeraser_lib.lab.site import attack_markdown

    (tmp_path / "reports").symlink_to(ROOT / "reports")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- generated: attacks -->\n| old |\n<!-- /generated: attacks -->\n\ntext\n")
    assert report_main(["readme", "--readme", str(readme), "--check"]) == 1
    assert "stale: attacks" in capsys.readouterr().out and "| old |" in readme.read_text()  # --check writes nothing
    assert report_main(["readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == ("# x\n\n<!-- generated: attacks -->\n" + attack_markdown(ROOT / "reports")
                                  + "\n<!-- /generated: attacks -->\n\ntext\n")
    assert report_main(["readme", "--readme", str(readme), "--check"]) == 0
    crlf = "# x\r\n<!-- generated: attacks -->\r\n| old |\r\n<!-- /generated: attacks -->\r\ntext\r\n"
    readme.write_bytes(crlf.encode())
    assert report_main(["readme", "--readme", str(readme)]) == 0
    assert readme.read_bytes().decode().count("\r\n") == readme.read_bytes().decode().count("\n")  # kept CRLF
    block = "<!-- generated: attacks -->\n| a |\n<!-- /generated: attacks -->\n"
    for bad, says in (("<!-- generated: nope -->\n<!-- /generated: nope -->\n", "unknown generated"),
                      ("<!-- generated: attacks -->\n| a |\n", "never closed ['attacks']"),
                      (block + block, "more than once: ['attacks']"),
                      ("| a |\n<!-- /generated: attacks -->\n", "closed but never opened ['attacks']"),
                      ("<!-- generated: claims -->\n" + block + "<!-- /generated: claims -->\n", "nested ['attacks'")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            render(bad, ROOT)
        readme.write_text(bad)
        assert report_main(["readme", "--readme", str(readme)]) == 2
        assert says in capsys.readouterr().err and readme.read_text() == bad
    (tmp_path / "reports").unlink()  # the JSON behind the block is gone: a clear error, nothing written
    (tmp_path / "reports").mkdir()
    for name in ("families-grid", "claims"):
        missing = f"<!-- generated: {name} -->\n| a |\n<!-- /generated: {name} -->\n"
        readme.write_text(missing)
        assert report_main(["readme", "--readme", str(readme)]) == 2
        err = capsys.readouterr().err
        assert f"README block {name}" in err and len(err.strip().splitlines()) == 1 and readme.read_text() == missing


def test_reactivation_and_persistence_tables_judge_each_row_against_the_reference(tmp_path):
    from baeraser_lib.lab.site import persistence_markdown, reactivation_markdown

    def model(before, after, acc=0.9):
        return {"asr_before": before, "asr_after": after, "clean_acc_before": acc}

    (tmp_path / "03.json").write_text(json.dumps({"reactivation": {
        "models": {"clean reference": model(0.01, 0.05), "none": model(1.0, 0.99), "baeraser": model(0.0, 0.15),
                   "nc": model(0.02, 0.16)},
        "query_only": {"baeraser": {"asr_after": 0.07}}}}))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in reactivation_markdown(tmp_path / "03.json").splitlines()}
    assert "stays erased (≤ 0.1500)" in rows["model"]
    assert rows["BAERASER"].endswith("| 0.1500 | 0.0700 | met |") and rows["Neural Cleanse"].endswith("| MISSED |")
    assert list(rows)[2:] == ["never backdoored (reference)", "undefended victim", "BAERASER", "Neural Cleanse"]

    row = {"asr": 0.001, "acc_drop_points": 1.0, "chosen_epoch": 3, "seconds": 9.6}
    (tmp_path / "p.json").write_text(json.dumps({
        "reference": {"asr_after": [0.04, 0.06], "mean_asr_after": 0.05}, "undefended": {"mean_asr_after": 0.99},
        "margin": 0.1, "seeds": [0, 1],
        "rows": {"kept": {**row, "mean_asr_after": 0.1, "stays_erased": True, "bars_met": True},
                 "back": {**row, "mean_asr_after": 0.9, "stays_erased": False, "bars_met": True}}}))
    text = persistence_markdown(tmp_path / "p.json")
    assert "so the bar is 0.1500" in text
    assert [line.split(" | ")[0] for line in text.splitlines()[4:]] == ["| back", "| kept"]  # most re-learned first
    assert text.splitlines()[-1] == "| kept | 0.0010 | 1.00 | 3 | 0.1000 | met | met | 10 |"


def test_budget_tables_count_each_bar_per_budget_and_name_the_largest_budget_within_the_cost_bar(tmp_path):
    from baeraser_lib.lab.site import budget_markdown, budget_summary

    def budget(asr, drop, react, cost, ref=0.05):
        return {"asr": asr, "acc_drop_points": drop, "reactivated_asr": react, "cost_ratio": cost,
                "bars": {"asr": asr <= 0.02, "acc_drop_points": drop <= 2, "cost_ratio": cost <= 0.25,
                         "stays_erased": react <= ref + 0.1}}

    rows = {"a": {"train_seconds": 300.0, "recovery_seconds": 40.0, "reference_reactivated_asr": 0.05,
                  "budgets": {"1": budget(0.03, 1.0, 0.5, 0.2), "2": budget(0.01, 1.5, 0.1, 0.24),
                              "3": budget(0.01, 1.2, 0.1, 0.3)}},
            "b": {"train_seconds": 200.0, "recovery_seconds": 60.0, "reference_reactivated_asr": 0.05,
                  "budgets": {"1": budget(0.01, 3.0, 0.1, 0.4), "2": budget(0.01, 3.0, 0.1, 0.45),
                              "3": budget(0.01, 2.5, 0.1, 0.5)}},
            "clean": {"train_seconds": 200.0, "recovery_seconds": 30.0, "reference_reactivated_asr": 0.9,
                      "note": "empty pool", "budgets": {k: budget(0.8, 0.0, 0.95, 0.15, ref=0.9) for k in "123"}}}
    summary = budget_summary(rows)
    assert summary["2"] == {"rows": 3, "asr": 2, "acc_drop_points": 2, "cost_ratio": 2, "stays_erased": 3,
                            "all_bars": 1, "mean_cost_ratio": pytest.approx(0.28)}  # the untouched row counts too
    (tmp_path / "b.json").write_text(json.dumps({"bars": {"asr": 0.02, "acc_drop_points": 2.0, "cost_ratio": 0.25,
                                                          "reactivation_margin": 0.1}, "rows": rows}))
    lines = budget_markdown(tmp_path / "b.json").splitlines()
    assert lines[3] == "| 2 | 3 | 2 | 2 | 2 | 3 | 1 | 0.280 |"
    assert "The shortest budget (1 epoch(s)) loses 1.0 to 3.0 points of accuracy on the 2 rows that unlearned." in lines
    by_row = {line.split(" | ")[0]: line for line in lines[7:]}
    assert by_row["| a"].endswith("| 2 | 0.0100 / 1.50 / 0.1000 / 0.24 |")  # budget 3 is over the cost bar
    assert "0.0100 / 1.20 / 0.1000 / 0.30" in by_row["| a"]  # the longest budget run, beside it
    assert by_row["| b"].endswith("| none |  |")
    assert by_row["| clean (nothing unlearned)"].endswith("| 3 | 0.8000 / 0.00 / 0.9500 / 0.15 |")


def test_the_peer_column_table_compares_each_row_with_the_grid_and_summarises_it(tmp_path):
    from baeraser_lib.lab.site import peer_column_markdown

    def row(asr, drop, d, ours, grid_sau):
        return {"asr": asr, "acc_drop_points": drop, "der": d, "seconds": 150.0, "reactivated_asr": 0.5,
                "grid": {"baeraser": {"asr": 0.01, "der": ours}, "sau": grid_sau}}

    doc = {"settings": {"sau · BatchNorm in train mode": {"defense": "sau", "setting": "the authors' switch", "rows": {
        "a": row(0.05, 2.0, 0.96, 0.97, {"asr": 0.4, "der": 0.78}),
        "b": row(0.30, 1.0, 0.80, 0.75, None)}}}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    lines = peer_column_markdown(tmp_path / "c.json").splitlines()
    assert lines[0] == "**SAU · BatchNorm in train mode**, 2 rows. The setting: the authors' switch."
    assert lines[4] == "| a | 0.0500 / 2.00 / 0.960 / 150 | 0.5000 | 0.4000 / 0.780 | 0.0100 / 0.970 | yes |"
    assert lines[5] == "| b | 0.3000 / 1.00 / 0.800 / 150 | 0.5000 | not run | 0.0100 / 0.750 | no |"
    assert lines[7] == ("Over these 2 rows: SAU mean DER 0.880, worst-case ASR 0.3000, mean 150 s; BAERASER (the "
                        "grid's) mean DER 0.860, worst-case ASR 0.0100; BAERASER's DER ≥ SAU's on 1 of 2.")
    doc["settings"]["sau · BatchNorm in train mode"]["rows"]["b"]["same_victim_as_grid"] = False
    (tmp_path / "c.json").write_text(json.dumps(doc))
    assert peer_column_markdown(tmp_path / "c.json").splitlines()[5].startswith(
        "| b (victim trained again: not the grid's) | 0.3000")  # its comparison with the grid is across victims


def test_the_schedule_tables_show_each_candidate_the_choice_and_the_rows_before_and_after(tmp_path):
    from baeraser_lib.lab.schedule_study import bars
    from baeraser_lib.lab.site import schedule_markdown

    def fig(asr, drop, react, cost, ref):
        f = {"asr": asr, "acc_drop_points": drop, "reactivated_asr": react, "cost_ratio": cost}
        return {**f, "bars": bars(f, ref)}

    dev = {"v": {"reference_reactivated_asr": 0.05,
                 "candidates": {"constant_10": fig(0.01, 1.5, 0.1, 0.4, 0.05), "cosine_3": fig(0.01, 2.5, 0.1, 0.2, 0.05)}},
           "clean_one": {"reference_reactivated_asr": 0.9, "candidates": {}}}
    chosen = fig(0.01, 1.0, 0.1, 0.2, 0.05)
    families = {"r": {"reference_reactivated_asr": 0.05, "grid_default": {k: v for k, v in fig(0.01, 1.0, 0.1, 0.4, 0.05)
                                                                           .items() if k != "bars"},
                      "chosen": {k: v for k, v in chosen.items() if k != "bars"}, "bars": chosen["bars"]}}
    (tmp_path / "s.json").write_text(json.dumps({"candidates": {"constant_10": "…", "cosine_3": "…"},
                                                 "development": dev, "chosen": "cosine_3", "families": families}))
    lines = schedule_markdown(tmp_path / "s.json").splitlines()
    assert lines[0] == "| development victim | re-tuned reference | constant_10 | cosine_3 |"
    assert lines[2] == "| v | 0.0500 | 0.0100 / 1.50 / 0.1000 / 0.40 (3/4) | 0.0100 / 2.50 / 0.1000 / 0.20 (3/4) |"
    assert lines[3] == "| clean_one | 0.9000 | empty pool: judged clean, nothing ran |  |"
    assert "Chosen by the rule: **cosine_3**." in lines[5]
    assert "| r | 0.0500 | 0.0100 / 1.00 / 0.1000 / 0.40 | 0.0100 / 1.00 / 0.1000 / 0.20 | 3 → 4 |" in lines
    assert lines[-4:-2] == ["| grid default (constant, 10 epochs) | 1 | 1 | 0 | 1 | 0 |", "| cosine_3 | 1 | 1 | 1 | 1 | 1 |"]
    assert lines[-1] == ("(row, bar) pairs met: 3 before, 4 with cosine_3: at least as many, so it could become "
                         "the default.")
    path = {"candidates": {"default": "…", "path_0.5": "…"}, "development": {}, "chosen": "path_0.5",
            "families": {"r": {**families["r"], "default": families["r"]["grid_default"]}}}
    (tmp_path / "p.json").write_text(json.dumps(path))
    from baeraser_lib.lab.site import path_markdown

    assert path_markdown(tmp_path / "p.json").splitlines()[-4:-2] == [
        "| default before (no path step) | 1 | 1 | 0 | 1 | 0 |", "| path_0.5 | 1 | 1 | 1 | 1 | 1 |"]
    costly = fig(0.01, 1.0, 0.1, 0.4, 0.05)  # misses the cost bar
    worse = {"r": {**path["families"]["r"], "chosen": {k: v for k, v in costly.items() if k != "bars"},
                   "bars": costly["bars"], "default": {k: v for k, v in chosen.items() if k != "bars"}}}
    (tmp_path / "w.json").write_text(json.dumps({**path, "families": worse}))
    assert path_markdown(tmp_path / "w.json").splitlines()[-1] == (
        "(row, bar) pairs met: 4 before, 3 with path_0.5: fewer, so it is **not** adopted; the default stays.")
