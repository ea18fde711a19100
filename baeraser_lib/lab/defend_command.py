"""`baeraser defend`: defend one's own model from the command line.

    baeraser defend --model CKPT --arch NAME [--model-def FILE.py:FACTORY] --data HOLDING
                    --num-classes K --out DIR [--eval-data DATA] [--eval-trigger T] [--force]
                    [--device auto|cpu|cuda|cuda:N|mps] [--precision auto|fp32|bf16]

It checks every input first (one clear line and exit status 2 on a bad one, nothing written),
then runs the defense and writes, into DIR, all at once (a temporary sibling renamed into place):
    defended.safetensors   the repaired model's tensors, under the input checkpoint's names
    defense.json           the verdict, flagged labels, per-label scores, accuracy before/after, seconds
    report.html            the same as a page: no network needed, figures embedded
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import api
from .._version import __version__
from ..artifacts import file_digest, git_commit, read_meta
from ..data import DATASETS, as_tensors
from ..defenses import DEFENSES
from ..defenses.common import split_defense
from ..errors import CheckpointError, ConfigError, DataNotFoundError
from ..metrics import backdoor_metrics, clean_accuracy
from ..targets import TargetRule
from ..train import PRECISIONS, precision_used
from ..triggers import stamp_mask, trigger_from_json

HOLDING_VAL_FRACTION = 0.2  # the defenses' own validation share of D_h (UnlearnConfig, FinetuneConfig)


class UsageError(Exception):
    """A bad input: reported in one line, before any compute."""


class MaskTrigger:
    """x' = (1 − m)·x + m·p with a full-image mask m and pattern p, both in [0, 1]."""

    def __init__(self, mask: torch.Tensor, pattern: torch.Tensor):
        self.mask, self.pattern = mask, pattern

    def apply(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return stamp_mask(x, self.mask, self.pattern)


def eval_trigger(path: str, target: int | None, num_classes: int):
    """(trigger, rule) from an artifact folder / meta.json of ours (trigger and target inside), or
    from an .npz with `mask` and `pattern` (1 or C × H × W, in [0, 1]) and `--eval-target`."""
    p = Path(path)
    if p.is_dir() or p.name == "meta.json":
        meta = read_meta(p if p.is_dir() else p.parent)
        if not meta.get("trigger") or not meta.get("attack_config"):
            raise UsageError(f"--eval-trigger {path}: this artifact holds no trigger (a clean model?)")
        from ..config import AttackConfig

        attack = AttackConfig(**meta["attack_config"])
        return trigger_from_json(meta["trigger"]), attack.spec.target_rule(attack, num_classes)
    if p.suffix == ".npz" and p.is_file():
        import numpy as np

        with np.load(p, allow_pickle=False) as f:
            if "mask" not in f.files or "pattern" not in f.files:
                raise UsageError(f"--eval-trigger {path}: the .npz needs arrays 'mask' and 'pattern'")
            mask, pattern = torch.from_numpy(f["mask"]).float(), torch.from_numpy(f["pattern"]).float()
        if target is None:
            raise UsageError("--eval-trigger with an .npz needs --eval-target LABEL (the attack's target)")
        mask = mask if mask.ndim == 3 else mask[None]
        return MaskTrigger(mask, pattern), TargetRule.all_to_one(target, num_classes)
    raise UsageError(f"--eval-trigger {path}: give an artifact folder of ours (or its meta.json), or an .npz "
                     f"with 'mask' and 'pattern'")


def parser(prog: str = "baeraser defend") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Defend a suspicious model with a little clean data.")
    ap.add_argument("--model", required=True, help="checkpoint: .safetensors, or a weights-only .pt state_dict")
    ap.add_argument("--arch", help="architecture: resnet18 / small_cnn (ours) or torchvision.<name>")
    ap.add_argument("--model-def", help="your own architecture: FILE.py:FACTORY, FACTORY(num_classes) -> nn.Module")
    ap.add_argument("--data", required=True,
                    help=f"clean holding data: an image folder (one sub-folder per class), an .npz (x, y), or "
                         f"a dataset name ({', '.join(DATASETS)}: its seeded D_h)")
    ap.add_argument("--num-classes", type=int, required=True)
    ap.add_argument("--out", required=True, type=Path, help="output folder (must be new or empty, unless --force)")
    ap.add_argument("--method", default="baeraser", choices=list(DEFENSES), help="registered defense (default baeraser)")
    ap.add_argument("--eval-data", help="your test set (same forms as --data) for accuracy before/after; a "
                                        "dataset name gives its test images outside D_h")
    ap.add_argument("--eval-trigger", help="the trigger, where you have it: an artifact folder of ours, or an "
                                           ".npz with mask and pattern (then --eval-target)")
    ap.add_argument("--eval-target", type=int, help="the attack's target label, for an .npz trigger")
    ap.add_argument("--mean", type=float, nargs="+", help="per-channel mean, if the model expects normalised input")
    ap.add_argument("--std", type=float, nargs="+", help="per-channel std (with --mean)")
    ap.add_argument("--data-root", default="data", help="where named datasets live (default data/)")
    ap.add_argument("--holding-ratio", type=float, default=0.05, help="named datasets: |D_h| / training-set size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                    help="unlearning steps: auto = bf16 autocast on CUDA, fp32 elsewhere; fp32 switches it off; "
                         f"bf16 forces it on any device (methods with a bf16 path: "
                         f"{', '.join(k for k, s in DEFENSES.items() if s.bf16)}; the others run fp32)")
    ap.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} exists and is not empty; choose a new folder or pass --force")
    if not out.resolve().parent.is_dir():
        raise UsageError(f"--out {out}: its parent folder does not exist")


def prepare(args) -> dict:
    """Every check and load, no defense compute: the model, D_h, evaluation inputs, device."""
    check_out(args.out, args.force)
    if args.num_classes is None or args.num_classes < 2:
        raise UsageError(f"--num-classes must be ≥ 2, got {args.num_classes}")
    api.check_architecture(args.arch, args.model_def)
    try:
        api.check_precision(args.method, args.precision)
    except ConfigError as err:
        raise UsageError(f"--precision {args.precision}: {err}") from None
    try:
        device = api.resolve_device(args.device)
    except ConfigError as err:
        raise UsageError(f"--device {args.device}: {err}") from None
    model = api.load_model(args.model, args.arch, args.num_classes, args.model_def, args.mean, args.std)
    holding = api.load_holding(args.data, args.data_root, args.holding_ratio, args.seed)
    api.check_data(model, holding, args.num_classes, "--data", DEFENSES[args.method].min_holding)
    evaluation = None
    if args.eval_data:
        evaluation = (api.evaluation_split(args.eval_data, args.data_root, args.holding_ratio, args.seed)
                      if args.eval_data in DATASETS else api.load_holding(args.eval_data, args.data_root))
        api.check_data(model, evaluation, args.num_classes, "--eval-data")
    trigger = rule = None
    if args.eval_trigger:
        if evaluation is None:
            raise UsageError("--eval-trigger needs --eval-data (ASR is measured on your test images)")
        trigger, rule = eval_trigger(args.eval_trigger, args.eval_target, args.num_classes)
        try:
            trigger.apply(as_tensors(evaluation)[0][:2])
        except (RuntimeError, ValueError) as err:
            raise UsageError(f"--eval-trigger does not fit the --eval-data images: {err}") from None
    return {"model": model, "holding": holding, "evaluation": evaluation, "trigger": trigger, "rule": rule,
            "device": device}


def figures(model, inputs: dict, seed: int) -> dict:
    """Accuracy on D_h's validation part (and on --eval-data), ASR with --eval-trigger."""
    _, _, xv, yv = split_defense(inputs["holding"], HOLDING_VAL_FRACTION, seed)
    out = {"holding_val_acc": clean_accuracy(model, torch.utils.data.TensorDataset(xv, yv), inputs["device"])}
    if inputs["evaluation"] is not None:
        out["eval_acc"] = clean_accuracy(model, inputs["evaluation"], inputs["device"])
        if inputs["trigger"] is not None:
            out["eval_asr"] = backdoor_metrics(model, inputs["evaluation"], inputs["trigger"], inputs["rule"],
                                               device=inputs["device"])["asr"]
    return out


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def html_report(summary: dict, defended) -> str:
    """A self-contained page: the verdict, before/after figures, per-label scores, the triggers."""
    from . import plots

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{summary['before'][k]:.4f}</td><td>{summary['after'][k]:.4f}</td>"
                   f"</tr>" for k in summary["before"])
    parts = [f"<h1>baeraser defend: {html.escape(summary['method'])}</h1>",
             f"<p><b>Verdict:</b> {html.escape(summary['verdict'])}. Flagged labels: {summary['flagged'] or 'none'}."
             f" Defense time {summary['seconds'].get('total', 0):.1f} s on {html.escape(summary['device'])}.</p>",
             "<h2>Before and after</h2><table><tr><th>figure</th><th>before</th><th>after</th></tr>" + rows + "</table>",
             "<p>holding_val_acc: the defense's own validation part of D_h (it steered by it); eval_*: your "
             "--eval-data, which the defense never saw.</p>"]
    per_label = summary.get("per_label") or []
    if per_label:
        keys = [k for k in ("label", "mask_size", "anomaly_index", "candidate", "recovered_asr", "kept")
                if k in per_label[0]]
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k in keys) + "</tr>" for r in per_label)
        parts += ["<h2>Per-label scores</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in keys) + "</tr>"
                  + body + "</table>"]
        if "mask_size" in per_label[0]:
            parts.append(_png(plots.mask_scores(per_label)))
    pool = defended.pool
    if pool is not None and len(pool):
        g = torch.Generator().manual_seed(0)
        rows, titles = {}, {}
        for i, k in enumerate(pool.labels):
            patterns = pool.sample(i, 3, g).clamp(0, 1)
            if pool.masks is not None:  # mask form: the mask, then what it stamps, m ⊙ pattern, on black
                m = pool.masks[i]
                rows[f"label {k}"] = torch.cat([m.expand_as(patterns[0])[None], m * patterns])
                titles[f"label {k}"] = ["mask"] + ["mask ⊙ pattern"] * 3
            else:
                rows[f"label {k}"], titles[f"label {k}"] = patterns, ["patch"] * 3
        parts += ["<h2>Recovered triggers</h2><p>Each pooled label's recovered mask and three samples of what "
                  "its generator stamps.</p>", _png(plots.image_rows(rows, titles))]
    parts.append(f"<h2>Inputs</h2><pre>{html.escape(json.dumps(summary['inputs'], indent=2))}</pre>")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>baeraser defend</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def run(args) -> dict:
    """Prepare (all checks), defend, measure, and write DIR atomically; returns the summary."""
    inputs = prepare(args)
    model, progress = inputs["model"], not args.no_progress
    before = figures(model, inputs, args.seed)
    t0 = time.perf_counter()
    defended = api.defend(model, inputs["holding"], args.num_classes, args.method, device=inputs["device"],
                          progress=progress, precision=args.precision)
    wall = time.perf_counter() - t0
    after = figures(defended.model, inputs, args.seed)
    verdict = ("backdoored" if defended.backdoored else "judged clean: model returned unchanged"
               if defended.backdoored is False else "repaired (this method does not detect)")
    per_label = [{k: v for k, v in r.items() if not isinstance(v, torch.Tensor)}
                 for r in (defended.recovery.per_label if defended.recovery is not None else [])]
    summary = {**defended.summary(), "verdict": verdict, "before": before, "after": after, "per_label": per_label,
               "wall_seconds": round(wall, 2), "device": str(inputs["device"]),
               "inputs": {"model": str(args.model), "model_sha256_16": file_digest(args.model), "arch": args.arch,
                          "model_def": args.model_def, "data": str(args.data), "holding_images": len(inputs["holding"]),
                          "num_classes": args.num_classes, "eval_data": args.eval_data,
                          "eval_trigger": args.eval_trigger, "seed": args.seed,
                          "precision": args.precision},
               "precision_used": precision_used(inputs["device"], args.precision) if DEFENSES[args.method].bf16
               else "fp32",
               "library_version": __version__, "git_commit": git_commit(),
               "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write(args.out, defended, summary, args.force)
    return summary


def _write(out: Path, defended, summary: dict, force: bool) -> None:
    from safetensors.torch import save_file

    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".tmp-{out.name}-"))
    try:
        save_file(api.weights_of(defended.model), str(tmp / "defended.safetensors"),
                  metadata={"format": "baeraser-defended/1", "method": summary["method"]})
        (tmp / "defense.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=float))
        (tmp / "report.html").write_text(html_report(summary, defended), encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out.exists():
            if any(out.iterdir()) and not force:
                raise UsageError(f"--out {out} filled up while the defense ran; nothing replaced")
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None, prog: str = "baeraser defend") -> int:
    args = parser(prog).parse_args(argv)
    try:
        summary = run(args)
    except (UsageError, ConfigError, CheckpointError, DataNotFoundError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    b, a = summary["before"], summary["after"]
    print(f"{summary['verdict']}; flagged {summary['flagged']}; holding-validation accuracy "
          f"{b['holding_val_acc']:.4f} → {a['holding_val_acc']:.4f}"
          + (f"; eval accuracy {b['eval_acc']:.4f} → {a['eval_acc']:.4f}" if "eval_acc" in b else "")
          + (f"; ASR {b['eval_asr']:.4f} → {a['eval_asr']:.4f}" if "eval_asr" in b else "")
          + f"\nwrote {args.out}/defended.safetensors, defense.json, report.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
