"""The reports' index page and the Markdown tables the README carries, all read from the reports' JSON."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..defenses import DEFENSES, names
from ..atomic import atomic_open
from ..errors import ConfigError
from .reports import REPORTS_DIR

from .reports import NOTEBOOKS
NOT_REPORTS = {"runs", "batches", "failures"}  # JSON files of the runner itself


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def write_index(out_dir: Path = REPORTS_DIR) -> Path:
    """reports/index.html: every report with its status, time and key figures (from its JSON)."""
    runs_file = out_dir / "runs.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else {}
    names = sorted(set(runs) | {p.stem for p in out_dir.glob("*.json") if p.stem not in NOT_REPORTS})
    rows = []
    for name in names:
        run = runs.get(name, {})
        fig_file = out_dir / f"{name}.json"
        figs = json.loads(fig_file.read_text()) if fig_file.exists() else {}
        flat = {k: v for k, v in figs.items() if isinstance(v, (int, float, str, bool, list))
                and not (isinstance(v, list) and any(isinstance(i, dict) for i in v))}
        figures = "<br>".join(f"<code>{html.escape(k)}</code> = {_fmt(v)}" for k, v in flat.items())
        link = f'<a href="{html.escape(name)}.html">{html.escape(name)}</a>' \
            if (out_dir / f"{name}.html").exists() else html.escape(name)
        status = run.get("status", "?")
        err = f"<br><small>{html.escape(run['error'])}</small>" if run.get("error") else ""
        rows.append(f"<tr class='{status}'><td>{link}</td><td>{status}{err}</td>"
                    f"<td>{run.get('seconds', '')}</td><td>{html.escape(run.get('finished_at', ''))}</td>"
                    f"<td>{figures}</td></tr>")
    bench_rows = []
    for f in sorted((out_dir / "benchmarks").glob("*.json")):
        figs = json.loads(f.read_text())
        flat = "<br>".join(f"<code>{html.escape(k)}</code> = {_fmt(v)}" for k, v in figs.items()
                           if isinstance(v, (int, float, str, bool, list))
                           and not (isinstance(v, list) and any(isinstance(i, dict) for i in v)))
        bench_rows.append(f"<tr><td>benchmarks/{html.escape(f.name)}</td><td>{flat}</td></tr>")
    benchmarks = ("<h2>Benchmarks</h2><p>Scripts in <code>benchmarks/</code>; figures as they printed them.</p>"
                  f"<table><tr><th>file</th><th>figures</th></tr>{''.join(bench_rows)}</table>") if bench_rows else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>baeraser reports</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.4em .7em;vertical-align:top}}tr.failed{{background:#fdd}}</style></head>
<body><h1>baeraser reports</h1>
<p>Each row is one executed notebook (papermill + nbconvert); figures come from its JSON.</p>
{attack_table(out_dir)}
{grid_links(out_dir)}
{verdict_table(out_dir)}
<h2>All reports</h2>
<table><tr><th>report</th><th>status</th><th>seconds</th><th>finished (UTC)</th><th>key figures</th></tr>
{''.join(rows)}</table>{failure_table(out_dir)}{other_runs(out_dir)}{benchmarks}</body></html>"""
    with atomic_open(out_dir / "index.html", encoding="utf-8") as f:
        f.write(page)
    return out_dir / "index.html"


def failure_table(out_dir: Path = REPORTS_DIR) -> str:
    """HTML: the runs that failed since their report's last good run (`failures.json`), each
    linked to its page; the report above stays the last good one."""
    f = out_dir / "failures.json"
    fails = json.loads(f.read_text()) if f.exists() else {}
    if not fails:
        return ""
    rows = []
    for name, row in sorted(fails.items()):
        page = row.get("page")
        link = f'<a href="{html.escape(page)}">{html.escape(name)}</a>' if page and (out_dir / page).exists() \
            else html.escape(name)
        rows.append(f"<tr class='failed'><td>{link}</td><td>{html.escape(str(row.get('error') or ''))}</td>"
                    f"<td>{html.escape(json.dumps(row.get('parameters', {}), sort_keys=True))}</td>"
                    f"<td>{html.escape(row.get('finished_at', ''))}</td></tr>")
    return ("<h2>Failed runs</h2><p>These runs failed; the reports above are the last good ones.</p>"
            "<table><tr><th>run (its page)</th><th>error</th><th>parameters</th><th>finished (UTC)</th></tr>"
            + "".join(rows) + "</table>")


def other_runs(out_dir: Path = REPORTS_DIR) -> str:
    """HTML: one line per run with other parameters (`runs/<name>/`, written by `report run`)."""
    items = []
    for folder in sorted(p for p in (out_dir / "runs").glob("*") if p.is_dir()):
        runs = json.loads((folder / "runs.json").read_text()) if (folder / "runs.json").exists() else {}
        fails = json.loads((folder / "failures.json").read_text()) if (folder / "failures.json").exists() else {}
        params = {}
        for row in [*runs.values(), *fails.values()]:
            params.update(row.get("parameters", {}))
        state = f"{len(runs)} ok, {len(fails)} failed"
        items.append(f'<li><a href="runs/{html.escape(folder.name)}/index.html">{html.escape(folder.name)}</a>: '
                     f"{state}; <code>{html.escape(json.dumps(params, sort_keys=True))}</code></li>")
    return ("<h2>Other runs</h2><p>Runs with parameters other than the defaults, each in its own folder.</p><ul>"
            + "".join(items) + "</ul>") if items else ""


def grid_links(out_dir: Path = REPORTS_DIR) -> str:
    """HTML: one line per grid folder (`baeraser sweep`), with BAERASER's means."""
    items = []
    for f in sorted(out_dir.glob("*/grid.json")):
        doc = json.loads(f.read_text())
        s = doc.get("summary", {})
        b = s.get("defenses", {}).get("baeraser", {})
        means = (f"; BAERASER: mean ASR reduction {100 * b['mean_asr_reduction']:.2f}%, mean accuracy drop "
                 f"{b['mean_acc_drop_points']:.2f} points") if b.get("mean_asr_reduction") is not None else ""
        items.append(f'<li><a href="{html.escape(f.parent.name)}/index.html">{html.escape(f.parent.name)}</a>: '
                     f"{s.get('rows_done', 0)} of {s.get('rows', 0)} runs finished{means}</li>")
    return "<h2>Grids</h2><ul>" + "".join(items) + "</ul>" if items else ""


def verdict_table(out_dir: Path = REPORTS_DIR) -> str:
    """HTML: the paper's claims as each ablation report judged them (from its JSON's `verdicts`)."""
    parts = []
    for f in sorted(out_dir.glob("*.json")):
        if f.stem in NOT_REPORTS:
            continue
        verdicts = json.loads(f.read_text()).get("verdicts")
        if not isinstance(verdicts, list) or not verdicts:
            continue
        rows = "".join(f"<tr><td>{html.escape(v['claim'])}</td><td>{'yes' if v['reproduced'] else 'no'}</td>"
                       f"<td>{html.escape(v['evidence'])}</td></tr>" for v in verdicts)
        ok = sum(bool(v["reproduced"]) for v in verdicts)
        parts.append(f'<h3><a href="{html.escape(f.stem)}.html">{html.escape(f.stem)}</a>: {ok} of {len(verdicts)} '
                     f"claims reproduced</h3><table><tr><th>claim</th><th>reproduced</th><th>evidence</th></tr>"
                     f"{rows}</table>")
    return "<h2>Claims of the paper, measured</h2>" + "".join(parts) if parts else ""


def verdict_markdown(out_dir: Path = REPORTS_DIR, report: str = "04_ablations") -> str:
    """The claims table of one ablation report as Markdown (the README's copy of it)."""
    path = out_dir / f"{report}.json"
    verdicts = json.loads(path.read_text()).get("verdicts") if path.exists() else None
    if not verdicts:
        raise ConfigError(f"{path} holds no verdicts: run notebook 04 first")
    cell = lambda t: str(t).replace("|", "\\|")  # noqa: E731
    lines = ["| claim of the paper | reproduced | measured |", "|---|---|---|"]
    lines += [f"| {cell(v['claim'])} | {'yes' if v['reproduced'] else '**no**'} | {cell(v['evidence'])} |"
              for v in verdicts]
    return "\n".join(lines)


def attack_rows(out_dir: Path = REPORTS_DIR) -> list[dict]:
    """One row per attack with both a notebook 01 and a notebook 03 report: the victim's clean
    accuracy and ASR, and each defense's ASR, accuracy and DER (from 03's `methods`)."""
    rows = []
    for f in sorted(out_dir.glob("03_unlearn*.json")):
        suffix = f.stem[len("03_unlearn"):]
        inject = out_dir / f"01_inject{suffix}.json"
        if not inject.exists():
            continue
        a, u = json.loads(inject.read_text()), json.loads(f.read_text())
        if a.get("attack") != u.get("attack"):
            continue  # reports of different runs under one name: do not pair them
        rows.append({"attack": a["attack"], "suffix": suffix, "clean_acc": a["clean_acc"], "asr": a["asr"],
                     "clean_model_acc": a["clean_model_acc"],
                     "defenses": {k: u["methods"][k] for k in DEFENSES if k in u.get("methods", {})}})
    from ..attacks import ATTACKS

    order = {name: i for i, name in enumerate(ATTACKS)}  # the registry's order
    return sorted(rows, key=lambda r: (order.get(r["attack"], 99), r["suffix"]))


def attack_markdown(out_dir: Path = REPORTS_DIR) -> str:
    """The attack × defense figures as a Markdown table (the README's, printed by `table`)."""
    rows = attack_rows(out_dir)
    others = [(k, DEFENSES[k].label) for k in names("baseline", "peer")
              if any(k in r["defenses"] for r in rows)]  # peers only once some report ran them
    lines = ["| attack | victim acc | ASR before | BAERASER ASR | BAERASER acc | BAERASER DER | "
             + " | ".join(f"{label} DER" for _, label in others) + " |",
             "|---" * (6 + len(others)) + "|"]
    for r in rows:
        b = r["defenses"]["baeraser"]
        lines.append(f"| {r['attack']} | {r['clean_acc']:.4f} | {r['asr']:.4f} | {b['asr']:.4f} | "
                     f"{b['clean_acc']:.4f} | {b['der']:.3f} | "
                     + " | ".join(f"{r['defenses'][k]['der']:.3f}" if k in r["defenses"] else "not run"
                                  for k, _ in others)
                     + " |")
    return "\n".join(lines)


def trigger_agnostic_met(row: dict, bars: dict) -> bool | None:
    """Did a trigger-agnostic benchmark row meet its bar? None: no bar (all-to-all)."""
    if not row["backdoored_truth"]:
        return (not row["backdoored"]) or row["acc_drop_points"] <= bars["clean_acc_drop_points"]
    if row["true_target"] is None:
        return None
    return bool(row["target_flagged"] and row["asr_after"] <= bars["asr_after"]
                and row["acc_drop_points"] <= bars["acc_drop_points"])


def trigger_agnostic_markdown(path: Path = REPORTS_DIR / "benchmarks" / "trigger_agnostic.json") -> str:
    """The trigger-agnostic benchmark's rows as a Markdown table (the README's copy): the verdict,
    the flagged labels against the true target, ASR and accuracy before → after, and the time."""
    doc = json.loads(Path(path).read_text())
    lines = ["| victim | truth: target | verdict: flagged | ASR before → after | acc before → after (drop, points) "
             "| defense s / victim train s | bar met |", "|---" * 7 + "|"]
    for r in doc["rows"]:
        truth = "clean" if not r["backdoored_truth"] else ("all-to-all" if r["true_target"] is None
                                                           else str(r["true_target"]))
        verdict = ("backdoored: " + ", ".join(map(str, r["flagged"]))) if r["backdoored"] else "clean"
        asr = "–" if r["asr_before"] is None else f"{r['asr_before']:.4f} → {r['asr_after']:.4f}"
        met = trigger_agnostic_met(r, doc["bars"])
        lines.append(f"| {r['victim']} | {truth} | {verdict} | {asr} | {r['acc_before']:.4f} → {r['acc_after']:.4f} "
                     f"({r['acc_drop_points']:.2f}) | {r['defense_seconds']:.0f} / {r['victim_train_seconds']:.0f} | "
                     f"{'no bar' if met is None else ('yes' if met else 'MISSED')} |")
    return "\n".join(lines)


def reference_masks_markdown(path: Path = REPORTS_DIR / "benchmarks" / "natural_shortcuts_reference_masks.json") -> str:
    """benchmarks/reference_masks.py's tables (the README's copy): per model the labels each index
    flags (the plain one, and each relative to a reference trained on D_h alone), then the counts."""
    doc = json.loads(Path(path).read_text())
    names = list(doc["summary"])
    lines = ["| model | truth: target | " + " | ".join(f"flagged: {n}" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for victim, r in doc["rows"].items():
        truth = "clean" if r["attack"] is None else ("all-to-all" if r["true_target"] is None else str(r["true_target"]))
        cells = [", ".join(map(str, r[n]["flagged"])) or "none" for n in names]
        lines.append(f"| {victim} | {truth} | " + " | ".join(cells) + " |")
    refs = doc["references"]
    lines += ["", "| index | targets flagged | clean models judged clean | models with 6 or 8 flagged, not the target |"
              " reference: train s + mask search s |", "|---|---|---|---|---|"]
    for n, s in doc["summary"].items():
        cost = f"{refs[n]['train_seconds']:.0f} + {refs[n]['mask_seconds']:.0f}" if n in refs else "–"
        lines.append(f"| {n} | {s['targets_flagged']} of {s['single_target_victims']} | {s['clean_judged_clean']} of "
                     f"{s['clean_models']} | {s['models_with_a_shortcut_flagged']} of {s['models']} | {cost} |")
    return "\n".join(lines)


def inject_markdown(out_dir: Path = REPORTS_DIR, pattern: str = "01_inject*.json") -> str:
    """Every attack's notebook 01 figures under `out_dir` as a Markdown table (the README's
    attack-families table): ASR, accuracy cost, and how large the change x′ − x is. A grid's
    folder takes `pattern="*/01_inject.json"` (one row per run)."""
    from ..attacks import ATTACKS

    order = {name: i for i, name in enumerate(ATTACKS)}
    reports = [json.loads(f.read_text()) | {"_name": f.stem if f.parent == out_dir else f.parent.name}
               for f in sorted(out_dir.glob(pattern))]
    reports.sort(key=lambda r: (order.get(r.get("attack"), 99), r["_name"]))
    lines = ["| report or run | attack | trigger | poison rate | ASR rule | victim acc | accuracy cost (points) | ASR | "
             "L2 of x′ − x | L∞ of x′ − x |", "|---" * 10 + "|"]
    for r in reports:
        if "change_l2_mean" not in r:
            continue  # written before the change was measured
        trigger = r.get("trigger_kind", "patch")
        if trigger == "patch":
            trigger = f"{r['trigger_size']}×{r['trigger_size']} patch at {r['trigger_position']}"
        options = r.get("attack_options") or "{}"
        lines.append(f"| {r['_name']} | {r['attack']}{'' if options == '{}' else ' ' + options} | {trigger} | "
                     f"{r['poison_rate']:.0%} | {r['target_rule']} | {r['clean_acc']:.4f} | "
                     f"{r['acc_cost_points']:.2f} | {r['asr']:.4f} | {r['change_l2_mean']:.3f} | "
                     f"{r['change_linf_mean']:.3f} |")
    return "\n".join(lines)


def attack_table(out_dir: Path = REPORTS_DIR) -> str:
    """The index's attack × defense table (HTML), or nothing when no attack has both reports."""
    rows = attack_rows(out_dir)
    if not rows:
        return ""
    shown = [k for k in names("ours", "baseline", "peer", "ablation")  # as notebook 03 runs them
             if any(k in r["defenses"] for r in rows)]
    head = "".join(f"<th colspan=3>{html.escape(DEFENSES[k].label)}</th>" for k in shown)
    sub = "<th>ASR</th><th>acc</th><th>DER</th>" * len(shown)
    body = []
    for r in rows:
        cells = []
        best = max((d["der"] for d in r["defenses"].values()), default=None)
        for key in shown:
            d = r["defenses"].get(key)
            if d is None:
                cells.append("<td colspan=3><small>not run</small></td>")
                continue
            der = f"<b>{d['der']:.3f}</b>" if d["der"] == best else f"{d['der']:.3f}"
            cells.append(f"<td>{d['asr']:.4f}</td><td>{d['clean_acc']:.4f}</td><td>{der}</td>")
        links = " · ".join(f'<a href="{n}{r["suffix"]}.html">{n[:2]}</a>'
                           for n in NOTEBOOKS if (out_dir / f"{n}{r['suffix']}.html").exists())
        body.append(f"<tr><td>{html.escape(r['attack'])}<br><small>{links}</small></td>"
                    f"<td>{r['clean_model_acc']:.4f}</td><td>{r['clean_acc']:.4f}</td><td>{r['asr']:.4f}</td>"
                    f"{''.join(cells)}</tr>")
    batches_file = out_dir / "batches.json"
    timing = ""
    if batches_file.exists():
        b = json.loads(batches_file.read_text())
        timing = (f"<p>Last batch: attacks {html.escape(', '.join(b['attacks']))}, {b['seconds'] / 60:.1f} min "
                  f"of wall time, finished {html.escape(b['finished_at'])}.</p>")
    return (f"<h2>Attacks × defenses</h2><p>Evaluation split, true trigger (evaluation only). "
            f"Accuracy and ASR before defense come from notebook 01; every defense from notebook 03. "
            f"Bold: the best DER of the row.</p>{timing}"
            f"<table><tr><th rowspan=2>attack</th><th rowspan=2>clean model acc</th><th rowspan=2>victim acc</th>"
            f"<th rowspan=2>ASR before</th>{head}</tr><tr>{sub}</tr>{''.join(body)}</table>")


def example_markdown(path: Path = REPORTS_DIR / "examples" / "defend-badnets" / "defense.json") -> str:
    """The README's lines on the committed `baeraser defend` example, from its defense.json."""
    d = json.loads(Path(path).read_text())
    b, a, s = d["before"], d["after"], d["seconds"]
    folder = Path(path).parent
    top = next((q.parent for q in folder.parents if q.name == "reports"), folder.parent)  # the repository
    lines = [f"Its output is committed in `{folder.relative_to(top)}/`, the weights "
             f"excepted (git ignores `*.safetensors` under `reports/`). Measured here (2 CPU threads), on notebook "
             f"01's default BadNets victim:",
             "",
             "| figure | before | after |",
             "|---|---|---|",
             f"| accuracy, D_h's validation part (the defense steered by it) | {b['holding_val_acc']:.4f} | "
             f"{a['holding_val_acc']:.4f} |"]
    if "eval_acc" in b:
        lines.append(f"| accuracy, `--eval-data` (never seen by the defense) | {b['eval_acc']:.4f} | {a['eval_acc']:.4f} |")
    if "eval_asr" in b:
        lines.append(f"| ASR, `--eval-trigger` | {b['eval_asr']:.4f} | {a['eval_asr']:.4f} |")
    lines += ["", f"Verdict: {d['verdict']}, flagged {d['flagged']}; the defense took {s['total']:.0f} s "
                  f"(recovery {s.get('recovery', 0):.0f} s, unlearning {s.get('unlearn', 0):.0f} s)."]
    return "\n".join(lines)


def peer_sanity_markdown(path: Path = REPORTS_DIR / "benchmarks" / "peer_sanity.json",
                         main: Path = REPORTS_DIR / "03_unlearn.json") -> str:
    """The peers' sanity on the default victim as a Markdown table (the README's copy): each peer
    at its published settings (notebook 03's main report, which runs them at their defaults),
    then every setting the benchmark ran (a published one again where the code changed since); ASR, accuracy lost, seconds, and whether the bar
    is met. (The families grid runs the peers at the settings that met the bar, so its row on
    this victim is not the published one.)"""
    doc = json.loads(Path(path).read_text()) if Path(path).exists() else {"rows": {}, "bar": {}}
    bar = doc.get("bar") or {"asr_after": 0.10, "acc_drop_points": 5.0}
    lines = [f"| peer · setting | source | ASR after | accuracy lost (points) | seconds | bar (ASR ≤ {bar['asr_after']}, "
             f"≤ {bar['acc_drop_points']:g} points) |", "|---|---|---|---|---|---|"]
    methods = json.loads(Path(main).read_text()).get("methods", {}) if Path(main).exists() else {}
    for k in names("peer"):
        d = methods.get(k)
        if d is None or "none" not in methods:
            lines.append(f"| {DEFENSES[k].label} · published | notebook 03 (`reports/03_unlearn.json`) | not run yet | | | |")
            continue
        drop = 100 * (methods["none"]["clean_acc"] - d["clean_acc"])
        met = d["asr"] <= bar["asr_after"] and drop <= bar["acc_drop_points"]
        lines.append(f"| {DEFENSES[k].label} · published | notebook 03 (`reports/03_unlearn.json`) | {d['asr']:.4f} | "
                     f"{drop:.2f} | {d['seconds']:.0f} | {'met' if met else 'MISSED'} |")
    for name, x in doc["rows"].items():  # a benchmark's "published" row re-measures that setting
        lines.append(f"| {x['label']} · {name.split(' · ', 1)[-1]} | `benchmarks/peer_sanity.py` | {x['asr']:.4f} | "
                     f"{x['acc_drop_points']:.2f} | {x['seconds']:.0f} | {'met' if x['bar_met'] else 'MISSED'} |")
    return "\n".join(lines)


def persistence_markdown(path: Path = REPORTS_DIR / "benchmarks" / "persistence.json") -> str:
    """benchmarks/persistence.py's table (the README's copy): each unlearning setting's figures
    after the defense and its ASR after the attacker's re-tuning (mean over the seeds), against
    the never-backdoored reference's + the margin; the settings in order of that re-tuned ASR."""
    from .claims import KEPT_POINTS, LOW_ASR

    doc = json.loads(Path(path).read_text())
    ref, margin = doc["reference"], doc["margin"]
    seeds = ", ".join(f"{v:.4f}" for v in ref["asr_after"])
    lines = [f"Never-backdoored reference, re-tuned: mean ASR {ref['mean_asr_after']:.4f} (seeds: {seeds}), so the "
             f"bar is {ref['mean_asr_after'] + margin:.4f}. Undefended victim, re-tuned: "
             f"{doc['undefended']['mean_asr_after']:.4f}.", "",
             f"| unlearning setting | ASR after the defense | accuracy lost (points) | epoch returned | ASR re-tuned "
             f"(mean of {len(doc['seeds'])}) | stays erased (≤ reference + {margin:g}) | ASR ≤ {LOW_ASR:g} and ≤ {KEPT_POINTS:g} "
             f"points | seconds |", "|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(doc["rows"].items(), key=lambda kv: -kv[1]["mean_asr_after"]):
        lines.append(f"| {name} | {r['asr']:.4f} | {r['acc_drop_points']:.2f} | {r['chosen_epoch']} | "
                     f"{r['mean_asr_after']:.4f} | {'met' if r['stays_erased'] else 'MISSED'} | "
                     f"{'met' if r['bars_met'] else 'MISSED'} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def budget_summary(rows: dict[str, dict]) -> dict[str, dict]:
    """Per unlearning budget k (benchmarks/unlearning_budget.py): over every row (those where nothing
    was unlearned included, at their unchanged figures), how many meet each bar, all of them, and
    the mean cost ratio."""
    ks = sorted({int(k) for r in rows.values() for k in r.get("budgets", {})})
    out = {}
    for k in ks:
        got = [r["budgets"][str(k)] for r in rows.values() if str(k) in r.get("budgets", {})]
        out[str(k)] = {"rows": len(got), **{bar: sum(b["bars"][bar] for b in got) for bar in got[0]["bars"]},
                       "all_bars": sum(all(b["bars"].values()) for b in got),
                       "mean_cost_ratio": sum(b["cost_ratio"] for b in got) / len(got)}
    return out


def budget_markdown(path: Path = REPORTS_DIR / "benchmarks" / "unlearning_budget.json") -> str:
    """benchmarks/unlearning_budget.py's tables (the README's copy): per budget of unlearning epochs,
    how many families rows meet each of BAERASER's bars; then per row, the largest budget within
    the cost bar and its figures beside the longest budget's (the default's)."""
    doc = json.loads(Path(path).read_text())
    bars, rows = doc["bars"], doc["rows"]
    lines = [f"| epochs of unlearning | rows | ASR ≤ {bars['asr']:g} | ≤ {bars['acc_drop_points']:g} points lost | "
             f"cost ≤ {bars['cost_ratio']:g} | stays erased (≤ reference + {bars['reactivation_margin']:g}) | all four | "
             f"mean cost ratio |", "|---|---|---|---|---|---|---|---|"]
    summary = budget_summary(rows)
    for k, s in summary.items():
        lines.append(f"| {k} | {s['rows']} | {s['asr']} | {s['acc_drop_points']} | {s['cost_ratio']} | "
                     f"{s['stays_erased']} | {s['all_bars']} | {s['mean_cost_ratio']:.3f} |")
    shortest = min(summary, key=int) if summary else None
    drops = [r["budgets"][shortest]["acc_drop_points"] for r in rows.values()
             if not r.get("note") and shortest in r.get("budgets", {})]  # rows where something was unlearned
    if drops:
        lines += ["", f"The shortest budget ({shortest} epoch(s)) loses {min(drops):.1f} to {max(drops):.1f} points "
                      f"of accuracy on the {len(drops)} rows that unlearned."]

    def figs(b: dict) -> str:
        return f"{b['asr']:.4f} / {b['acc_drop_points']:.2f} / {b['reactivated_asr']:.4f} / {b['cost_ratio']:.2f}"

    lines += ["", "| row | victim trained (s) | recovery (s) | re-tuned reference | longest budget: ASR / points / "
                  "re-tuned / cost | largest budget within the cost bar | there: ASR / points / re-tuned / cost |",
              "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        label = f"{name} (nothing unlearned)" if r.get("note") else name
        head = f"| {label} | {r['train_seconds']:.0f} | {r['recovery_seconds']:.0f} | {r['reference_reactivated_asr']:.4f} |"
        b = r.get("budgets") or {}
        if not b:
            lines.append(f"{head} not run | | |")
            continue
        fits = [int(k) for k, v in b.items() if v["bars"]["cost_ratio"]]
        full = b[str(max(int(k) for k in b))]
        there = f"{max(fits)} | {figs(b[str(max(fits))])}" if fits else "none | "
        lines.append(f"{head} {figs(full)} | {there} |")
    return "\n".join(lines)


def peer_column_markdown(path: Path = REPORTS_DIR / "benchmarks" / "peer_column.json") -> str:
    """benchmarks/peer_column.py's tables (the README's copy): per named setting, each families row's
    figures for that peer beside the grid's figures for the same peer (its grid setting) and for
    BAERASER, then the mean DER, worst-case ASR and mean seconds over the rows run."""
    doc = json.loads(Path(path).read_text())
    lines = []
    for setting, entry in doc["settings"].items():
        method, rows = entry["defense"], entry["rows"]
        label = DEFENSES[method].label
        lines += [f"**{label} · {setting.split(' · ', 1)[-1]}**, {len(rows)} rows. The setting: {entry['setting']}.", "",
                  f"| row | {label} ASR / points lost / DER / seconds | re-tuned ASR | {label} in the grid: ASR / DER | "
                  f"BAERASER: ASR / DER | BAERASER DER ≥ this |", "|---|---|---|---|---|---|"]
        for name, r in rows.items():
            grid, ours = r["grid"].get(method), r["grid"]["baeraser"]
            in_grid = f"{grid['asr']:.4f} / {grid['der']:.3f}" if grid else "not run"
            name = name if r.get("same_victim_as_grid", True) else f"{name} (victim trained again: not the grid's)"
            lines.append(f"| {name} | {r['asr']:.4f} / {r['acc_drop_points']:.2f} / {r['der']:.3f} / {r['seconds']:.0f} | "
                         f"{r['reactivated_asr']:.4f} | {in_grid} | {ours['asr']:.4f} / {ours['der']:.3f} | "
                         f"{'yes' if ours['der'] >= r['der'] else 'no'} |")
        if rows:
            n = len(rows)
            mean = lambda xs: sum(xs) / n  # noqa: E731
            peer = list(rows.values())
            ours = [r["grid"]["baeraser"] for r in rows.values()]
            lines += ["", f"Over these {n} rows: {label} mean DER {mean([r['der'] for r in peer]):.3f}, worst-case "
                          f"ASR {max(r['asr'] for r in peer):.4f}, mean {mean([r['seconds'] for r in peer]):.0f} s; "
                          f"BAERASER (the grid's) mean DER {mean([r['der'] for r in ours]):.3f}, worst-case ASR "
                          f"{max(r['asr'] for r in ours):.4f}; BAERASER's DER ≥ {label}'s on "
                          f"{sum(o['der'] >= r['der'] for o, r in zip(ours, peer))} of {n}."]
        lines.append("")
    return "\n".join(lines).rstrip()


def reactivation_markdown(path: Path = REPORTS_DIR / "03_unlearn.json", margin: float | None = None) -> str:
    """Notebook 03's reactivation check (the README's copy): every model's ASR and accuracy after
    its defense, its ASR after the attacker's re-tuning (and the query-only attacker's, where it
    ran), and whether it stays within the never-backdoored reference's + the margin."""
    from .claims import REACTIVATION_MARGIN

    margin = REACTIVATION_MARGIN if margin is None else margin
    doc = json.loads(Path(path).read_text())
    models, query = doc["reactivation"]["models"], doc["reactivation"].get("query_only") or {}
    bar = models["clean reference"]["asr_after"] + margin
    label = {"clean reference": "never backdoored (reference)", "none": "undefended victim",
             **{k: DEFENSES[k].label for k in DEFENSES}}
    lines = ["| model | ASR after the defense | accuracy after | ASR re-tuned | ASR re-tuned, query-only | "
             f"stays erased (≤ {bar:.4f}) |", "|---|---|---|---|---|---|"]
    first = ["clean reference", "none", "baeraser", "vanilla"]
    order = [k for k in first if k in models] + [k for k in DEFENSES if k in models and k not in first]
    for k in order:
        r, q = models[k], query.get(k)
        mark = "" if k == "clean reference" else "met" if r["asr_after"] <= bar else "MISSED"
        lines.append(f"| {label.get(k, k)} | {r['asr_before']:.4f} | {r['clean_acc_before']:.4f} | {r['asr_after']:.4f} "
                     f"| {'' if q is None else format(q['asr_after'], '.4f')} | {mark} |")
    return "\n".join(lines)


def schedule_markdown(path: Path = REPORTS_DIR / "benchmarks" / "unlearning_schedule.json") -> str:
    """benchmarks/unlearning_schedule.py's tables (the README's copy): each candidate on each
    development victim with the bars it met and the choice; then the chosen setting on every
    families row beside the grid's default, and how many rows meet each bar under each."""
    return study_markdown(json.loads(Path(path).read_text()), "grid_default", "grid default (constant, 10 epochs)")


def path_markdown(path: Path = REPORTS_DIR / "benchmarks" / "path_step.json") -> str:
    """benchmarks/path_step.py's tables (the README's copy), as `schedule_markdown`'s: the chosen
    path step on every families row beside the default before it (3 cosine epochs, no path step)."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (no path step)")


def reset_markdown(path: Path = REPORTS_DIR / "benchmarks" / "weight_reset.json") -> str:
    """benchmarks/weight_reset.py's tables (the README's copy), as `schedule_markdown`'s."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (no reset)")


def invariance_markdown(path: Path = REPORTS_DIR / "benchmarks" / "stage_invariance.json") -> str:
    """benchmarks/stage_invariance.py's tables (the README's copy), as `schedule_markdown`'s."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (penultimate features only)")


def prune_markdown(path: Path = REPORTS_DIR / "benchmarks" / "trigger_channels.json") -> str:
    """benchmarks/trigger_channels.py's tables (the README's copy), as `schedule_markdown`'s."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (no pruning)")


def shift_markdown(path: Path = REPORTS_DIR / "benchmarks" / "head_shift.json") -> str:
    """benchmarks/head_shift.py's tables (the README's copy), as `schedule_markdown`'s."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (no head shift)")


def augment_markdown(path: Path = REPORTS_DIR / "benchmarks" / "augment_invariance.json") -> str:
    """benchmarks/augment_invariance.py's tables (the README's copy), as `schedule_markdown`'s."""
    return study_markdown(json.loads(Path(path).read_text()), "default", "default before (no augmented invariance)")


def study_markdown(doc: dict, before: str, before_label: str) -> str:
    """A study of candidate unlearning settings: its development table and choice, then the chosen
    setting on the families rows beside `doc["families"][row][before]`, and the rows meeting each bar."""
    from .schedule_study import BARS, bars as judge, confirmed, families_pairs

    dev = doc.get("development", {})

    def figs(f: dict) -> str:
        return f"{f['asr']:.4f} / {f['acc_drop_points']:.2f} / {f['reactivated_asr']:.4f} / {f['cost_ratio']:.2f}"

    lines = ["| development victim | re-tuned reference | " + " | ".join(doc.get("candidates", {})) + " |",
             "|---|---|" + "---|" * len(doc.get("candidates", {}))]
    for name, v in dev.items():
        cells = [f"{figs(c)} ({sum(c['bars'].values())}/{len(BARS)})" for c in v["candidates"].values()] or \
            ["empty pool: judged clean, nothing ran"] + [""] * (len(doc.get("candidates", {})) - 1)
        lines.append(f"| {name} | {v['reference_reactivated_asr']:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: ASR / points lost / re-tuned ASR / cost ratio (bars met of 4)."
                  + (f" Chosen by the rule: **{doc['chosen']}**." if doc.get("chosen") else "")]
    rows = doc.get("families", {})
    if rows:
        lines += ["", f"| families row | re-tuned reference | {before_label} | {doc['chosen']} | "
                      "bars met: before → chosen |", "|---|---|---|---|---|"]
        judged = {before_label: [], doc["chosen"]: []}  # each row's bars under each
        for name, r in rows.items():
            old = judge(r[before], r["reference_reactivated_asr"])
            judged[before_label].append(old)
            judged[doc["chosen"]].append(r["bars"])
            label = f"{name} (nothing unlearned)" if r.get("note") else name
            lines.append(f"| {label} | {r['reference_reactivated_asr']:.4f} | {figs(r[before])} | "
                         f"{figs(r['chosen'])} | {sum(old.values())} → {sum(r['bars'].values())} |")
        lines += ["", f"| rows meeting the bar (of {len(rows)}) | ASR ≤ 0.02 | ≤ 2 points lost | cost ≤ 0.25 | "
                      "stays erased | all four |", "|---|---|---|---|---|---|"]
        for who, got in judged.items():
            lines.append(f"| {who} | " + " | ".join(str(sum(g[b] for g in got)) for b in BARS)
                         + f" | {sum(all(g.values()) for g in got)} |")
        lines += ["", f"(row, bar) pairs met: {families_pairs(rows, before)} before, "
                      f"{families_pairs(rows, 'chosen')} with "
                      f"{doc['chosen']}: " + ("at least as many, so it could become the default."
                                              if confirmed(rows, rows, before) else
                                              "fewer, so it is **not** adopted; the default stays.")]
    return "\n".join(lines)
