"""Grids: expansion, up-front checks, the local and Dask executors, skip and failure paths, the
grid's index page and JSON."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from baeraser_lib.lab import grid as G
from baeraser_lib.lab import grid_report as GR
from baeraser_lib.lab import sweep as S
from baeraser_lib.errors import ConfigError
from test_notebooks import smoke_params

TOY = '''\
# %% [markdown]
# # A toy notebook: records its call, writes a fake artifact, fails on demand

# %% tags=["parameters"]
x = 1
fail = False
seed = 0
device = "auto"
artifacts_dir = "../artifacts"
data_root = "../data"
reports_dir = "."
report_name = "toy"

# %%
import hashlib
import json
import os
import pathlib

art = pathlib.Path(artifacts_dir)
with open(art / "calls.log", "a") as f:
    f.write(f"{report_name} x={x}\\n")
if fail:
    raise ValueError(f"toy failure at x={x} <script>")
digest = hashlib.sha256(str(x).encode()).hexdigest()[:16]
folder = art / "toys" / digest
folder.mkdir(parents=True, exist_ok=True)
(folder / "meta.json").write_text("{}")
(folder / "weights.safetensors").write_bytes(b"0")
(pathlib.Path(reports_dir) / f"{report_name}.json").write_text(json.dumps(
    {"x": x, "toy_artifact": digest, "omp_threads": os.environ.get("OMP_NUM_THREADS"), "pid": os.getpid()}))
'''


@pytest.fixture
def toy(tmp_path):
    """A notebooks folder with two toy notebooks, and a grid over them."""
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    (nbs / "toy.py").write_text(TOY)
    (nbs / "toy_b.py").write_text(TOY)
    grid_file = tmp_path / "toy.yaml"
    grid_file.write_text(textwrap.dedent("""\
        name: toy
        notebooks: [toy, toy_b]
        axes:
          x: [1, 2, 3]
        overrides:
          - when: {x: 2}
            set: {fail: true}
        """))
    return nbs, G.load_grid(grid_file), tmp_path


def calls(artifacts: Path) -> list[str]:
    log = artifacts / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def write_grid(tmp_path, text: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_names_runs_and_applies_overrides(tmp_path):
    grid = G.load_grid(write_grid(tmp_path, """\
        notebooks: [01_inject]
        parameters: {epochs: 2}
        axes: {dataset: [fashion_mnist, mnist_5k], attack: [badnets, imc], seed: [0, 1]}
        overrides:
          - when: {dataset: mnist_5k}
            set: {epochs: 8, train_subset: null}
        """))
    runs, declared = G.validate(grid)
    assert grid.name == "g" and len(runs) == 8
    assert runs[0].run_id == "fashion_mnist-badnets-seed0" and runs[-1].run_id == "mnist_5k-imc-seed1"
    assert runs[0].parameters == {"epochs": 2, "dataset": "fashion_mnist", "attack": "badnets", "seed": 0}
    assert runs[-1].parameters["epochs"] == 8 and runs[-1].parameters["train_subset"] is None
    assert set(runs[0].own("01_inject", declared)) == {"epochs", "dataset", "attack", "seed"}


def test_variants_are_named_runs_crossed_with_the_axes(tmp_path):
    grid = G.load_grid(write_grid(tmp_path, """\
        notebooks: [01_inject]
        parameters: {epochs: 2}
        axes: {seed: [0, 1]}
        variants:
          - {name: corner, set: {attack: badnets}}
          - {name: all_to_all, set: {attack: badnets, target_label: null, attack_options: {mode: all_to_all}}}
        overrides:
          - when: {target_label: null}
            set: {epochs: 3}
        """))
    runs, _ = G.validate(grid)
    assert [r.run_id for r in runs] == ["corner-seed0", "corner-seed1", "all_to_all-seed0", "all_to_all-seed1"]
    assert runs[2].axes == {"variant": "all_to_all", "seed": 0} and "variant" not in runs[2].parameters
    assert runs[2].parameters["attack_options"] == {"mode": "all_to_all"} and runs[2].parameters["epochs"] == 3
    assert runs[0].parameters["epochs"] == 2 and grid.axis_names == ["variant", "seed"]


@pytest.mark.parametrize("body, message", [
    ("notebooks: [01_inject, 09_nope]\naxes: {seed: [0]}\n", "unknown notebook"),
    ("notebooks: [01_inject]\naxes: {sed: [0]}\n", "unknown parameter(s) ['sed']"),
    ("notebooks: [01_inject]\nparameters: {epochs: four}\n", "epochs='four'"),
    ("notebooks: [01_inject]\naxes: {dataset: [fashion_mnist, cifar11]}\n", "unknown dataset 'cifar11'"),
    ("notebooks: [01_inject]\naxes: {attack: [badnets, wanet2]}\n", "unknown attack 'wanet2'"),
    ("notebooks: [01_inject]\nparameters: {trigger_size: 40}\n", "larger than the 28×28 image"),
    ("notebooks: [01_inject]\naxes: {dataset: [[fashion_mnist]]}\n", "should be like its default"),
    ("notebooks: [02_recover_triggers]\nparameters: {eps: [0.5, x]}\n", "should be like its default"),
    ("notebooks: [01_inject]\nparameters: {trigger_position: [1, 2, 3]}\n", "trigger_position"),
    ("notebooks: [01_inject]\nparameters: {device: gpu9}\n", "unknown device 'gpu9'"),
    ("notebooks: [01_inject]\nparameters: {precision: bf61}\n", "unknown precision 'bf61'"),
    ("notebooks: [01_inject]\naxes: {layout: [auto, nhwc]}\n", "unknown memory layout 'nhwc'"),
    ("notebooks: [03_unlearn]\nparameters: {precision: fp16}\n", "unknown precision 'fp16'"),
    ("notebooks: [../notebooks/01_inject]\n", "notebook names are file stems"),
    ("notebooks: [01_inject]\naxes: {attack: [badnets]}\noverrides: [{when: {seed: 0}, set: {attack: imc}}]\n",
     "which is an axis"),
    ("notebooks: [01_inject]\nparameters: {poison_rate: 1.5}\n", "poison_rate"),
    ("notebooks: [03_unlearn]\nparameters: {unlearn_loss: hinge}\n", "unknown unlearning loss 'hinge'"),
    ("notebooks: [02_recover_triggers]\nparameters: {trigger_form: patch}\naxes: {patch_size: [3, 40]}\n",
     "run patch_size40"),
    ("notebooks: [02_recover_triggers]\nparameters: {trigger_form: blob}\n", "unknown trigger form"),
    ("notebooks: [01_inject]\nparameters: {report_name: x}\n", "set by the runner"),
    ("notebooks: [01_inject]\nparameters: {artifacts_dir: /tmp}\n", "set by the sweep command"),
    ("notebooks: [01_inject]\naxes: {seed: []}\n", "non-empty list"),
    ("notebooks: [01_inject]\ngrids: {}\n", "unknown key"),
    ("notebooks: 01_inject\n", "non-empty list of notebook names"),
    ("notebooks: [01_inject]\naxes: {seed: [0]}\nvariants: [{name: a, set: {seed: 1}}]\n", "which is an axis"),
    ("notebooks: [01_inject]\nvariants: [{name: a, set: {}}, {name: a, set: {}}]\n", "variant names must differ"),
    ("notebooks: [01_inject]\nvariants: [{name: a/b, set: {}}]\n", "variant name 'a/b' must be a plain"),
    ("notebooks: [01_inject]\nvariants: [{name: a, set: {target_label: null}}]\n", "only mode all_to_all"),
    ("notebooks: [01_inject]\nvariants: [{name: a, set: {attack: wanet, attack_options: {k: 1}}}]\n", "k must be"),
    ("notebooks: [01_inject, 04_ablations]\nparameters: {attack: sig}\n", "not such an attack"),
    ("notebooks: [01_inject\n", "not valid YAML"),
])
def test_bad_grids_fail_before_anything_runs(tmp_path, body, message):
    out = tmp_path / "reports"
    with pytest.raises(ConfigError) as err:
        S.sweep(G.load_grid(write_grid(tmp_path, body)), out, tmp_path / "artifacts")
    assert message in str(err.value)
    assert not out.exists() and not (tmp_path / "artifacts").exists()


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    assert S.main([str(tmp_path / "missing.yaml")]) == 2
    assert "grid file" in capsys.readouterr().err


def test_unwritable_artifacts_root_fails_before_any_run(toy):
    nbs, grid, tmp = toy
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="artifacts root .* is not writable"):
        S.sweep(grid, tmp / "reports", blocker / "artifacts", notebooks_dir=nbs)
    assert not list((tmp / "reports" / "toy").glob("*/run.json"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_before_any_run(toy):
    nbs, grid, tmp = toy
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        S.sweep(grid, tmp / "reports", tmp / "artifacts", notebooks_dir=nbs,
                scheduler=f"tcp://127.0.0.1:{free_port()}", scheduler_timeout=2.0)
    with pytest.raises(ConfigError, match="tcp://host"):
        S.sweep(grid, tmp / "reports", tmp / "artifacts", notebooks_dir=nbs, scheduler="127.0.0.1:8786")
    assert calls(tmp / "artifacts") == [] and not list((tmp / "reports").glob("toy/*/run.json"))


def _listener(reply: bytes | None) -> tuple[socket.socket, int]:
    """A TCP peer that is not Dask: it accepts, then says `reply` (or nothing) and keeps the line open."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    held = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.mark.parametrize("reply, message", [
    (None, "no Dask answer within 1 s"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "does not speak Dask's protocol"),
])
def test_a_peer_that_is_not_dask_fails_within_the_timeout_and_creates_nothing(toy, reply, message):
    nbs, grid, tmp = toy
    srv, port = _listener(reply)
    try:
        with pytest.raises(ConfigError, match=message):
            S.sweep(grid, tmp / "fresh-reports", tmp / "fresh-artifacts", notebooks_dir=nbs,
                    scheduler=f"tcp://127.0.0.1:{port}", scheduler_timeout=1.0)
    finally:
        srv.close()
    assert not (tmp / "fresh-reports").exists() and not (tmp / "fresh-artifacts").exists()


def test_cores_are_respected():
    with pytest.raises(ConfigError, match="exceeds"):
        S.local_slots(2, 10_000)
    assert S.local_slots(None, None) == (1, S.cores())  # one run at a time, every core it may use
    assert S.local_slots(S.cores(), None) == (S.cores(), 1)


def test_overrides_match_notebook_defaults_and_run_names_stay_inside(tmp_path):
    grid = G.load_grid(write_grid(tmp_path, """\
        notebooks: [01_inject]
        axes: {attack: [badnets, imc]}
        overrides:
          - when: {epochs: 4, attack: imc}
            set: {poison_rate: 0.1}
        """))
    runs, _ = G.validate(grid)
    assert [r.parameters.get("poison_rate") for r in runs] == [None, 0.1]  # epochs 4 is 01's default
    assert G.run_id({"a": ".."}) == "_" and not G.run_id({"a": ".hidden"}).startswith(".")


def test_a_dask_scheduler_without_workers_or_with_blind_workers_is_refused(toy):
    from distributed import LocalCluster

    nbs, grid, tmp = toy
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(ConfigError, match="has no workers"):
            S.sweep(grid, tmp / "reports", tmp / "artifacts", notebooks_dir=nbs,
                    scheduler=cluster.scheduler_address, scheduler_timeout=1.0)
    assert "no notebooks folder" in S._worker_check(str(tmp / "nowhere"), str(tmp / "a"), str(tmp / "r"))
    assert S._worker_check(str(nbs), str(tmp / "a"), str(tmp / "r")) is None


def test_local_sweep_continues_past_a_failure_then_skips_complete_runs(toy):
    nbs, grid, tmp = toy
    out, art = tmp / "reports", tmp / "artifacts"
    records = S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    failed = records[1]
    assert [s["status"] for s in failed["steps"]] == ["failed", "not run"]
    assert "toy failure at x=2" in failed["steps"][0]["error"]
    run_dir = out / "toy" / "x2"
    assert (run_dir / "failed" / "toy.html").exists() and not (run_dir / "toy.json").exists()
    for ext in (".json", ".html", ".ipynb"):
        assert (out / "toy" / "x1" / f"toy_b{ext}").exists()
    index = (out / "toy" / "index.html").read_text()
    assert 'href="x2/failed/toy.html"' in index and "toy failure at x=2 &lt;script&gt;" in index and "<script>" not in index
    doc = json.loads((out / "toy" / "grid.json").read_text())
    assert [r["status"] for r in doc["rows"]] == ["ok", "failed", "ok"]
    assert doc["rows"][1]["link"] == "x2/failed/toy.html"
    assert len(calls(art)) == 5  # x1: 2 notebooks, x2: the failing one only, x3: 2

    again = S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert [r.get("skipped", False) for r in again] == [True, False, True]
    assert calls(art)[5:] == ["toy x=2"]  # only the failed run ran again

    # a run whose cached artifact vanished is not complete any more
    digest = json.loads((out / "toy" / "x3" / "toy.json").read_text())["toy_artifact"]
    (art / "toys" / digest / "weights.safetensors").unlink()
    S.sweep(grid, out, art, notebooks_dir=nbs, only=["x3"], log=lambda *_: None)
    assert calls(art)[6:] == ["toy x=3", "toy_b x=3"]
    assert len(json.loads((out / "toy" / "grid.json").read_text())["rows"]) == 3  # --only keeps the others' rows
    # prose edits keep runs complete; code edits do not
    (nbs / "toy_b.py").write_text(TOY.replace("# A toy notebook", "# A toy notebook, reworded"))
    S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert calls(art)[8:] == ["toy x=2"]  # the failed run only
    (nbs / "toy_b.py").write_text(TOY + "\nprint('one more line')\n")
    S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert calls(art)[9:] == ["toy x=1", "toy_b x=1", "toy x=2", "toy x=3", "toy_b x=3"]
    # nor is one whose parameters changed (spelling out a default changes nothing)
    grid.overrides.clear()
    grid.parameters["fail"] = False
    S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert calls(art)[14:] == ["toy x=2", "toy_b x=2"]  # x2 no longer fails; x1 and x3 are as they were
    grid.parameters["seed"] = 1
    S.sweep(grid, out, art, notebooks_dir=nbs, log=lambda *_: None)
    assert sorted(calls(art)[16:]) == sorted(["toy x=1", "toy_b x=1", "toy x=2", "toy_b x=2", "toy x=3", "toy_b x=3"])


def test_process_pool_runs_tasks_in_parallel_workers(toy):
    nbs, grid, tmp = toy
    grid.overrides.clear()
    records = S.sweep(grid, tmp / "reports", tmp / "artifacts", notebooks_dir=nbs, workers=2, threads=1,
                      log=lambda *_: None)
    assert [r["status"] for r in records] == ["ok"] * 3
    for r in records:  # the thread limit reached each kernel
        assert json.loads((tmp / "reports" / "toy" / r["run_id"] / "toy.json").read_text())["omp_threads"] == "1"


def test_real_notebooks_grid_through_a_dask_local_cluster(fashion_root, tmp_path):
    """A real LocalCluster runs a tiny grid of the real notebooks: Fashion-MNIST (tiny IDX files)
    finishes with every defense's figures; CIFAR-10 has no files under the data root, so its run
    fails in notebook 01 with a clear message, the grid goes on, and the index links the failure."""
    from distributed import LocalCluster

    params = {k: v for k, v in smoke_params(fashion_root, tmp_path).items()
              if k not in ("data_root", "artifacts_dir")}
    grid_file = tmp_path / "tiny.yaml"
    grid_file.write_text(json.dumps({"name": "tiny", "notebooks": ["01_inject", "02_recover_triggers", "03_unlearn"],
                                     "parameters": params, "axes": {"dataset": ["fashion_mnist", "cifar10"]}}))
    grid = G.load_grid(grid_file)
    out, art = tmp_path / "reports", tmp_path / "artifacts"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        records = S.sweep(grid, out, art, fashion_root, scheduler=cluster.scheduler_address, log=lambda *_: None)
        assert [r["status"] for r in records] == ["ok", "failed"], records
        assert records[0]["host"] and records[0]["commit"] and records[1]["failed_notebook"] == "01_inject"
        assert "cifar10 (train split) not found" in records[1]["steps"][0]["error"]
        doc = json.loads((out / "tiny" / "grid.json").read_text())
        row, bad = doc["rows"]
        assert set(row["defenses"]) == {"baeraser", "finetune", "fineprune", "nad", "nc", "ibau", "sau", "anp"}
        assert row["not_run"] == [] and "baeraser_der_ge_best_peer" in row
        for d in row["defenses"].values():
            assert 0 <= d["asr"] <= 1 and 0 <= d["clean_acc"] <= 1 and 0 <= d["der"] <= 1
        assert bad["link"] == "cifar10/failed/01_inject.html" and (out / "tiny" / bad["link"]).exists()
        fashion = doc["summary"]["datasets"]["fashion_mnist"]
        assert fashion["ran"] and fashion["sizes"] == [{"n_train": 400, "n_holding": 100, "n_evaluation": 100}]
        assert fashion["data_roots"] == [str(fashion_root.resolve())]  # the test's tiny files, as they are
        assert not doc["summary"]["datasets"]["cifar10"]["ran"]
        assert (out / "tiny" / "figures" / "der.png").exists()
        index = (out / "tiny" / "index.html").read_text()
        assert "fashion_mnist" in index and 'href="cifar10/failed/01_inject.html"' in index and "figures/der.png" in index
        stamp = (out / "tiny" / "fashion_mnist" / "run.json").stat().st_mtime_ns
        again = S.sweep(grid, out, art, fashion_root, scheduler=cluster.scheduler_address, log=lambda *_: None)
        assert again[0].get("skipped") and not again[1].get("skipped")
        assert (out / "tiny" / "fashion_mnist" / "run.json").stat().st_mtime_ns == stamp


def fake_run(grid_dir: Path, run_id: str, dataset: str, before: tuple, after: dict, report: dict | None = None,
             retuned: dict | None = None) -> dict:
    """A finished run's record and its 03 report, with chosen figures (`report`: more keys of it;
    `retuned`: each model's ASR after the reactivation check, "clean reference" included)."""
    from baeraser_lib.metrics import der

    (grid_dir / run_id).mkdir(parents=True)
    methods = {"none": {"clean_acc": before[0], "asr": before[1], "der": 0.5}}
    for k, (acc, asr) in after.items():
        methods[k] = {"clean_acc": acc, "asr": asr, "der": der(before[0], acc, before[1], asr)}
    for k, v in (retuned or {}).items():
        if k in methods:
            methods[k]["reactivated_asr"] = v
    reactivation = {"models": {k: {"asr_after": v} for k, v in retuned.items()}} if retuned else None
    (grid_dir / run_id / "03_unlearn.json").write_text(json.dumps({"methods": methods, "reactivation": reactivation,
                                                                   **(report or {})}))
    return {"run_id": run_id, "axes": {"dataset": dataset}, "parameters": {"dataset": dataset, "attack": "badnets"},
            "status": "ok", "steps": [], "seconds": 1.0}


def test_grid_summary_means_and_row_verdicts(tmp_path):
    good = {"baeraser": (0.90, 0.01), "finetune": (0.91, 0.90), "fineprune": (0.85, 0.30), "nad": (0.88, 0.05)}
    worse = {"baeraser": (0.80, 0.00), "finetune": (0.91, 0.90), "fineprune": (0.90, 0.02), "nad": (0.88, 0.50)}
    records = [fake_run(tmp_path, "a", "fashion_mnist", (0.92, 1.0), good),
               fake_run(tmp_path, "b", "mnist_5k", (0.92, 0.5), worse),
               {"run_id": "c", "axes": {"dataset": "cifar10"}, "parameters": {"dataset": "cifar10"},
                "status": "failed", "steps": [{"notebook": "01_inject", "status": "failed", "error": "no files"}]}]
    rows = GR.grid_rows(tmp_path, records)
    s = GR.summarise(rows)["defenses"]["baeraser"]
    assert s["rows"] == 2
    assert s["mean_asr_reduction"] == pytest.approx(((1.0 - 0.01) / 1.0 + (0.5 - 0.0) / 0.5) / 2)
    assert s["mean_acc_drop_points"] == pytest.approx((2.0 + 12.0) / 2)
    assert [r.get("baeraser_der_ge_best_baseline") for r in rows] == [True, False, None]
    summary = GR.summarise(rows)
    assert not summary["targets"]["baeraser_der_ge_best_baseline"]["met"]
    assert summary["targets"]["baeraser_der_ge_best_baseline"]["measured"] == "1 of 2 rows"
    assert summary["datasets"]["cifar10"] == {"source": GR.data_source("cifar10"), "runs_ok": 0, "runs_failed": 1,
                                              "why_not": ["no files"], "ran": False, "sizes": [], "data_roots": []}


def test_grid_holds_issue_18s_bars_per_row_and_its_table():
    """Re-tuned ASR against the reference + 0.10, and BAERASER's kept bars (ASR, points lost, cost
    ratio) per row, counted in the summary and written out as the README's table."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        peers = {"baeraser": (0.91, 0.01), "finetune": (0.91, 0.90), "nc": (0.90, 0.02)}
        records = [fake_run(d, "kept", "fashion_mnist", (0.92, 1.0), peers, {"cost_ratio": 0.2},
                            {"none": 0.99, "baeraser": 0.10, "nc": 0.97, "clean reference": 0.05}),
                   fake_run(d, "missed", "fashion_mnist", (0.95, 1.0), peers, {"cost_ratio": float("nan")},
                            {"none": 0.99, "baeraser": 0.30, "nc": 0.97, "clean reference": 0.05}),
                   fake_run(d, "unchecked", "fashion_mnist", (0.92, 1.0), peers)]
        rows = GR.grid_rows(d, records)
        assert [r.get("baeraser_stays_erased") for r in rows] == [True, False, None]
        assert rows[0]["baeraser_kept_bars"] == {"asr": True, "acc_drop_points": True, "cost_ratio": True}
        assert rows[1]["baeraser_kept_bars"] == {"asr": True, "acc_drop_points": False, "cost_ratio": None}
        t = GR.summarise(rows)["targets"]
        assert t["baeraser_stays_erased"]["measured"] == "1 of 2 rows checked (1 not checked)"
        assert not t["baeraser_stays_erased"]["met"]
        assert t["baeraser_asr_every_row"] == {"target": "<= 0.02 on every row", "measured": "3 of 3 rows", "met": True}
        assert t["baeraser_acc_drop_points_every_row"]["measured"] == "2 of 3 rows"
        assert t["baeraser_cost_ratio_every_row"] == {"target": "<= 0.25 on every row",
                                                      "measured": "1 of 1 rows (2 unknown)", "met": False}
        head, body = GR.erasure_cells(rows)
        assert len(body) == 2 and [c[0] for c in body] == [r["label"] for r in rows[:2]]  # not the unchecked row
        col = {h: i for i, h in enumerate(head)}
        assert body[1][col["re-tuned: never backdoored"]] == "0.0500" and body[1][col["BAERASER"]] == "0.3000"
        assert body[1][col["Neural Cleanse"]] == "0.9700" and body[1][col["fine-tuning"]] == ""
        assert "fine-pruning" not in col  # a defense no row ran gets no column
        assert body[1][-1] == "MISSED" and body[0][-1] == "met" and body[1][col["cost ratio (≤ 0.25)"]] == ""
        assert body[1][col["points lost (≤ 2)"]] == "4.00 MISSED"
        (d / "grid.json").write_text(json.dumps({"rows": rows, "summary": GR.summarise(rows)}))
        verdicts = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
                    for line in GR.targets_markdown(d).splitlines()[2:]}
        erased = verdicts[GR.TARGET_LABELS["baeraser_stays_erased"]]
        assert erased[1:] == ["1 of 2 rows checked (1 not checked)", "**no**", "missed |"]
        assert verdicts[GR.TARGET_LABELS["baeraser_asr_every_row"]][1:] == ["3 of 3 rows", "yes", " |"]
        assert verdicts[GR.TARGET_LABELS["baeraser_acc_drop_points_every_row"]][-1] == "missed |"


def test_runs_markdown_says_when_and_at_which_commit_each_row_ran(tmp_path):
    import json

    from baeraser_lib.lab.grid_report import runs_markdown

    rows = [{"label": "a", "finished_at": "2026-12-07T01:02:03+00:00", "commit": "0123456789abcdef", "status": "ok"},
            {"label": "b", "finished_at": None, "commit": None, "status": "failed"}]
    (tmp_path / "grid.json").write_text(json.dumps({"rows": rows}))
    lines = runs_markdown(tmp_path).splitlines()
    assert lines[2] == "| a | 2026-12-07 01:02 | 0123456789 | ok |"
    assert lines[3] == "| b | not recorded | not recorded | failed |"


def test_grid_rows_carry_what_detection_flagged_and_the_readme_table_names_the_misses(tmp_path):
    """Each row keeps notebook 02's verdict beside notebook 01's target: found, missed (judged
    clean, or a wrong label unlearned), and all-to-all, where no single target exists."""
    peers = {"baeraser": (0.91, 0.01)}
    cases = {"found": ({"labels_kept": [0, 8], "target_label_found": True, "target_anomaly_index": 3.2,
                        "target_mask_rank": 1}, 0),
             "clean": ({"labels_kept": [], "target_label_found": False, "target_anomaly_index": 1.49,
                        "target_mask_rank": 2}, 0),
             "wrong": ({"labels_kept": [8], "target_label_found": False, "target_anomaly_index": 1.5,
                        "target_mask_rank": 3}, 0),
             "all": ({"labels_kept": [8, 9], "target_label_found": None, "target_anomaly_index": None,
                      "target_mask_rank": None}, None)}
    records = []
    for name, (recovery, target) in cases.items():
        records.append(fake_run(tmp_path, name, "fashion_mnist", (0.92, 1.0), peers) | {"axes": {"variant": name}})
        (tmp_path / name / "02_recover_triggers.json").write_text(json.dumps(recovery))
        (tmp_path / name / "01_inject.json").write_text(json.dumps({"target_label": target}))
    records.append(fake_run(tmp_path, "none", "fashion_mnist", (0.92, 1.0), peers) | {"axes": {"variant": "none"}})
    rows = GR.grid_rows(tmp_path, records)
    d = {r["run_id"]: r.get("detection") for r in rows}
    assert d["none"] is None
    assert d["found"] == {"target_label": 0, "labels_unlearned": [0, 8], "target_found": True,
                          "target_anomaly_index": 3.2, "target_mask_rank": 1, "judged_clean": False}
    assert d["clean"]["judged_clean"] and d["wrong"]["judged_clean"] is False
    (tmp_path / "grid.json").write_text(json.dumps({"rows": rows}))
    lines = {line.split(" | ")[0].lstrip("| "): line for line in GR.detection_markdown(tmp_path).splitlines()[2:]}
    assert lines["found"] == "| found | 0 | 0, 8 | yes | 3.20 | 1 |"
    assert lines["clean"] == "| clean | 0 | none (judged clean) | **no** | 1.49 | 2 |"
    assert lines["wrong"] == "| wrong | 0 | 8 | **no** | 1.50 | 3 |"
    assert lines["all"] == "| all | every label (all-to-all) | 8, 9 | n/a | n/a | n/a |"
    assert lines["none"].startswith("| none | no recovery report |")


def test_a_kernel_that_fails_to_start_is_started_again_and_a_failing_cell_is_not(toy, monkeypatch):
    """The port race of kernels started side by side (`ZMQError: Address already in use`) fails a
    run before any cell ran: the runner starts it again. A run that failed inside a cell is never
    repeated (its cells may have side effects)."""
    import errno

    import papermill as pm
    import zmq

    from baeraser_lib.lab import runner as R

    nbs, _, tmp = toy
    real, tries = pm.execute_notebook, []

    def flaky(*args, **kwargs):
        tries.append(1)
        if len(tries) == 1:
            raise zmq.error.ZMQError(errno.EADDRINUSE)
        return real(*args, **kwargs)

    monkeypatch.setattr(pm, "execute_notebook", flaky)
    art = tmp / "artifacts"
    art.mkdir()
    row = R.run_notebook("toy", {"x": 5, "artifacts_dir": str(art)}, tmp / "out", notebooks_dir=nbs, progress=False)
    assert (row["status"], row["attempts"], len(tries)) == ("ok", 2, 2)
    assert calls(art) == ["toy x=5"] and json.loads((tmp / "out" / "toy.json").read_text())["x"] == 5

    row = R.run_notebook("toy", {"x": 6, "fail": True, "artifacts_dir": str(art)}, tmp / "out", notebooks_dir=nbs,
                         progress=False)
    assert (row["status"], row["attempts"]) == ("failed", 1) and "toy failure at x=6" in row["error"]
    assert calls(art) == ["toy x=5", "toy x=6"]

    def never(*args, **kwargs):
        tries.append(1)
        raise zmq.error.ZMQError(errno.EADDRINUSE)

    monkeypatch.setattr(pm, "execute_notebook", never)
    tries.clear()
    row = R.run_notebook("toy", {"x": 7, "artifacts_dir": str(art)}, tmp / "out", notebooks_dir=nbs, progress=False)
    assert (row["status"], row["attempts"], len(tries)) == ("failed", R.KERNEL_START_TRIES, R.KERNEL_START_TRIES)
    assert "Address already in use" in row["error"]
    assert json.loads((tmp / "out" / "toy.json").read_text())["x"] == 5  # the last good report stays
