"""Figures the notebooks show: sample grids, training curves, trigger patches."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator


def _show(ax, img: torch.Tensor, title: str | None = None) -> None:
    img = img.detach().cpu().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0))
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def image_rows(rows: dict[str, torch.Tensor], titles: dict[str, list[str]] | None = None, scale: float = 1.4):
    """A grid with one row per entry of `rows` (each a batch of images (N, C, H, W))."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n, scale * len(rows) + 0.3), squeeze=False)
    for r, (name, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            if c < len(imgs):
                _show(ax, imgs[c], ((titles or {}).get(name) or [None] * n)[c])
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


def change_rows(clean: torch.Tensor, poisoned: torch.Tensor, titles: dict[str, list[str]] | None = None,
                scale: float = 1.3):
    """Clean images, their triggered copies, and |x′ − x| magnified so its largest pixel is white:
    how visible a trigger is. The magnification is written in the row's name."""
    diff = (poisoned - clean).abs()
    peak = float(diff.max())
    gain = 1.0 / peak if peak > 0 else 1.0
    name = f"|x′ − x| × {gain:.0f}" if gain >= 1.5 else "|x′ − x|"
    return image_rows({"clean": clean, "poisoned": poisoned, name: (diff * gain).clamp(0, 1)},
                      {"clean": (titles or {}).get("clean"), "poisoned": (titles or {}).get("poisoned"),
                       name: None}, scale)


def trigger_patch(pattern: torch.Tensor, title: str = "trigger", ax=None):
    """The patch enlarged, pixel by pixel."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8, 1.8))
    _show(ax, pattern, title)
    return ax.figure


def training_curves(histories: dict[str, list[dict]]):
    """Training loss and per-epoch evaluation figures (clean accuracy, ASR) of several runs."""
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, hist in histories.items():
        epochs = [r["epoch"] for r in hist]
        ax_loss.plot(epochs, [r["train_loss"] for r in hist], marker="o", label=name)
        if "eval_clean_acc" in hist[0]:
            ax_eval.plot(epochs, [r["eval_clean_acc"] for r in hist], marker="o", label=f"{name}: clean acc")
        if "eval_asr" in hist[0]:
            ax_eval.plot(epochs, [r["eval_asr"] for r in hist], marker="s", ls="--", label=f"{name}: ASR")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_eval.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1.02), title="evaluation split, per epoch")
    for ax in (ax_loss, ax_eval):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(table: dict[str, dict[str, float]], keys: list[str]):
    """Grouped bars: one group per row of `table`, one bar per metric in `keys`."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(table), 3.2))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        vals = [row.get(key, float("nan")) for row in table.values()]
        bars = ax.bar([j + i * width for j in range(len(table))], vals, width, label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(table))], list(table))
    ax.set(ylim=(0, 1.1), ylabel="fraction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def label_scores(per_label: list[dict], tau: float):
    """Per-label recovered ASR (staircase labels solid; labels pruned after screening hatched, at
    their screening ASR) with the τ line, and the anomaly index of each label."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    labels = [r["label"] for r in per_label]
    for r in per_label:
        full = r["recovered_asr"] is not None
        val = r["recovered_asr"] if full else r["screen_asr"]
        ax.bar(r["label"], val, color="tab:red" if r["kept"] else ("tab:blue" if full else "lightgray"),
               hatch="" if full else "//", edgecolor="k", linewidth=0.5)
    ax.axhline(tau, color="k", ls="--", lw=1, label=f"τ = {tau}")
    ax.set(xticks=labels, ylim=(0, 1.05), xlabel="candidate label", ylabel="ASR on held-out D_h",
           title="recovered ASR (red: kept; hatched: pruned after screening)")
    ax.legend(fontsize=8, loc="upper right")
    _anomaly_bars(ax2, per_label, "(score − median) / (1.4826·MAD)", "anomaly index")
    fig.tight_layout()
    return fig


def _anomaly_bars(ax, per_label: list[dict], ylabel: str, title: str) -> None:
    """Each label's anomaly index with the cut at 2 (Neural Cleanse's)."""
    labels = [r["label"] for r in per_label]
    ax.bar(labels, [r["anomaly_index"] for r in per_label], color="tab:purple")
    ax.axhline(2, color="k", ls=":", lw=1, label="2 (Neural Cleanse's cut)")
    ax.set(xticks=labels, xlabel="candidate label", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


def mask_scores(per_label: list[dict]):
    """Mask form: each label's smallest working mask (pixels; red: in the pool, blue: flagged but
    its generator missed τ, gray: not flagged) and the anomaly index of the sizes."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    labels = [r["label"] for r in per_label]
    colours = ["tab:red" if r["kept"] else ("tab:blue" if r["candidate"] else "lightgray") for r in per_label]
    ax.bar(labels, [r["mask_size"] for r in per_label], color=colours, edgecolor="k", linewidth=0.5)
    ax.set(xticks=labels, xlabel="candidate label", ylabel="mask size |m|₁ (pixels)", yscale="log",
           title="smallest mask that sends D_h there (red: flagged and pooled)")
    _anomaly_bars(ax2, per_label, "(median − log size) / (1.4826·MAD)", "anomaly index of the mask sizes")
    fig.tight_layout()
    return fig


def stage_curves(stage_logs: list[dict]):
    """Hinge, entropy estimate, mean target probability and ASR per staircase stage, per label."""
    keys = [("hinge", "hinge max(0, ε − p)"), ("entropy", "entropy estimate Î (nats)"),
            ("target_prob", "mean target probability"), ("asr", "ASR on held-out D_h")]
    fig, axes = plt.subplots(1, len(keys), figsize=(13, 3))
    for label in sorted({r["label"] for r in stage_logs}):
        rows = [r for r in stage_logs if r["label"] == label]
        for ax, (key, title) in zip(axes, keys):
            ax.plot([r["stage"] for r in rows], [r[key] for r in rows], marker="o", label=f"label {label}")
            ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.set_xlabel("stage")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def optimised_trigger(start: torch.Tensor, final: torch.Tensor, details: dict, history: list[dict],
                      attack: str):
    """An optimised attack's trigger beside its starting point, plus what the optimisation moved:
    the chosen neurons' activation (TrojanNN) or the trigger's target loss per epoch (IMC)."""
    fig, axes = plt.subplots(1, 4 if attack == "imc" else 3, figsize=(12 if attack == "imc" else 9, 2.8),
                             gridspec_kw={"width_ratios": [1, 1, 2.4, 2.4][:4 if attack == "imc" else 3]})
    _show(axes[0], start, "starting patch (random)")
    _show(axes[1], final, f"{attack} trigger")
    ax = axes[2]
    names = [f"n{n}" for n in details["neurons"]]
    xs = range(len(names))
    w = 0.27
    for i, (key, label) in enumerate([("activation_clean", "clean image"), ("activation_start", "random patch"),
                                      ("activation_end", "TrojanNN patch")]):
        bars = ax.bar([x + (i - 1) * w for x in xs], details[key], w, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(list(xs), names)
    ax.set(ylabel="mean activation", title=f"chosen neurons of `{details['layer']}` (clean model)")
    ax.legend(fontsize=7)
    if attack == "imc":
        ax = axes[3]
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["trigger_loss_before"] for r in history], marker="o", label="before the trigger step")
        ax.plot(epochs, [r["trigger_loss_after"] for r in history], marker="s", label="after (trains this epoch)")
        ax.set(xlabel="epoch", ylabel="CE towards the target", yscale="log", title="IMC: trigger loss per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
