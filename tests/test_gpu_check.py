"""benchmarks/gpu_check.sh: its CPU dry run is the whole GPU-path pipeline at smoke size."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def gpu_check(*args, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}  # the installed environment: no set-up step
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)


def test_the_dry_run_runs_every_stage_and_writes_one_folder(fashion_root, tmp_path):
    out = tmp_path / "gpu"
    done = gpu_check("--dry-run", "--out", str(out), "--artifacts", str(tmp_path / "artifacts"),
                     "--data-root", str(fashion_root), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["dry_run"] is True and record["device_type"] == "cpu" and len(record["commit"]) >= 7
    assert record["stages"]["tests"]["status"] == "skipped"  # it runs inside the test suite
    for stage in ("notebooks", "recovery_k100", "throughput"):
        assert record["stages"][stage]["status"] == "ok", record["stages"][stage]
    nb = record["figures"]["notebooks"]
    assert nb["params"]["width"] == 4 and nb["params"]["device"] == "cpu"
    assert {"baeraser", "finetune", "fineprune", "nad", "nc", "ibau", "sau", "anp"} <= set(nb["methods"])
    assert 0 <= nb["victim_clean_acc"] <= 1 and nb["victim_train_seconds"] > 0
    assert (out / "notebooks" / "03_unlearn.html").is_file() and (out / "log.txt").read_text()
    k100 = record["figures"]["recovery_k100"]
    assert k100["seconds"] > 0 and 0 <= k100["labels_through_staircase"] <= 100
    rates = record["figures"]["throughput"]["train_images_per_second"]
    assert set(rates) == {"fp32 contiguous", "fp32 channels_last", "bf16 contiguous", "bf16 channels_last"}
    assert all(v > 0 for v in rates.values()) and record["figures"]["throughput"]["cpu_train_images_per_second"] > 0
    assert record["figures"]["throughput"]["unlearning_seconds"] == nb["methods"]["baeraser"]["seconds"]
    bars = record["bars"]
    assert bars["baeraser_asr"]["measured"] == nb["methods"]["baeraser"]["asr"] and bars["baeraser_asr"]["bar"] == 0.01
    assert bars["minutes"]["met"] == (record["minutes"] <= 8)
    assert not list(tmp_path.glob(".gpu.tmp*")), "the staging folder is moved into place"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_fails_in_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "gpu"
    done = gpu_check("--device", "cuda", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode != 0
    assert "--device cuda" in done.stderr and "no CUDA GPU" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_reports_gpu_holds_only_a_run_on_a_gpu():
    """Until a GPU has run the check, reports/gpu/ is absent (and the README says the path is
    untested); once there, it is a real CUDA run, never a dry run."""
    record = REPO / "reports" / "gpu" / "gpu_check.json"
    readme = (REPO / "README.md").read_text()
    if not record.parent.exists():
        assert "No GPU has run this code yet" in readme
        return
    doc = json.loads(record.read_text())
    assert doc["device_type"] == "cuda" and doc["dry_run"] is False and doc["device"] and doc["date"]
