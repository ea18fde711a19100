"""A grid's index page and JSON: the paper's table (dataset × attack rows, each defense's clean
accuracy, ASR and DER), the means across rows, which data each dataset ran on, and figures.

Every number comes from the runs' own reports (notebook 03's `methods`: `none` is the victim
before any defense, on the same evaluation split as each defense).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path

from ..atomic import atomic_open
from ..defenses import DEFENSES, names
from ..defenses.detection import DEFAULT_THRESHOLD
from .claims import COST_SHARE, KEPT_POINTS, LOW_ASR, REACTIVATION_MARGIN
from .reports import write_json_atomic

COMPARED = [(k, DEFENSES[k].label) for k in names("ours", "baseline", "peer")]  # (plain ascent, a control, is left out)
BASELINES = names("baseline")
PEERS = names("peer")
TABLE_NOTEBOOK = "03_unlearn"  # the notebook whose report holds every defense's figures
TARGETS = {"mean_asr_reduction": 0.98, "mean_acc_drop_points": 2.0}  # issue #7's bar for BAERASER
# issue #18: what BAERASER must still reach on every row while it erases for good (its re-tuned
# ASR at most the clean reference's + REACTIVATION_MARGIN): ASR after the defense, accuracy lost
# (points), and recovery + unlearning as a share of the victim's training time
KEPT_BARS = {"asr": LOW_ASR, "acc_drop_points": float(KEPT_POINTS), "cost_ratio": COST_SHARE}


def _known(v) -> bool:
    """A measured number (not None, not NaN)."""
    return isinstance(v, (int, float)) and v == v


def data_source(dataset: str | None) -> str:
    from ..data import DATASETS

    return DATASETS[dataset].source if dataset in DATASETS else "unknown dataset"


def _label(axes: dict) -> str:
    return " · ".join(str(v) for v in axes.values())


def _step_error(record: dict) -> tuple[str | None, str, str | None]:
    """(the failing notebook, its error, its page relative to the run's folder, if written)."""
    bad = next((s for s in record.get("steps", []) if s["status"] == "failed"), None)
    if bad is None:
        return None, "", None
    return bad["notebook"], bad.get("error") or "", bad.get("page") or f"{bad['notebook']}.html"


INJECT_NOTEBOOK = "01_inject"  # its report holds the data sizes
RECOVERY_NOTEBOOK = "02_recover_triggers"  # its report holds what detection flagged


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def grid_rows(grid_dir: Path, records: list[dict], axis_order: list[str] | None = None) -> list[dict]:
    """One row per run: its defenses' figures when it finished, or why it did not."""
    rows = []
    for rec in records:
        run_dir = grid_dir / rec["run_id"]
        params = rec.get("parameters", {})
        axes = rec.get("axes", {})
        axes = {k: axes[k] for k in (axis_order or []) if k in axes} | axes  # the grid file's order
        report = _read(run_dir / f"{TABLE_NOTEBOOK}.json")
        inject = _read(run_dir / f"{INJECT_NOTEBOOK}.json")
        dataset = report.get("dataset") or inject.get("dataset") or params.get("dataset")
        row = {"run_id": rec["run_id"], "axes": axes, "label": _label(axes), "dataset": dataset,
               "attack": report.get("attack") or inject.get("attack") or params.get("attack"),
               "status": rec["status"], "seconds": rec.get("seconds"), "data": data_source(dataset),
               "data_root": rec.get("data_root"), "notebooks": rec.get("notebooks", []),
               "finished_at": rec.get("finished_at"), "commit": rec.get("commit"),  # older records lack the commit
               **{k: inject[k] for k in ("n_train", "n_holding", "n_evaluation") if k in inject}}
        recovery = _read(run_dir / f"{RECOVERY_NOTEBOOK}.json")
        if recovery:
            row["detection"] = detection_figures(recovery, inject)
        if rec["status"] != "ok":
            nb, err, page = _step_error(rec)
            row.update(failed_notebook=nb, error=err,
                       link=f"{rec['run_id']}/{page}" if page and (run_dir / page).exists() else None)
            rows.append(row)
            continue
        methods = report.get("methods", {})
        if not report:
            rows.append(row)  # finished, but this grid's notebooks write no defense table
            continue
        if not {"none", "baeraser"} <= set(methods):
            row["incomplete"] = f"{TABLE_NOTEBOOK}.json lacks the victim ('none') or BAERASER"
            rows.append(row)
            continue
        before = methods["none"]
        row["before"] = {k: before.get(k) for k in ("clean_acc", "asr")}
        row["defenses"] = {k: {m: methods[k].get(m) for m in ("clean_acc", "asr", "der", "seconds", "reactivated_asr")}
                           for k, _ in COMPARED if k in methods}
        reference = ((report.get("reactivation") or {}).get("models") or {}).get("clean reference")
        if reference is not None:  # the reactivation check ran: the clean reference's re-tuned ASR, and the bar
            row["reference_reactivated_asr"] = reference["asr_after"]
            row["victim_reactivated_asr"] = methods["none"].get("reactivated_asr")
            erased = row["defenses"]["baeraser"].get("reactivated_asr")
            if _known(erased) and _known(reference.get("asr_after")):
                row["baeraser_stays_erased"] = erased <= reference["asr_after"] + REACTIVATION_MARGIN
        cost = report.get("cost_ratio")
        row["cost_ratio"] = cost if _known(cost) else None  # NaN: unknown (an external model's training time)
        row["not_run"] = [k for k, _ in COMPARED if k not in methods]  # e.g. a run from before the peers joined
        for k, d in row["defenses"].items():  # a pool-based defense's cost includes recovering the pool (notebook 02)
            if "pool" in DEFENSES[k].needs and d["seconds"] is not None:
                d["seconds"] += report.get("recovery_seconds") or 0.0
        for k, d in row["defenses"].items():
            d["asr_reduction"] = (before["asr"] - d["asr"]) / before["asr"] if before.get("asr") else None
            d["acc_drop_points"] = 100 * (before["clean_acc"] - d["clean_acc"]) \
                if _known(before.get("clean_acc")) and _known(d["clean_acc"]) else None
        b = {**row["defenses"]["baeraser"], "cost_ratio": row["cost_ratio"]}
        row["baeraser_kept_bars"] = {k: b[k] <= bar if _known(b.get(k)) else None for k, bar in KEPT_BARS.items()}
        base = [row["defenses"][k]["der"] for k in BASELINES if k in row["defenses"]]
        if base:
            row["best_baseline_der"] = max(base)
            row["baeraser_der_ge_best_baseline"] = row["defenses"]["baeraser"]["der"] >= max(base)
        peers = {k: row["defenses"][k]["der"] for k in PEERS if k in row["defenses"]}
        if peers:
            best = max(peers, key=peers.get)
            row["best_peer"], row["best_peer_der"] = best, peers[best]
            row["baeraser_der_ge_best_peer"] = row["defenses"]["baeraser"]["der"] >= peers[best]
        rows.append(row)
    return rows


def detection_figures(recovery: dict, inject: dict) -> dict:
    """What recovery flagged on one row (notebook 02's report), beside the true target, which the
    report reads for evaluation only: the labels BAERASER unlearns, and the target's anomaly index
    and mask-size rank (1 = the smallest mask). An all-to-all row has no single target."""
    kept = recovery.get("labels_kept")
    return {"target_label": inject.get("target_label"), "labels_unlearned": kept,
            "target_found": recovery.get("target_label_found"),
            "target_anomaly_index": recovery.get("target_anomaly_index"),
            "target_mask_rank": recovery.get("target_mask_rank"),
            "judged_clean": (not kept) if kept is not None else None}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(rows: list[dict]) -> dict:
    """Means across the rows that finished, per defense; BAERASER against issue #7's bar; and per
    dataset what its runs read (the registry's description of the files, and the sizes and data
    root the runs report). The library has no synthetic datasets: a dataset whose files are
    missing fails its runs, and `why_not` says so."""
    done = [r for r in rows if "defenses" in r]
    per = {}
    for k, _ in COMPARED:
        ds = [r["defenses"][k] for r in done if k in r["defenses"]]
        per[k] = {"rows": len(ds), "rows_with_asr_before": sum(d["asr_reduction"] is not None for d in ds),
                  "mean_asr_reduction": _mean([d["asr_reduction"] for d in ds]),
                  "mean_acc_drop_points": _mean([d["acc_drop_points"] for d in ds]),
                  "mean_der": _mean([d["der"] for d in ds]),
                  "worst_asr": max((d["asr"] for d in ds if d["asr"] is not None), default=None),
                  "mean_seconds": _mean([d.get("seconds") for d in ds]),
                  "mean_reactivated_asr": _mean([d.get("reactivated_asr") for d in ds]),
                  "worst_reactivated_asr": max((d["reactivated_asr"] for d in ds if d.get("reactivated_asr")
                                                is not None), default=None)}
    b = per["baeraser"]
    checked = [r for r in done if "baeraser_stays_erased" in r]
    judged = [r for r in done if "baeraser_der_ge_best_baseline" in r]
    vs_peers = [r for r in done if "baeraser_der_ge_best_peer" in r]
    peer_wins = [{"run": r["run_id"], "peer": r["best_peer"], "peer_der": r["best_peer_der"],
                  "baeraser_der": r["defenses"]["baeraser"]["der"],
                  "by": r["best_peer_der"] - r["defenses"]["baeraser"]["der"]}
                 for r in vs_peers if not r["baeraser_der_ge_best_peer"]]
    datasets = {}
    for r in rows:
        d = datasets.setdefault(r["dataset"], {"source": r["data"], "runs_ok": 0, "runs_failed": 0, "why_not": [],
                                               "sizes": [], "data_roots": []})
        if r["status"] == "ok":
            d["runs_ok"] += 1
            size = {k: r[k] for k in ("n_train", "n_holding", "n_evaluation") if k in r}
            if size and size not in d["sizes"]:
                d["sizes"].append(size)
            if r.get("data_root") and r["data_root"] not in d["data_roots"]:
                d["data_roots"].append(r["data_root"])
        else:
            d["runs_failed"] += 1
            if r.get("error") and r["error"] not in d["why_not"]:
                d["why_not"].append(r["error"])
    for d in datasets.values():
        d["ran"] = d["runs_ok"] > 0
    full = [r for r in done if not r.get("not_run")]  # rows that ran every compared defense: like for like
    same = {k: {"mean_der": _mean([r["defenses"][k]["der"] for r in full]),
                "worst_asr": max((r["defenses"][k]["asr"] for r in full), default=None),
                "mean_seconds": _mean([r["defenses"][k].get("seconds") for r in full])} for k, _ in COMPARED}
    return {
        "rows": len(rows), "rows_done": len(done), "rows_failed": sum(r["status"] != "ok" for r in rows),
        "defenses": per, "datasets": datasets,
        "same_rows": {"rows": len(full), "runs": [r["run_id"] for r in full], "defenses": same},
        "targets": {
            "mean_asr_reduction": {"target": f">= {TARGETS['mean_asr_reduction']}",
                                   "measured": b["mean_asr_reduction"],
                                   "met": b["mean_asr_reduction"] is not None
                                   and b["mean_asr_reduction"] >= TARGETS["mean_asr_reduction"]},
            "mean_acc_drop_points": {"target": f"<= {TARGETS['mean_acc_drop_points']}",
                                     "measured": b["mean_acc_drop_points"],
                                     "met": b["mean_acc_drop_points"] is not None
                                     and b["mean_acc_drop_points"] <= TARGETS["mean_acc_drop_points"]},
            "baeraser_der_ge_best_baseline": {"target": "every row",
                                              "measured": f"{sum(r['baeraser_der_ge_best_baseline'] for r in judged)}"
                                                          f" of {len(judged)} rows",
                                              "met": bool(judged) and all(r["baeraser_der_ge_best_baseline"]
                                                                          for r in judged)},
            "baeraser_der_ge_best_peer": {"target": "every row",
                                          "measured": f"{len(vs_peers) - len(peer_wins)} of {len(vs_peers)} rows "
                                                      f"that ran the peers ({len(done) - len(vs_peers)} did not)",
                                          "met": bool(vs_peers) and not peer_wins and len(vs_peers) == len(done)},
            **({"baeraser_stays_erased": {
                "target": f"re-tuned ASR <= the clean reference's + {REACTIVATION_MARGIN} on every row",
                "measured": f"{sum(r['baeraser_stays_erased'] for r in checked)} of {len(checked)} rows checked "
                            f"({len(done) - len(checked)} not checked)",
                "met": len(checked) == len(done) and all(r["baeraser_stays_erased"] for r in checked)}}
               if checked else {}),
            **{f"baeraser_{k}_every_row": _every_row(done, k) for k in KEPT_BARS},
        },
        "peer_wins": peer_wins,
    }


def grid_figures(rows: list[dict], fig_dir: Path) -> list[str]:
    """DER per defense and ASR before/after BAERASER, per finished row; PNG files, their names."""
    done = [r for r in rows if "defenses" in r]
    if not done:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig_dir.mkdir(parents=True, exist_ok=True)
    names, x = [], np.arange(len(done))
    labels = [r["label"].replace(" · ", "\n") for r in done]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(done)), 3.6))
    w = 0.8 / len(COMPARED)
    for i, (k, label) in enumerate(COMPARED):
        ax.bar(x + (i - (len(COMPARED) - 1) / 2) * w, [r["defenses"].get(k, {}).get("der", 0) for r in done], w,
               label=label)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("DER")
    ax.set_title("Defense effectiveness rating per run (higher is better)")
    ax.legend(fontsize=8, ncols=4, loc="lower left")
    fig.tight_layout()
    fig.savefig(fig_dir / "der.png", dpi=110)
    plt.close(fig)
    names.append("der.png")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(done)), 3.6))
    a1.bar(x - 0.2, [r["before"]["asr"] for r in done], 0.4, label="before", color="tab:red")
    a1.bar(x + 0.2, [r["defenses"]["baeraser"]["asr"] for r in done], 0.4, label="after BAERASER", color="tab:blue")
    a1.set_xticks(x, labels, fontsize=7)
    a1.set_ylabel("ASR (true trigger)")
    a1.legend(fontsize=8)
    cap = 15.0  # points; a collapse beyond it is drawn at the cap with its value written beside
    for k, label in COMPARED:
        drops = np.array([r["defenses"].get(k, {}).get("acc_drop_points", np.nan) for r in done])
        line, = a2.plot(x, np.minimum(drops, cap), "o-", label=label)
        for xi, d in zip(x, drops):
            if d > cap:
                a2.annotate(f"{d:.0f}", (xi, cap), textcoords="offset points", xytext=(4, -10), fontsize=7,
                            color=line.get_color())
    a2.set_ylim(top=cap + 1)
    a2.axhline(TARGETS["mean_acc_drop_points"], color="grey", ls=":", lw=1)
    a2.set_xticks(x, labels, fontsize=7)
    a2.set_ylabel(f"clean accuracy lost (points, cut at {cap:.0f})")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fig_dir / "asr_acc.png", dpi=110)
    plt.close(fig)
    names.append("asr_acc.png")
    return names


def _every_row(done: list[dict], bar: str) -> dict:
    """One of BAERASER's kept bars (`KEPT_BARS`) over the finished rows: how many rows meet it."""
    marks = [r.get("baeraser_kept_bars", {}).get(bar) for r in done]  # absent: a grid.json of older code
    known = [m for m in marks if m is not None]
    return {"target": f"<= {KEPT_BARS[bar]} on every row",
            "measured": f"{sum(known)} of {len(known)} rows" + (f" ({len(done) - len(known)} unknown)"
                                                              if len(known) < len(done) else ""),
            "met": bool(done) and len(known) == len(done) and all(known)}


def _f(v, digits=4) -> str:
    return f"{v:.{digits}f}" if _known(v) else ""


def _shown(rows: list[dict]) -> list[tuple[str, str]]:
    """The compared defenses that ran in at least one row (a grid from before the peers joined shows none of them)."""
    return [(k, label) for k, label in COMPARED if any(k in r.get("defenses", {}) for r in rows)] or COMPARED[:1]


def _table(rows: list[dict]) -> str:
    cols = _shown(rows)  # the columns of this table
    head = "".join(f"<th colspan=3>{html.escape(label)}</th>" for _, label in cols)
    sub = "<th>acc</th><th>ASR</th><th>DER</th>" * len(cols)
    body = []
    for r in rows:
        links = " · ".join(f'<a href="{html.escape(r["run_id"])}/{html.escape(nb)}.html">{html.escape(nb)}</a>'
                           for nb in r["notebooks"])
        name = f"{html.escape(r['label'])}<br><small>{links}</small>"
        if "defenses" not in r:
            if r["status"] == "ok":
                what = r.get("incomplete") or "this grid's notebooks write no defense table"
                body.append(f"<tr><td>{name}</td><td colspan={4 + 3 * len(cols)}>finished; "
                            f"{html.escape(what)}</td></tr>")
                continue
            link = f' (<a href="{html.escape(r["link"])}">failing notebook</a>)' if r.get("link") else ""
            body.append(f"<tr class=failed><td>{html.escape(r['label'])}</td><td colspan={4 + 3 * len(cols)}>"
                        f"<b>failed</b> in {html.escape(str(r.get('failed_notebook')))}{link}: "
                        f"{html.escape(r.get('error', ''))}</td></tr>")
            continue
        cells = []
        for k, _ in cols:
            d = r["defenses"].get(k)
            if d is None:
                cells.append("<td colspan=3><small>not run</small></td>")
                continue
            best = d["der"] >= max(x["der"] for x in r["defenses"].values())
            der = f"<b>{d['der']:.3f}</b>" if best else f"{d['der']:.3f}"
            cells.append(f"<td>{_f(d['clean_acc'])}</td><td>{_f(d['asr'])}</td><td>{der}</td>")
        verdicts = "".join(f"<td>{'yes' if ok else '<b>no</b>' if ok is not None else 'not run'}</td>"
                           for ok in (r.get("baeraser_der_ge_best_baseline"), r.get("baeraser_der_ge_best_peer")))
        body.append(f"<tr><td>{name}</td><td>{_f(r['before']['clean_acc'])}</td><td>{_f(r['before']['asr'])}</td>"
                    f"{''.join(cells)}{verdicts}</tr>")
    return (f"<table><tr><th rowspan=2>run</th><th colspan=2>before</th>{head}"
            f"<th rowspan=2>BAERASER DER ≥ best baseline</th><th rowspan=2>≥ best peer</th></tr>"
            f"<tr><th>acc</th><th>ASR</th>{sub}</tr>{''.join(body)}</table>")


def _erasure_table(rows: list[dict]) -> str:
    head, body = erasure_cells(rows)
    if not body:
        return ""
    return ("<h2>Erased for good (issue #18)</h2><p>BAERASER's bars after the defense, then each model's ASR "
            "after the attacker's re-tuning (a few stamped training images, the true trigger: evaluation only).</p>"
            "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
            + "</table>")


def grid_markdown(grid_dir: Path) -> str:
    """The grid's table as Markdown (the README's copy), from its grid.json."""
    doc = json.loads((grid_dir / "grid.json").read_text())
    axes = doc.get("axis_names") or ["dataset", "attack"]  # grids written before the names were kept
    cols = _shown(doc["rows"])  # the columns of this table
    lines = [f"| {' · '.join(axes) or 'run'} | before acc / ASR | " + " | ".join(f"{l} acc / ASR / DER" for _, l in cols)
             + " | BAERASER DER ≥ best baseline | ≥ best peer |", "|---" * (4 + len(cols)) + "|"]
    for r in doc["rows"]:
        if "defenses" not in r:
            if r["status"] == "ok":
                lines.append(f"| {r['label']} | finished, no defense table |" + " |" * (2 + len(cols)))
                continue
            why = (r.get("error") or r["status"]).split(": ", 1)[-1].split(":")[0].replace("|", "/")
            lines.append(f"| {r['label']} | **not run**: {why} |" + " |" * (2 + len(cols)))
            continue
        cells = [f"{d['clean_acc']:.4f} / {d['asr']:.4f} / {d['der']:.3f}" if (d := r["defenses"].get(k)) else "not run"
                 for k, _ in cols]
        verdicts = [("yes" if ok else "**no**") if (ok := r.get(k)) is not None else "not run"
                    for k in ("baeraser_der_ge_best_baseline", "baeraser_der_ge_best_peer")]
        lines.append(f"| {r['label']} | {r['before']['clean_acc']:.4f} / {r['before']['asr']:.4f} | "
                     + " | ".join(cells) + f" | {' | '.join(verdicts)} |")
    return "\n".join(lines)


def runs_markdown(grid_dir: Path) -> str:
    """When each row of the grid ran, and at which commit (the README's copy, from grid.json): a
    grid re-run a few rows at a time holds rows of more than one code state until it is done."""
    doc = json.loads((grid_dir / "grid.json").read_text())
    lines = ["| run | finished | commit | status |", "|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['label']} | {(r.get('finished_at') or 'not recorded')[:16].replace('T', ' ')} | "
                     f"{(r.get('commit') or '')[:10] or 'not recorded'} | {r.get('status', '')} |")
    return "\n".join(lines)


def detection_markdown(grid_dir: Path) -> str:
    """What detection flagged on each row beside the true target (the README's copy, from
    grid.json): the rows where nothing, or the wrong label, was unlearned are detection misses."""
    doc = json.loads((grid_dir / "grid.json").read_text())
    lines = ["| run | target | labels unlearned | target flagged "
             f"| target's anomaly index (flagged from {DEFAULT_THRESHOLD:g}) "
             "| target's mask rank (1 = smallest) |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        d = r.get("detection")
        if d is None:
            lines.append(f"| {r['label']} | no recovery report |  |  |  |  |")
            continue
        kept = d.get("labels_unlearned")
        unlearned = "not recorded" if kept is None else "none (judged clean)" if d.get("judged_clean") \
            else ", ".join(str(k) for k in kept)
        target = "every label (all-to-all)" if d.get("target_label") is None else str(d["target_label"])
        found = {True: "yes", False: "**no**", None: "n/a"}[d.get("target_found")]
        rank = d.get("target_mask_rank")
        lines.append(f"| {r['label']} | {target} | {unlearned} | {found} | {_f(d.get('target_anomaly_index'), 2) or 'n/a'} "
                     f"| {rank if rank is not None else 'n/a'} |")
    return "\n".join(lines)


def write_grid_index(grid, grid_dir: Path, records: list[dict], sweep_seconds: float | None = None) -> Path:
    """grid.json and index.html of one grid's reports folder (rewritten as runs finish)."""
    rows = grid_rows(grid_dir, records, grid.axis_names)
    summary = summarise(rows)
    figures = grid_figures(rows, grid_dir / "figures")
    previous = grid_dir / "grid.json"
    timing = {"sweep_seconds": sweep_seconds}
    if sweep_seconds is None and previous.exists():
        timing = {"sweep_seconds": json.loads(previous.read_text()).get("timing", {}).get("sweep_seconds")}
    timing["runs_seconds"] = round(sum(r.get("seconds") or 0 for r in records), 1)
    doc = {"grid": grid.name, "description": grid.description, "notebooks": grid.notebooks,
           "parameters": grid.parameters, "axes": grid.axes, "overrides": grid.overrides,
           "variants": grid.variants, "axis_names": grid.axis_names,
           "rows": rows, "summary": summary, "timing": timing, "figures": figures,
           "runs": {r["run_id"]: {k: r.get(k) for k in ("status", "seconds", "finished_at", "host", "skipped")}
                    for r in records},
           "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(grid_dir / "grid.json", doc)
    per = summary["defenses"]
    means = "".join(f"<tr><td>{html.escape(label)}</td><td>{per[k]['rows']}</td>"
                    f"<td>{_f(per[k]['mean_asr_reduction'] and 100 * per[k]['mean_asr_reduction'], 2)}%</td>"
                    f"<td>{_f(per[k]['mean_acc_drop_points'], 2)}</td><td>{_f(per[k]['mean_der'], 3)}</td>"
                    f"<td>{_f(per[k].get('worst_asr'))}</td><td>{_f(per[k].get('mean_seconds'), 1)}</td></tr>"
                    for k, label in COMPARED)
    wins = "".join(f"<li>{html.escape(w['run'])}: {html.escape(DEFENSES[w['peer']].label)} DER {w['peer_der']:.3f} "
                   f"against BAERASER's {w['baeraser_der']:.3f} (by {w['by']:.3f})</li>" for w in summary["peer_wins"])
    wins = f"<h3>Where a peer beats BAERASER</h3><ul>{wins}</ul>" if wins else ""
    targets = "".join(f"<li>{html.escape(name)}: {html.escape(str(t['measured'] if not isinstance(t['measured'], float) else round(t['measured'], 4)))}"
                      f" (target {html.escape(t['target'])}): <b>{'met' if t['met'] else 'missed'}</b></li>"
                      for name, t in summary["targets"].items())
    def sizes(d):
        return "; ".join(f"{z.get('n_train')} training, {z.get('n_holding')} holding, {z.get('n_evaluation')} "
                         f"evaluation images" for z in d["sizes"])

    data = "".join(f"<li><b>{html.escape(str(name))}</b>: "
                   + (f"ran on {html.escape(d['source'])}: {html.escape(sizes(d))}, read from "
                      f"<code>{html.escape(', '.join(d['data_roots']))}</code>" if d["ran"] else
                      f"<b>not run</b>: {html.escape('; '.join(d['why_not'])[:400])}")
                   + "</li>" for name, d in summary["datasets"].items())
    imgs = "".join(f'<p><img src="figures/{f}" style="max-width:100%"></p>' for f in figures)
    took = f"{timing['sweep_seconds'] / 60:.1f} min of wall time in the last sweep; " if timing["sweep_seconds"] else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>grid {html.escape(grid.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:90%}}
td,th{{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}}tr.failed{{background:#fdd}}</style></head>
<body><h1>Grid <code>{html.escape(grid.name)}</code></h1><p>{html.escape(grid.description)}</p>
<p>{len(records)} runs: {summary['rows_done']} finished, {summary['rows_failed']} failed.
{took}{timing['runs_seconds'] / 60:.1f} min summed over the runs' own records.
Notebooks per run: {html.escape(', '.join(grid.notebooks))}. JSON with the same numbers:
<a href="grid.json">grid.json</a>. Back to <a href="../index.html">all reports</a>.</p>
<h2>Data</h2><ul>{data}</ul>
<h2>Results</h2><p>Evaluation split (never seen by any defense), true trigger (evaluation only). "before" is the
victim; DER = (max(0, ΔASR) − max(0, Δacc) + 1) / 2. Bold: the row's best DER.</p>
{_table(rows)}
{_erasure_table(rows)}
<h2>Means across finished rows</h2>
<table><tr><th>defense</th><th>rows</th><th>mean ASR reduction</th><th>mean accuracy drop (points)</th>
<th>mean DER</th><th>worst ASR</th><th>mean seconds</th></tr>{means}</table><ul>{targets}</ul>{wins}
<h2>Figures</h2>{imgs}
<h2>Parameters</h2><pre>{html.escape(json.dumps({"parameters": grid.parameters, "axes": grid.axes, "variants": grid.variants,
                                                   "overrides": grid.overrides}, indent=1))}</pre>
</body></html>"""
    with atomic_open(grid_dir / "index.html", encoding="utf-8") as f:
        f.write(page)
    return grid_dir / "index.html"


def summary_markdown(grid_dir: Path) -> str:
    """Per defense over the grid's rows that ran every defense (the README's copy, from grid.json):
    mean DER, worst-case ASR, mean seconds; then every row where a peer's DER beats BAERASER's."""
    doc = json.loads((grid_dir / "grid.json").read_text())
    same = doc["summary"]["same_rows"]
    lines = [f"| defense (over the {same['rows']} rows that ran every defense: {', '.join(same['runs'])}) | mean DER "
             f"| worst ASR | mean seconds |", "|---|---|---|---|"]
    for k, label in COMPARED:
        d = same["defenses"][k]
        lines.append(f"| {label} | {_f(d['mean_der'], 3)} | {_f(d['worst_asr'])} | {_f(d['mean_seconds'], 1)} |")
    wins = doc["summary"].get("peer_wins", [])
    lines += [""] + ([f"- {w['run']}: {DEFENSES[w['peer']].label} DER {w['peer_der']:.3f} against BAERASER's "
                      f"{w['baeraser_der']:.3f} (by {w['by']:.3f})" for w in wins]
                     or ["- no row where a peer's DER beats BAERASER's"])
    return "\n".join(lines)


def _mark(ok) -> str:
    return "" if ok is None else "met" if ok else "MISSED"


def erasure_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Issue #18 per row (header, cells): BAERASER's kept bars, then every defense's ASR after
    re-tuning beside the never-backdoored reference's and the undefended victim's, and whether
    BAERASER's stays within the reference's + REACTIVATION_MARGIN."""
    cols = _shown(rows)
    head = ["run", f"BAERASER ASR (≤ {KEPT_BARS['asr']})", f"points lost (≤ {KEPT_BARS['acc_drop_points']:g})",
            f"cost ratio (≤ {KEPT_BARS['cost_ratio']})", "re-tuned: never backdoored", "undefended",
            *[label for _, label in cols], f"BAERASER stays erased (≤ reference + {REACTIVATION_MARGIN:g})"]
    body = []
    for r in rows:
        if "defenses" not in r or "reference_reactivated_asr" not in r:
            continue
        b, bars = r["defenses"]["baeraser"], r.get("baeraser_kept_bars", {})  # absent: a grid.json of older code
        body.append([r["label"], f"{_f(b.get('asr'))} {_mark(bars.get('asr'))}".strip(),
                     f"{_f(b.get('acc_drop_points'), 2)} {_mark(bars.get('acc_drop_points'))}".strip(),
                     f"{_f(r.get('cost_ratio'), 2)} {_mark(bars.get('cost_ratio'))}".strip(),
                     _f(r["reference_reactivated_asr"]), _f(r.get("victim_reactivated_asr")),
                     *[_f((r["defenses"].get(k) or {}).get("reactivated_asr")) for k, _ in cols],
                     _mark(r.get("baeraser_stays_erased"))])
    return head, body


def erasure_markdown(grid_dir: Path) -> str:
    """The issue #18 table (`erasure_cells`) as Markdown, the README's copy, from grid.json."""
    head, body = erasure_cells(json.loads((grid_dir / "grid.json").read_text())["rows"])
    if not body:
        return "No row of this grid's index ran the reactivation check (issue #18) yet."
    return "\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
                     + ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in body])


TARGET_LABELS = {  # summary["targets"] key → what it asks, in the issues' words
    "baeraser_der_ge_best_peer": "#16: BAERASER's DER ≥ the best peer's",
    "baeraser_der_ge_best_baseline": "BAERASER's DER ≥ the best baseline's",
    "baeraser_stays_erased": "#18: re-tuned, BAERASER's ASR ≤ the never-backdoored model's + "
                             f"{REACTIVATION_MARGIN:g}",
    "baeraser_asr_every_row": f"#18: BAERASER's ASR after the defense ≤ {KEPT_BARS['asr']}",
    "baeraser_acc_drop_points_every_row": f"#18: ≤ {KEPT_BARS['acc_drop_points']:g} points of accuracy lost",
    "baeraser_cost_ratio_every_row": f"#18: recovery + unlearning ≤ {KEPT_BARS['cost_ratio']:.0%} of the victim's "
                                     "training time",
    "mean_asr_reduction": "#7: mean ASR reduction across rows",
    "mean_acc_drop_points": "#7: mean accuracy lost across rows (points)",
}


def targets_markdown(grid_dir: Path) -> str:
    """The grid's targets (`summarise`'s `targets`) as Markdown, each as measured beside its bar,
    and the rows that miss each per-row bar: the README's verdicts, never typed by hand."""
    doc = json.loads((grid_dir / "grid.json").read_text())
    rows = [r for r in doc["rows"] if "defenses" in r]
    missed_by = {"baeraser_der_ge_best_peer": lambda r: r.get("baeraser_der_ge_best_peer") is False,
                 "baeraser_der_ge_best_baseline": lambda r: r.get("baeraser_der_ge_best_baseline") is False,
                 "baeraser_stays_erased": lambda r: r.get("baeraser_stays_erased") is False,
                 **{f"baeraser_{k}_every_row": (lambda k: lambda r: r.get("baeraser_kept_bars", {}).get(k) is False)(k)
                    for k in KEPT_BARS}}
    lines = ["| figure | target | measured | met | rows that miss |", "|---|---|---|---|---|"]
    targets = doc["summary"]["targets"]
    for key in sorted(targets, key=lambda k: list(TARGET_LABELS).index(k) if k in TARGET_LABELS else len(TARGET_LABELS)):
        t = targets[key]
        m = t["measured"]
        measured = _f(m, 3) if isinstance(m, float) else "not measured" if m is None else str(m).replace("|", "/")
        misses = ", ".join(r["run_id"] for r in rows if key in missed_by and missed_by[key](r))
        lines.append(f"| {TARGET_LABELS.get(key, key)} | {t['target']} | {measured} | {'yes' if t['met'] else '**no**'} "
                     f"| {misses} |")
    return "\n".join(lines)
