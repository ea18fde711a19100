"""The public API and the `baeraser defend` command on a tiny model and a tiny image folder, the
torchvision path, and every bad input the command must refuse before any compute."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset

import baeraser_lib as B
from baeraser_lib.api import load_holding, load_model
from baeraser_lib.defenses import FinetuneConfig
from baeraser_lib.lab import cli
from baeraser_lib.lab.defend_command import main as defend_main
from baeraser_lib.lab.defend_command import parser
from baeraser_lib.models import build_model

ROOT = Path(__file__).resolve().parent.parent
K = 10


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small CNN's checkpoint, a 60-image folder of 28×28 grey images and an .npz of the same."""
    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = build_model("small_cnn", K, 1, 8)
    save_file(model.state_dict(), str(d / "model.safetensors"))
    g = np.random.default_rng(0)
    x = (g.random((60, 28, 28)) * 255).astype(np.uint8)
    y = np.arange(60) % K
    for i, (img, label) in enumerate(zip(x, y)):
        (d / "folder" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(d / "folder" / str(label) / f"{i}.png")
    np.savez(d / "holding.npz", x=x, y=y)
    return d


def run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_package_exports_the_api():
    for name in ("defend", "Defended", "DEFENSES", "ATTACKS", "recover_triggers", "unlearn", "evaluate", "der",
                 "load_model", "load_holding"):
        assert hasattr(B, name), name
    spec = B.DEFENSES["baeraser"]
    assert spec.label == "BAERASER" and spec.config().__class__ is spec.config and "holding" in spec.needs
    assert {s.role for s in B.DEFENSES.values()} == {"ours", "ablation", "baseline", "peer"}


def test_holding_loaders_agree(tiny):
    a, b = load_holding(tiny / "folder"), load_holding(tiny / "holding.npz")
    xa, ya = a.tensors
    assert xa.shape == (60, 1, 28, 28) and xa.dtype == torch.float32 and 0 <= xa.min() and xa.max() <= 1
    # ImageFolder order is by folder then file name; compare as sets of (label, image) pairs
    key = lambda ds: sorted((int(y), round(float(x.sum()), 3)) for x, y in zip(*ds.tensors))
    assert key(a) == key(b)


def test_defend_api_every_method_returns_defended(tiny):
    model = load_model(tiny / "model.safetensors", "small_cnn", K)
    holding = load_holding(tiny / "holding.npz")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = B.defend(model, holding, K, method="finetune", config=FinetuneConfig(epochs=1), progress=False)
    assert isinstance(out, B.Defended) and out.method == "finetune" and out.backdoored is None
    assert out.seconds["total"] > 0 and all("seconds" not in k for row in out.history for k in row)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched
    assert not all(torch.equal(before[k], v) for k, v in out.model.state_dict().items())


def test_command_defends_a_model_from_an_image_folder(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["defend", "--model", str(tiny / "model.safetensors"), "--arch", "small_cnn",
                                 "--data", str(tiny / "folder"), "--num-classes", str(K), "--out", str(out),
                                 "--eval-data", str(tiny / "holding.npz"), "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads((out / "defense.json").read_text())
    assert summary["method"] == "baeraser" and isinstance(summary["backdoored"], bool)
    assert summary["inputs"]["precision"] == "auto" and summary["precision_used"] == "fp32"  # auto on a CPU
    assert set(summary["before"]) == set(summary["after"]) == {"holding_val_acc", "eval_acc"}
    assert len(summary["per_label"]) == K and "anomaly_index" in summary["per_label"][0]
    page = (out / "report.html").read_text()
    assert "Per-label scores" in page and "<script" not in page and "http" not in page.split("<pre>")[0]
    weights = load_file(str(out / "defended.safetensors"))
    assert set(weights) == set(load_file(str(tiny / "model.safetensors")))  # the input checkpoint's names
    assert "wrote" in stdout and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_torchvision_architecture_path(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    save_file(resnet18(num_classes=K).state_dict(), str(tmp_path / "tv.safetensors"))
    model = load_model(tmp_path / "tv.safetensors", "torchvision.resnet18", K, mean=[0.5] * 3, std=[0.25] * 3)
    holding = TensorDataset(torch.rand(40, 3, 32, 32), torch.arange(40) % K)
    out = B.defend(model, holding, K, method="finetune", config=FinetuneConfig(epochs=1, batch_size=32),
                   progress=False)
    from baeraser_lib.api import weights_of

    assert set(weights_of(out.model)) == set(resnet18(num_classes=K).state_dict())  # saved without the wrapper


class Exploit:
    """Unpickling this would create a file: a weights-only load must refuse it, never run it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def bad_inputs(tiny, tmp_path):
    """(name, argv changes, what the one-line error must say) for every bad input of the issue."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notmodule.py").write_text("def make(num_classes):\n    return 42\n")
    save_file(build_model("resnet18", K, 1, 8).state_dict(), str(bad / "resnet.safetensors"))
    torch.save({"w": Exploit(bad / "pwned")}, bad / "pickle.pt")
    np.savez(bad / "rgb.npz", x=np.zeros((60, 32, 32, 3), np.uint8), y=np.arange(60) % K)
    np.savez(bad / "labels.npz", x=np.zeros((60, 28, 28), np.uint8), y=np.arange(60) % 12)
    np.savez(bad / "few.npz", x=np.zeros((10, 28, 28), np.uint8), y=np.arange(10) % K)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    return [
        ("unknown architecture", {"--arch": "resnet1800"}, "unknown architecture"),
        ("missing model-def", {"--arch": None, "--model-def": str(bad / "nope.py:make")}, "does not exist"),
        ("model-def not a module", {"--arch": None, "--model-def": str(bad / "notmodule.py:make")}, "not a torch nn.Module"),
        ("checkpoint mismatch", {"--model": str(bad / "resnet.safetensors")}, "does not match"),
        ("not weights-only", {"--model": str(bad / "pickle.pt")}, "refusing checkpoint"),
        ("image size/channels", {"--data": str(bad / "rgb.npz")}, "do not fit the model"),
        ("labels outside [0, K)", {"--data": str(bad / "labels.npz")}, "outside [0, 10)"),
        ("too few images", {"--data": str(bad / "few.npz")}, "needs at least"),
        ("output not empty", {"--out": str(full)}, "not empty"),
        ("bf16 for a method without it", {"--method": "finetune", "--precision": "bf16"}, "fp32 only"),
    ]


def test_every_bad_input_is_one_clear_line_before_compute(tiny, tmp_path, capsys, monkeypatch):
    import baeraser_lib.api as api

    def no_compute(*a, **k):
        raise AssertionError("the defense ran on a bad input")

    monkeypatch.setitem(api.DEFENSES, "baeraser", dataclasses.replace(api.DEFENSES["baeraser"], run=no_compute))
    base = {"--model": str(tiny / "model.safetensors"), "--arch": "small_cnn", "--data": str(tiny / "folder"),
            "--num-classes": str(K)}
    for i, (name, change, says) in enumerate(bad_inputs(tiny, tmp_path)):
        out = tmp_path / f"out{i}"
        args = {**base, "--out": str(out), **change}
        argv = ["defend"] + [t for k, v in args.items() if v is not None for t in (k, v)]
        code, stdout, err = run_cli(argv, capsys)
        assert code == 2, name
        assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert not out.exists() or name == "output not empty", name
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")], name
    assert not (tmp_path / "bad" / "pwned").exists()  # the pickle was refused, never executed
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"


def test_force_replaces_a_non_empty_folder(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = run_cli(["defend", "--model", str(tiny / "model.safetensors"), "--arch", "small_cnn", "--data",
                            str(tiny / "holding.npz"), "--num-classes", str(K), "--out", str(out), "--method",
                            "fineprune", "--force", "--no-progress"], capsys)
    assert code == 0, err
    assert not (out / "old.txt").exists() and (out / "defense.json").is_file()


def readme_command() -> list[str]:
    """The `baeraser defend` example of the README (one command, shell continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(\.venv/bin/baeraser defend .*?)\n```", text, re.S)
    assert block, "the README shows a `.venv/bin/baeraser defend` example"
    return shlex.split(block.group(1).replace("\\\n", " "))


def test_readme_example_is_the_command_the_test_runs_and_its_output_is_committed(tiny, tmp_path, capsys):
    argv = readme_command()
    assert argv[:2] == [".venv/bin/baeraser", "defend"]
    args = parser().parse_args(argv[2:])
    committed = json.loads((ROOT / args.out / "defense.json").read_text())
    inputs = committed["inputs"]
    assert (inputs["model"], inputs["arch"], inputs["data"], inputs["num_classes"]) == \
        (args.model, args.arch, args.data, args.num_classes)
    assert (inputs["eval_data"], inputs["eval_trigger"]) == (args.eval_data, args.eval_trigger)
    assert isinstance(committed["backdoored"], bool) and "holding_val_acc" in committed["before"]
    assert "eval_acc" in committed["after"] and (ROOT / args.out / "report.html").is_file()
    # the same command line, with the tiny model and data in place of the README's files
    swap = {"--model": str(tiny / "model.safetensors"), "--arch": "small_cnn", "--data": str(tiny / "folder"),
            "--eval-data": str(tiny / "holding.npz"), "--out": str(tmp_path / "example")}
    run = list(argv[1:])
    for i, tok in enumerate(run[:-1]):
        if tok in swap:
            run[i + 1] = swap[tok]
    if "--eval-trigger" in run:  # the README's trigger lives in an artifact of notebook 01: drop it here
        j = run.index("--eval-trigger")
        del run[j:j + 2]
    code, _, err = run_cli(run + ["--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "example" / "defense.json").read_text())["inputs"]["num_classes"] == K


def test_cli_lists_its_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and all(c in out for c in ("defend", "report", "sweep"))
    code, _, err = run_cli(["nonsense"], capsys)
    assert code == 2 and "unknown command" in err


def test_readme_states_the_committed_example_figures():
    from baeraser_lib.lab.site import example_markdown

    assert example_markdown() in (ROOT / "README.md").read_text()


def test_attack_command_plants_a_victim_that_defend_can_score(fashion_root, tmp_path, capsys):
    common = ["--artifacts", str(tmp_path / "artifacts"), "--data-root", str(fashion_root), "--no-progress"]
    params = ["-p", "model", "small_cnn", "-p", "width", "8", "-p", "epochs", "2", "-p", "train_subset", "300",
              "-p", "poison_rate", "0.1"]
    code, out, err = run_cli(["attack", *params, *common, "--precision", "fp32", "--layout", "contiguous"], capsys)
    assert code == 0, err
    victim = Path(out.split("victim ")[1].split(" (")[0])
    assert (victim / "weights.safetensors").is_file() and (victim / "meta.json").is_file()
    meta = json.loads((victim / "meta.json").read_text())
    assert (meta["precision"], meta["layout"], meta["layout_used"]) == ("fp32", "contiguous", "contiguous")
    code, out2, _ = run_cli(["attack", *params, *common], capsys)
    assert code == 0 and out2.startswith("found")  # the cache: trained once
    code, _, err = run_cli(["defend", "--model", str(victim / "weights.safetensors"), "--arch", "small_cnn",
                            "--data", "fashion_mnist", "--data-root", str(fashion_root), "--num-classes", "10",
                            "--holding-ratio", "0.25", "--eval-data", "fashion_mnist", "--eval-trigger", str(victim),
                            "--method", "finetune", "--out", str(tmp_path / "d"), "--no-progress"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "d" / "defense.json").read_text())
    assert {"eval_acc", "eval_asr", "holding_val_acc"} == set(summary["before"]) == set(summary["after"])


def test_attack_command_refuses_unknown_parameters_before_loading(tmp_path, capsys):
    code, _, err = run_cli(["attack", "-p", "poison_ratio", "0.1", "--data-root", str(tmp_path / "none")], capsys)
    assert code == 2 and "unknown parameter(s) ['poison_ratio']" in err
    with pytest.raises(SystemExit):  # argparse names the choices
        run_cli(["attack", "--precision", "fp16", "--data-root", str(tmp_path / "none")], capsys)
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
