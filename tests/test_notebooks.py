"""Notebooks: paired with their .py sources, parameterisable, and runnable by the report runner."""

import json
from pathlib import Path

import jupytext
import pytest

from baeraser_lib.lab import runner as R
from baeraser_lib.lab.site import attack_rows

NOTEBOOKS = sorted(R.NOTEBOOKS_DIR.glob("*.py"))


def test_every_runner_notebook_exists():
    assert [p.stem for p in NOTEBOOKS if p.stem in R.NOTEBOOKS] == R.NOTEBOOKS


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pairs_are_in_sync(src):
    twin = src.with_suffix(".ipynb")
    assert twin.exists(), f"run `make sync` (jupytext --sync {src.name})"
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(jupytext.read(src)) == cells(jupytext.read(twin)), f"run `jupytext --sync {src}`"


@pytest.mark.parametrize("src", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_literals(src):
    params = R.parameters_of(src)
    assert {"reports_dir", "report_name", "seed", "device"} <= set(params)
    cell = next(c for c in jupytext.read(src).cells if "parameters" in c.metadata.get("tags", []))
    crowded = [line for line in cell.source.splitlines() if line.count("=") > 1]
    assert not crowded, f"papermill cannot parse a second '=' (e.g. in a comment): {crowded}"


def smoke_params(data_root, tmp_path):
    """Tiny but real: a width-4 ResNet-18 learns the backdoor in seconds (NAD needs its residual
    stages); recovery and the defenses take a few steps."""
    return {"model": "resnet18", "width": 4, "epochs": 6, "batch_size": 32, "lr": 0.1, "poison_rate": 0.2,
            "holding_ratio": 0.25, "data_root": str(data_root), "download": False,
            "artifacts_dir": str(tmp_path / "artifacts"), "steps_per_stage": 10, "grid_size": 3, "mask_steps": 40,
            "unlearn_epochs": 2, "finetune_epochs": 1, "nad_epochs": 1,
            "ibau_rounds": 1, "sau_epochs": 1, "anp_iterations": 5,  # the peers at smoke settings
            "reactivation_images": 100, "reactivation_poisoned": 5, "reactivation_epochs": 1}


def declared_by(name, params):
    """The subset of `params` that notebook `name` declares (the runner refuses the others)."""
    declared = R.parameters_of(R.NOTEBOOKS_DIR / f"{name}.py")
    return {k: v for k, v in params.items() if k in declared}


def test_notebooks_01_to_03_run_under_papermill_and_report(fashion_root, tmp_path):
    out = tmp_path / "reports"
    results = R.run(["01_inject", "02_recover_triggers", "03_unlearn"], smoke_params(fashion_root, tmp_path), out,
                    progress=False)
    assert [r["status"] for r in results] == ["ok", "ok", "ok"], [r["error"] for r in results]
    figures = json.loads((out / "01_inject.json").read_text())
    for key in ("clean_acc", "asr", "clean_model_acc"):
        assert 0.0 <= figures[key] <= 1.0
    assert figures["dataset"] == "fashion_mnist" and figures["attack"] == "badnets"
    assert figures["train_seconds"] > 0 and figures["n_holding"] == 100
    html = (out / "01_inject.html").read_text()
    assert "Inject a backdoor" in html and "data:image/png;base64" in html  # prose and figures
    index = (out / "index.html").read_text()
    assert 'href="01_inject.html"' in index and "clean_acc" in index
    assert json.loads((out / "runs.json").read_text())["01_inject"]["status"] == "ok"
    assert len(list((tmp_path / "artifacts").glob("*/*/weights.safetensors"))) == 3  # clean + victim + defended (03 saves it)
    recovery = json.loads((out / "02_recover_triggers.json").read_text())
    for key in ("target_label_found", "recovered_asr", "labels_kept", "seconds_recovery", "num_classes"):
        assert key in recovery
    assert isinstance(recovery["target_label_found"], bool) and recovery["num_classes"] == 10
    assert 0 <= recovery["recovered_asr"] <= 1 and recovery["seconds_recovery"] > 0
    assert "Recover the trigger" in (out / "02_recover_triggers.html").read_text()
    assert len(list((tmp_path / "artifacts").glob("pools/*/pool.safetensors"))) == 1
    unlearning = json.loads((out / "03_unlearn.json").read_text())
    assert set(unlearning["methods"]) == {"none", "baeraser", "vanilla", "finetune", "fineprune", "nad",
                                          "nc", "ibau", "sau", "anp"}  # the baselines and the peers
    for row in unlearning["methods"].values():
        assert set(row) >= {"clean_acc", "asr", "robust_acc", "der", "seconds"}
        assert 0 <= row["asr"] <= 1 and 0 <= row["der"] <= 1
    assert unlearning["victim_train_seconds"] > 0 and unlearning["recovery_seconds"] > 0
    react = unlearning["reactivation"]  # every defended model, the victim and the clean reference, re-tuned
    assert set(react["models"]) == set(unlearning["methods"]) | {"clean reference"}
    assert react["config"]["n_images"] == 100 and react["config"]["n_poisoned"] == 5
    ref = react["models"]["clean reference"]["asr_after"]
    for name, row in react["models"].items():
        assert 0 <= row["asr_after"] <= 1 and 0 <= row["clean_acc_after"] <= 1
        if name != "clean reference":
            assert row["gap"] == row["asr_after"] - ref
            assert unlearning["methods"][name]["reactivated_asr"] == row["asr_after"]
    assert set(react["query_only"]) == {"clean reference", "none", "baeraser"}


ABLATION_SMOKE = {"grid": "smoke", "sweep_epochs": 1, "trace_every": 1, "curve_images": 50, "position_images": 50,
                  "panel_curve_images": 50}


def test_notebook_04_runs_every_ablation_under_papermill(fashion_root, tmp_path):
    """Notebook 04 on the smoke grid: every sweep's numbers and a computed verdict per claim."""
    out = tmp_path / "reports"
    results = R.run(["04_ablations"], {**declared_by("04_ablations", smoke_params(fashion_root, tmp_path)),
                                       **ABLATION_SMOKE}, out, progress=False)
    assert results[0]["status"] == "ok", results[0]["error"]
    figures = json.loads((out / "04_ablations.json").read_text())
    assert [r["beta_over_alpha"] for r in figures["beta_alpha"]] == [1e-4, 100.0]
    assert set(figures["holding_ratio"]) == {"0.2", "0.25"} and set(figures["trigger_size"]) == {"3", "5"}
    for rows in list(figures["holding_ratio"].values()) + list(figures["trigger_size"].values()):
        assert set(rows) == {"none", "baeraser", "finetune", "fineprune", "nad"}
        assert all(0 <= r["asr"] <= 1 and 0 <= r["clean_acc"] <= 1 for r in rows.values())
    assert figures["holding_sizes"] == {"0.2": 80, "0.25": 100} and figures["evaluation_images"] == 100
    assert figures["iterations"] and set(figures["positions"]["none"]) == {
        "bottom_right", "bottom_left", "top_right", "top_left", "center", "random"}
    assert set(figures["correct_label"]) == {"baeraser β/α=1", "baeraser β/α=100", "plain ascent"}
    assert set(figures["lambda_h"]) == {"0", "0.1"} and all("der" in r for r in figures["lambda_h"].values())
    react = figures["reactivation"]
    assert set(react["settings"]) == {"the default", "the paper's reading", "outputs anchor only",
                                      "invariance + weight anchor"}
    assert react["config"]["n_images"] == 100 and 0 <= react["reference_asr_after"] <= 1
    assert all(0 <= r["asr_after"] <= 1 for r in react["settings"].values())
    erased = next(v for v in figures["verdicts"] if v["claim"].startswith("the default unlearning stays erased"))
    default = react["settings"]["the default"]
    assert erased["reproduced"] == (bool(figures["pool_labels"]) and default["asr"] <= 0.02
                                    and default["asr_after"] <= react["reference_asr_after"] + 0.10)
    assert len(figures["verdicts"]) == figures["claims"] >= 9
    for v in figures["verdicts"]:
        assert set(v) == {"claim", "reproduced", "evidence"} and isinstance(v["reproduced"], bool) and v["evidence"]
    assert figures["reproduced"] == sum(v["reproduced"] for v in figures["verdicts"])
    tiny = figures["beta_alpha"][0]  # the first verdict, recomputed from the raw numbers beside it
    assert figures["verdicts"][0]["reproduced"] == (
        bool(figures["pool_labels"]) and tiny["asr"] <= 0.02 and tiny["acc_drop_points"] > 10)
    html = (out / "04_ablations.html").read_text()
    assert "Ablations" in html and "data:image/png;base64" in html and "reproduced" in html
    # one victim per trigger size; recovery once per (victim, D_h)
    assert len(list((tmp_path / "artifacts").glob("victims/*/weights.safetensors"))) == 2
    assert len(list((tmp_path / "artifacts").glob("pools/*/pool.safetensors"))) == 4  # + λ_H = 0


def test_notebook_02_defends_an_external_checkpoint(fashion_root, tmp_path):
    from safetensors.torch import save_file

    from baeraser_lib.config import TrainConfig
    from baeraser_lib.victims import new_model

    model = new_model(TrainConfig(model="resnet18", width=8))
    save_file(model.state_dict(), str(tmp_path / "suspect.safetensors"))
    params = {**declared_by("02_recover_triggers", smoke_params(fashion_root, tmp_path)), "width": 8,
              "model_path": str(tmp_path / "suspect.safetensors")}
    out = tmp_path / "reports"
    results = R.run(["02_recover_triggers"], params, out, progress=False)
    assert results[0]["status"] == "ok", results[0]["error"]
    figures = json.loads((out / "02_recover_triggers.json").read_text())
    assert "target_label_found" not in figures  # no ground truth for someone else's model
    assert len(figures["victim_id"]) == 16 and isinstance(figures["labels_kept"], list)


def test_notebooks_02_and_03_defend_your_own_architecture_and_save_the_result(fashion_root, tmp_path):
    """`model_path` + `model_def` (a factory of the user's own nn.Module): 02 recovers, 03 defends
    with every registered method, scores clean accuracy only (no trigger is known) and saves the
    defended model as an artifact."""
    from safetensors.torch import save_file

    from baeraser_lib.artifacts import read_meta
    from baeraser_lib.models import build_model

    (tmp_path / "mine.py").write_text("from baeraser_lib.models import build_model\n\n"
                                      "def make(num_classes):\n    return build_model('resnet18', num_classes, 1, 8)\n")
    save_file(build_model("resnet18", 10, 1, 8).state_dict(), str(tmp_path / "mine.safetensors"))
    own = {"model_path": str(tmp_path / "mine.safetensors"), "model_def": f"{tmp_path / 'mine.py'}:make"}
    out = tmp_path / "reports"
    for name in ("02_recover_triggers", "03_unlearn"):
        params = {**declared_by(name, smoke_params(fashion_root, tmp_path)), **own}
        results = R.run([name], params, out, progress=False)
        assert results[0]["status"] == "ok", results[0]["error"]
    figures = json.loads((out / "03_unlearn.json").read_text())
    assert set(figures["methods"]) == {"none", "baeraser", "vanilla", "finetune", "fineprune", "nad",
                                       "nc", "ibau", "sau", "anp"}
    assert figures["victim_train_seconds"] is None and figures["methods"]["none"]["clean_acc"] > 0
    meta = read_meta(figures["defended_model"])
    assert meta["kind"] == "defended" and meta["method"] == "baeraser" and meta["suspect"] == figures["victim_id"]


def test_notebook_02_without_a_victim_says_to_run_01(fashion_root, tmp_path):
    out = tmp_path / "reports"
    params = declared_by("02_recover_triggers", smoke_params(fashion_root, tmp_path))
    results = R.run(["02_recover_triggers"], params, out, progress=False)
    assert results[0]["status"] == "failed" and "run notebook 01" in results[0]["error"]


def test_a_failing_notebook_gets_its_page_and_a_non_zero_exit_and_keeps_the_last_good_report(fashion_root, tmp_path):
    out = tmp_path / "reports"
    (out).mkdir()
    (out / "01_inject.json").write_text('{"asr": 1.0}')  # the last good report: a failure must not erase it
    args = ["run", "--only", "01_inject", "--out", str(out), "--no-progress"]
    for k, v in declared_by("01_inject", smoke_params(fashion_root, tmp_path)).items():
        args += ["-p", k, json.dumps(v)]
    # a data root without the data passes the up-front checks and fails inside the notebook
    assert R.main(args + ["-p", "data_root", json.dumps(str(tmp_path / "no-data"))]) == 1
    assert (out / "01_inject.json").read_text() == '{"asr": 1.0}' and not list(out.glob(".tmp-*"))
    row = json.loads((out / "failures.json").read_text())["01_inject"]
    assert row["status"] == "failed" and row["page"] == "failed/01_inject.html"
    assert row["error"].split(":")[0] in (out / "failed" / "01_inject.html").read_text()  # the page shows the error
    assert "01_inject" not in (json.loads((out / "runs.json").read_text()) if (out / "runs.json").exists() else {})
    assert 'href="failed/01_inject.html"' in (out / "index.html").read_text()
    assert not (tmp_path / "artifacts").exists()  # nothing trained


def test_running_with_other_parameters_never_touches_the_default_reports(fashion_root, tmp_path, monkeypatch):
    """The report-overwrite scenario: the main folder's reports and index survive a run with other
    parameters (here one that fails), which lands in runs/<name>/ and is linked from the index."""
    main = tmp_path / "reports"
    monkeypatch.setattr(R, "REPORTS_DIR", main)
    main.mkdir()
    (main / "01_inject.json").write_text('{"asr": 0.99}')
    (main / "01_inject.html").write_text("<html>default</html>")
    (main / "runs.json").write_text(json.dumps({"01_inject": {"status": "ok", "parameters": {}}}))
    R.write_index(main)
    before = {p.name: p.read_bytes() for p in main.iterdir() if p.is_file() and p.name != "index.html"}
    args = ["run", "--only", "01_inject", "--out", str(main), "--no-progress"]
    for k, v in declared_by("01_inject", smoke_params(fashion_root, tmp_path)).items():
        args += ["-p", k, json.dumps(v)]
    with pytest.raises(SystemExit, match="larger than the 28×28 image"):  # refused before any kernel
        R.main(args + ["-p", "trigger_size", "40"])
    assert {p.name: p.read_bytes() for p in main.iterdir() if p.is_file() and p.name != "index.html"} == before
    assert R.main(args + ["-p", "trigger_size", "5"]) == 0  # a run with other parameters than the defaults
    assert {p.name: p.read_bytes() for p in main.iterdir() if p.is_file() and p.name != "index.html"} == before
    folder = next((main / "runs").iterdir())
    assert json.loads((folder / "01_inject.json").read_text())["trigger_size"] == 5
    assert len(folder.name) <= 69 and json.loads((folder / "runs.json").read_text())["01_inject"]["status"] == "ok"
    index = (main / "index.html").read_text()
    assert f'href="runs/{folder.name}/index.html"' in index and 'href="01_inject.html"' in index


def test_unknown_notebook_or_parameter_is_refused_before_running(tmp_path):
    with pytest.raises(SystemExit, match="unknown parameter.*poison_ratio"):
        R.run(["01_inject"], {"poison_ratio": 0.1}, tmp_path)
    with pytest.raises(SystemExit, match="unknown notebook"):
        R.run(["09_nothing"], {}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_notebooks_run_per_attack_and_the_index_tables_attacks_by_defenses(fashion_root, tmp_path):
    out = tmp_path / "reports"
    params = {**smoke_params(fashion_root, tmp_path), "attack_options": {"steps": 20, "trigger_steps": 5}}
    results = R.run_attacks(["imc"], R.NOTEBOOKS[:3], params, out, progress=False)
    assert [r["status"] for r in results] == ["ok"] * 3, [r["error"] for r in results]
    inject = json.loads((out / "01_inject-imc.json").read_text())
    assert inject["attack"] == "imc" and inject["trigger_loss_last_epoch"] < inject["trigger_loss_first_epoch"]
    assert inject["neuron_activation_end"] > inject["neuron_activation_start"]
    assert "trigger loss per epoch (before its step)" in (out / "01_inject-imc.html").read_text()
    assert json.loads((out / "03_unlearn-imc.json").read_text())["attack"] == "imc"
    assert not (out / "01_inject.json").exists()  # only the default attack keeps the plain names
    batch = json.loads((out / "batches.json").read_text())
    assert batch["attacks"] == ["imc"] and batch["seconds"] > 0 and batch["status"] == "ok"
    rows = attack_rows(out)
    assert [r["attack"] for r in rows] == ["imc"] and set(rows[0]["defenses"]) >= {"baeraser", "nad"}
    index = (out / "index.html").read_text()
    assert "Attacks × defenses" in index and 'href="03_unlearn-imc.html"' in index
    assert not any(cell.startswith("batches") for cell in index.split("<td>"))  # not listed as a report


def test_attack_batches_refuse_unknown_attacks_before_running(tmp_path):
    with pytest.raises(SystemExit, match="unknown attack"):
        R.run_attacks(["trojan"], R.NOTEBOOKS, {}, tmp_path)
    with pytest.raises(SystemExit, match="--attacks, not with -p attack"):
        R.run_attacks(["imc"], R.NOTEBOOKS, {"attack": "imc"}, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("attack, options, extra", [
    ("blended", {}, {}),
    ("wanet", {"strength": 8.0, "cross_ratio": 0.0}, {}),  # a visible warp: the tiny set cannot learn 0.5
    ("sig", {"delta": 0.6, "frequency": 2.0}, {"poison_rate": 0.085}),  # clean-label: the target class's share
])
def test_notebook_01_injects_each_new_family_under_papermill(fashion_root, tmp_path, attack, options, extra):
    out = tmp_path / "reports"
    params = {**declared_by("01_inject", smoke_params(fashion_root, tmp_path)), "attack": attack,
              "attack_options": options, **extra}
    results = R.run(["01_inject"], params, out, progress=False)
    assert results[0]["status"] == "ok", results[0]["error"]
    figures = json.loads((out / "01_inject.json").read_text())
    kind = {"blended": "blend", "wanet": "warp", "sig": "additive"}[attack]
    assert figures["attack"] == attack and figures["trigger_kind"] == kind and figures["trigger_size"] is None
    assert 0 < figures["change_linf_mean"] <= figures["change_linf_max"] <= 1 and figures["change_l2_mean"] > 0
    assert figures["target_rule"] == "all-to-one → 0" and 0 <= figures["asr"] <= 1
    html = (out / "01_inject.html").read_text()
    assert "How large is the change" in html and "L2 of x′ − x" in html


def test_an_all_to_all_victim_goes_through_01_to_03(fashion_root, tmp_path):
    out = tmp_path / "reports"
    params = {**smoke_params(fashion_root, tmp_path), "target_label": None,
              "attack_options": {"mode": "all_to_all"}}
    results = R.run(["01_inject", "02_recover_triggers", "03_unlearn"], params, out, progress=False)
    assert [r["status"] for r in results] == ["ok", "ok", "ok"], [r["error"] for r in results]
    assert json.loads((out / "01_inject.json").read_text())["target_rule"].startswith("all-to-all")
    assert json.loads((out / "02_recover_triggers.json").read_text())["all_to_all"] is True
    methods = json.loads((out / "03_unlearn.json").read_text())["methods"]
    assert 0 <= methods["none"]["asr"] <= 1 and set(methods) >= {"baeraser", "finetune"}
