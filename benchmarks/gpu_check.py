"""The GPU path in one prepared check: the paper's scale on whatever accelerator is at hand.

    bash benchmarks/gpu_check.sh                  # on a GPU machine: set-up, then every stage
    bash benchmarks/gpu_check.sh --dry-run        # the whole pipeline at smoke size on the CPU (a test)

Stages, each timed, each failure recorded and the next stage still run:
1. `tests`: the fast tests (the notebook, sweep and widget suites left out), on the device that
   `auto` picks (CUDA there). Skipped in the dry run, which itself runs inside the test suite.
2. `notebooks`: 01 → 03 at the paper's scale on Fashion-MNIST: ResNet-18 width 64, BadNets 3×3,
   5% poison, 6 epochs; every defense at its defaults, the baselines and the peers included.
3. `recovery_k100`: trigger recovery for K = 100 labels on 32×32×3 inputs (a random-weight
   ResNet-18 of width 16 and 2,500 images, as benchmarks/recovery_speed.py does on the CPU).
4. `throughput`: training images/s of one code path, `train.fit`, on the device with bf16
   autocast and channels-last each on and off, and on the CPU beside it; the notebooks'
   recovery and unlearning seconds.

Everything goes to one folder (`--out`, default reports/gpu, which only GPU runs write): gpu_check.json (figures, bars,
device name, date, commit), log.txt, and the notebooks' HTML and JSON. Weights go to the
artifacts root (`--artifacts`), not to that folder. Figures, not assertions: the bars are
computed and written, and the exit status is non-zero only when a stage failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The paper's scale (the GPU-path issue) and the smoke size that checks the same pipeline on a CPU.
FULL = {"width": 64, "epochs": 6, "batch_size": 128, "lr": 0.05, "train_subset": None}
SMOKE = {"width": 4, "epochs": 2, "batch_size": 32, "lr": 0.1, "train_subset": None, "poison_rate": 0.2,
         "holding_ratio": 0.25, "steps_per_stage": 10, "grid_size": 3, "mask_steps": 40, "unlearn_epochs": 2,
         "finetune_epochs": 1, "nad_epochs": 1, "ibau_rounds": 1, "sau_epochs": 1, "anp_iterations": 5,
         "reactivation_images": 100, "reactivation_poisoned": 5, "reactivation_epochs": 1}
K100 = {"full": {"images": 2500, "width": 16, "recovery": {}},
        "smoke": {"images": 200, "width": 4, "recovery": {"steps_per_stage": 2, "mask_steps": 4, "grid_size": 2}}}
THROUGHPUT = {"full": {"images": 8192, "cpu_images": 512, "width": 64, "batch_size": 128},
              "smoke": {"images": 128, "cpu_images": 64, "width": 4, "batch_size": 32}}
FAST_TESTS = ["-q", "-x", "-p", "no:cacheprovider", "--ignore=tests/test_notebooks.py", "--ignore=tests/test_sweep.py",
              "--ignore=tests/test_widgets.py", "--ignore=tests/test_gpu_check.py", "--ignore=tests/test_offline_reports.py"]
BARS = {"minutes": 8.0, "victim_clean_acc": 0.93, "victim_asr": 0.97, "baeraser_asr": 0.01,
        "baeraser_acc_lost_points": 1.5, "defense_share_of_training": 0.10}


class Log:
    """Lines to stdout and to log.txt, flushed at once (a run killed at its limit keeps them)."""

    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="every stage at smoke size, on the CPU")
    ap.add_argument("--device", default=None, help="cuda (default), cuda:N, or cpu; the dry run uses cpu")
    ap.add_argument("--out", default=None, help="the one folder everything is written to (default reports/gpu; "
                                                "for a dry run artifacts/gpu-check/dry-run: reports/gpu holds GPU runs only)")
    ap.add_argument("--artifacts", default=str(REPO / "artifacts" / "gpu-check"), help="where weights go")
    ap.add_argument("--data-root", default=str(REPO / "data"))
    ap.add_argument("--stages", nargs="+", default=["tests", "notebooks", "recovery_k100", "throughput"],
                    choices=["tests", "notebooks", "recovery_k100", "throughput"])
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.out = args.out or str(REPO / "artifacts" / "gpu-check" / "dry-run" if args.dry_run else REPO / "reports" / "gpu")
    return args


def check_inputs(args) -> "torch.device":
    """Every refusal before any compute: the device (a clear line, not a torch traceback) and the
    output folder."""
    from baeraser_lib.errors import ConfigError
    from baeraser_lib.train import pick_device

    try:
        device = pick_device(args.device)
    except ConfigError as err:
        raise SystemExit(f"gpu_check: --device {args.device}: {err}") from None
    if args.dry_run and device.type != "cpu":
        raise SystemExit("gpu_check: --dry-run runs on the CPU; leave --device out")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"gpu_check: --out {out} is a file")
    return device


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def stage_tests(args, device, log) -> dict:
    cmd = [sys.executable, "-m", "pytest", *FAST_TESTS]
    log("tests: " + " ".join(cmd[1:]) + f" (device auto: {device.type} here)")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-1:] or [""]
    (Path(args.out) / "tests.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"pytest exited {done.returncode}: {tail[0]} (tests.txt)")
    return {"summary": tail[0]}


def notebook_params(args, device) -> dict:
    scale = SMOKE if args.dry_run else FULL
    return {**scale, "dataset": "fashion_mnist", "model": "resnet18", "attack": "badnets", "trigger_size": 3,
            "seed": 0, "device": str(device), "data_root": str(Path(args.data_root).resolve()),
            "download": False, "artifacts_dir": str(Path(args.artifacts).resolve())}


def stage_notebooks(args, device, log) -> dict:
    from baeraser_lib.lab import runner as R

    out = Path(args.out) / "notebooks"
    params = notebook_params(args, device)
    log(f"notebooks 01 → 03: width {params['width']}, {params['epochs']} epochs on {device}")
    results = R.run(["01_inject", "02_recover_triggers", "03_unlearn"], params, out, progress=False)
    bad = [f"{r['notebook']}: {r['error']}" for r in results if r["status"] != "ok"]
    if bad:
        raise RuntimeError("; ".join(bad))
    inject = json.loads((out / "01_inject.json").read_text())
    recovery = json.loads((out / "02_recover_triggers.json").read_text())
    unlearn = json.loads((out / "03_unlearn.json").read_text())
    methods = unlearn["methods"]
    before = methods["none"]
    return {
        "params": params,
        "victim_clean_acc": inject["clean_acc"], "victim_asr": inject["asr"],
        "victim_train_seconds": inject["train_seconds"],
        "recovery_seconds": recovery["seconds_recovery"], "target_label_found": recovery["target_label_found"],
        "methods": {name: {"clean_acc": row["clean_acc"], "asr": row["asr"], "der": row["der"],
                           "seconds": row["seconds"], "acc_lost_points": 100 * (before["clean_acc"] - row["clean_acc"])}
                    for name, row in methods.items()},
    }


def stage_recovery_k100(args, device, log) -> dict:
    import torch

    from baeraser_lib.defenses.recovery import RecoveryConfig
    from recovery_speed import k100  # benchmarks/ is this script's folder: the CPU benchmark's own routine

    size = K100["smoke" if args.dry_run else "full"]
    log(f"recovery K=100 on 32×32×3, {size['images']} images, width {size['width']}, on {device}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {**k100(size["images"], size["width"], RecoveryConfig(**size["recovery"]), device), "images": size["images"],
           "width": size["width"]}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out


def images_per_second(device, precision: str, layout: str, n: int, width: int, batch_size: int) -> float:
    """Training img/s of `train.fit` for one epoch on `n` Fashion-MNIST-shaped images (fit's own
    epoch seconds), after a one-batch warm-up (kernel selection and allocation are not throughput)."""
    import torch
    from torch.utils.data import TensorDataset

    from baeraser_lib.config import TrainConfig
    from baeraser_lib.models import build_model
    from baeraser_lib.train import fit

    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    warm = TensorDataset(*(t[:batch_size] for t in data.tensors))
    model = build_model("resnet18", 10, 1, width)
    cfg = TrainConfig(width=width, epochs=1, batch_size=batch_size, schedule="constant")  # throughput, not learning
    fit(model, warm, cfg, device=device, progress=False, precision=precision, layout=layout)
    # fit's epoch seconds: its loop reads each step's loss, so the GPU's queue is drained when it ends
    seconds = fit(model, data, cfg, device=device, progress=False, precision=precision, layout=layout)[0]["seconds"]
    return n / seconds


def committed_cpu_figures() -> dict | None:
    """The same notebooks' seconds on the CPU, from the committed main reports (their width and
    machine, not this one's): what the GPU's seconds stand beside."""
    try:
        inject, recovery, unlearn = (json.loads((REPO / "reports" / f"{n}.json").read_text())
                                     for n in ("01_inject", "02_recover_triggers", "03_unlearn"))
    except (OSError, json.JSONDecodeError):
        return None
    return {"width": inject.get("width"), "device": inject.get("device"), "victim_train_seconds": inject["train_seconds"],
            "recovery_seconds": recovery["seconds_recovery"], "unlearning_seconds": unlearn["methods"]["baeraser"]["seconds"]}


def stage_throughput(args, device, log, notebooks: dict | None) -> dict:
    import torch

    size = THROUGHPUT["smoke" if args.dry_run else "full"]
    rows = {}
    for precision in ("fp32", "bf16"):
        for layout in ("contiguous", "channels_last"):
            key = f"{precision} {layout}"
            rows[key] = images_per_second(device, precision, layout, size["images"], size["width"], size["batch_size"])
            log(f"throughput on {device.type}, {key}: {rows[key]:.0f} img/s (width {size['width']})")
    # the CPU path as it runs by default (fp32, channels-last), same code and model, fewer images
    cpu = images_per_second(torch.device("cpu"), "auto", "auto", size["cpu_images"], size["width"], size["batch_size"])
    log(f"throughput on the CPU: {cpu:.0f} img/s ({torch.get_num_threads()} threads)")
    out = {"device": device.type, "train_images_per_second": rows, "cpu_train_images_per_second": cpu,
           "width": size["width"], "batch_size": size["batch_size"], "cpu_threads": torch.get_num_threads()}
    out["cpu_reports"] = committed_cpu_figures()
    if notebooks:
        out["victim_train_seconds"] = notebooks["victim_train_seconds"]
        out["recovery_seconds"] = notebooks["recovery_seconds"]
        out["unlearning_seconds"] = notebooks["methods"]["baeraser"]["seconds"]
    return out


def bars(figures: dict, minutes: float) -> dict:
    """Each bar of the GPU-path issue beside its measured figure; None where the stage did not run."""
    nb = figures.get("notebooks") or {}
    b = (nb.get("methods") or {}).get("baeraser")
    defense = None
    if b and nb.get("victim_train_seconds"):
        defense = (nb["recovery_seconds"] + b["seconds"]) / nb["victim_train_seconds"]
    rows = {
        "minutes": (minutes, BARS["minutes"], minutes <= BARS["minutes"]),
        "victim_clean_acc": (nb.get("victim_clean_acc"), BARS["victim_clean_acc"], None),
        "victim_asr": (nb.get("victim_asr"), BARS["victim_asr"], None),
        "baeraser_asr": (b and b["asr"], BARS["baeraser_asr"], None),
        "baeraser_acc_lost_points": (b and b["acc_lost_points"], BARS["baeraser_acc_lost_points"], None),
        "defense_share_of_training": (defense, BARS["defense_share_of_training"], None),
    }
    out = {}
    for key, (value, bar, met) in rows.items():
        if met is None and value is not None:
            met = value >= bar if key.startswith("victim") else value <= bar
        out[key] = {"measured": value, "bar": bar, "met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = check_inputs(args)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args.out = str(tmp)  # written in full first, then moved: never a half-written folder
    log = Log(tmp / "log.txt")
    started = time.perf_counter()
    record = {"device": device_name(device), "device_type": device.type, "dry_run": args.dry_run,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
              "python": platform.python_version(), "stages": {}, "figures": {}}
    import torch

    record["torch"] = torch.__version__
    log(f"gpu_check on {record['device']} (torch {torch.__version__}), commit {record['commit'][:12]}")
    stages = {"tests": stage_tests, "notebooks": stage_notebooks, "recovery_k100": stage_recovery_k100}
    for name in args.stages:
        if name == "tests" and args.dry_run:
            record["stages"][name] = {"status": "skipped", "why": "the dry run itself runs inside the test suite"}
            continue
        t0 = time.perf_counter()
        try:
            if name == "throughput":
                fig = stage_throughput(args, device, log, record["figures"].get("notebooks"))
            else:
                fig = stages[name](args, device, log)
            record["figures"][name] = fig
            record["stages"][name] = {"status": "ok", "seconds": time.perf_counter() - t0}
        except (Exception, SystemExit) as err:  # one stage's failure is a finding; the next still runs
            log(f"{name} FAILED: {type(err).__name__}: {err}")
            (tmp / f"{name}-traceback.txt").write_text(traceback.format_exc())
            record["stages"][name] = {"status": "failed", "seconds": time.perf_counter() - t0,
                                      "error": f"{type(err).__name__}: {err}"}
        log(f"{name}: {record['stages'][name]['status']} ({record['stages'][name]['seconds']:.1f} s)")
    minutes = (time.perf_counter() - started) / 60
    record["minutes"] = minutes
    record["bars"] = bars(record["figures"], minutes)
    (tmp / "gpu_check.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    log(f"done in {minutes:.1f} min; bars: " +
        ", ".join(f"{k} {'met' if v['met'] else 'MISSED' if v['met'] is False else 'n/a'}" for k, v in record["bars"].items()))
    log.file.close()
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return 1 if any(s["status"] == "failed" for s in record["stages"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
