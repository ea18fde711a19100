"""Run the notebooks through papermill and export HTML with nbconvert.

    baeraser report run                      # all notebooks, default parameters
    baeraser report run --only 01_inject -p dataset mnist -p download true
    baeraser report run --attacks all        # 01 → 03 once per attack
    baeraser report index                    # rebuild reports/index.html
    baeraser report table                    # attack × defense table, Markdown
    baeraser report offline                  # make every HTML report under reports/ open offline
    baeraser report compact                  # shrink them (compact CSS, 256-colour figures)
    baeraser report readme [--check]         # rewrite the README's generated tables (see `readme`)

(`python -m baeraser_lib.lab.runner ...` is the same command.)
The `.py` (jupytext percent format) of each notebook is what runs, so a report always reflects
the source. Each notebook writes `<reports_dir>/<report_name>.json`, a flat object of its key
figures; the runner writes `<report_name>.html`, `runs.json` (each report's last good run) and
`index.html`, and exits non-zero if any notebook failed.

Reports are never lost:
- a run whose parameters differ from the notebooks' defaults (the attack aside) writes under its
  own name, `reports/runs/<name>/` (`--name`, or a name made of the differing parameters), so the
  default reports and their index survive any other run;
- each notebook runs in a staging folder; only a run that succeeds replaces its report. A failing
  run's page (showing the error) goes to `failed/<report_name>.html`, recorded in `failures.json`
  and linked from the index, and the last good report stays where it was.
With `--attacks`, the notebooks run once per attack: the default attack's reports keep their
plain names, the others carry the attack (`01_inject-trojannn.json`); `batches.json` records the
wall time of the whole batch, and the index gains an attack × defense table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ..errors import ConfigError
from .notebooks import NOTEBOOKS, NOTEBOOKS_DIR, RUNNER_PARAMS, parameters_of
from .reports import REPORTS_DIR, write_json_atomic
from .site import attack_markdown, inject_markdown, verdict_markdown, write_index

DEFAULT_ATTACK = "badnets"  # its reports keep the plain names


RUNS_DIR = "runs"  # reports/runs/<name>/: runs whose parameters differ from the defaults
SAME_RESULTS = ("attack", "device", "download")  # parameters that do not make a run another run
FAILED_DIR = "failed"  # <out>/failed/<report>.html: the page of a run that failed
# Kernels that start side by side can race for the same TCP port (jupyter_client picks free ports,
# the kernel binds them later: `ZMQError: Address already in use`). A run that failed before any
# cell ran starts again, up to this many tries in all; a run that failed in a cell never does.
KERNEL_START_TRIES = 3


def run_notebook(name: str, params: dict, out_dir: Path, report_name: str | None = None,
                 notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True,
                 executed_dir: Path | None = None) -> dict:
    """Execute one notebook with `params` in a staging folder; return its status row. On success
    its JSON and HTML replace `out_dir`'s and the executed notebook goes to `executed_dir`
    (default `out_dir/.executed`); on failure only `out_dir/failed/<report_name>.html` is written
    (the row's `page`), and the last good report is left as it was."""
    import jupytext
    import nbformat
    import papermill as pm

    from .html import write_notebook_html

    report_name = report_name or name
    out_dir.mkdir(parents=True, exist_ok=True)
    executed_dir = executed_dir or out_dir / ".executed"
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".tmp-{report_name}-pid{os.getpid()}-"))  # see atomic
    try:
        executed_path = stage / f"{report_name}.ipynb"
        nb = jupytext.read(notebooks_dir / f"{name}.py")
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        full = {**params, "reports_dir": str(stage.resolve()), "report_name": report_name}
        start = time.perf_counter()
        for attempt in range(1, KERNEL_START_TRIES + 1):
            status, error = "ok", None
            try:
                pm.execute_notebook(nb, str(executed_path), parameters=full, cwd=str(notebooks_dir),
                                    kernel_name="python3", progress_bar=progress)
            except pm.PapermillExecutionError as err:
                status, error = "failed", f"{err.ename}: {err.evalue}"
            except Exception as err:  # kernel died, timeout, a port taken at start-up, ...
                status, error = "failed", f"{type(err).__name__}: {err}"
                if attempt < KERNEL_START_TRIES and _no_cell_ran(executed_path):
                    time.sleep(0.5 * attempt)
                    continue
            break
        seconds = time.perf_counter() - start
        if status == "ok" and not (stage / f"{report_name}.json").exists():
            status, error = "failed", "the notebook ran but wrote no report JSON"
        row = {"notebook": name, "status": status, "error": error, "seconds": round(seconds, 1),
               "attempts": attempt, "parameters": params,
               "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        if status == "ok":  # the figures and the notebook first: a failed export must not lose them
            executed_dir.mkdir(exist_ok=True)
            os.replace(stage / f"{report_name}.json", out_dir / f"{report_name}.json")
            os.replace(executed_path, executed_dir / f"{report_name}.ipynb")
            executed_path = executed_dir / f"{report_name}.ipynb"
        page = out_dir / f"{report_name}.html" if status == "ok" else out_dir / FAILED_DIR / f"{report_name}.html"
        if status == "ok":
            page.unlink(missing_ok=True)  # never the last run's page beside this run's figures
        if executed_path.exists():
            try:
                page.parent.mkdir(exist_ok=True)
                write_notebook_html(nbformat.read(executed_path, as_version=4), page)
                if status != "ok":
                    row["page"] = f"{FAILED_DIR}/{report_name}.html"
            except Exception as err:  # nbconvert: the run's figures stand, its page is missing
                row["html_error"] = f"{type(err).__name__}: {err}"
        return row
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _no_cell_ran(executed_path: Path) -> bool:
    """True when a failed run executed no code cell (its kernel never started), so running it again
    repeats nothing: a cell may have side effects, a kernel that failed to start has none."""
    import nbformat

    if not executed_path.exists():
        return True
    try:
        cells = nbformat.read(executed_path, as_version=4).cells
    except Exception:  # half-written by papermill: treat as run, never repeat blindly
        return False
    return all(c.get("execution_count") is None and not c.get("outputs")
               for c in cells if c.cell_type == "code")


def differing(params: dict, declared: dict[str, dict]) -> dict:
    """The parameters whose values differ from the notebooks' defaults, `SAME_RESULTS` aside (each
    attack's reports have their own names in the main folder; the device and the permission to
    download do not change what a run measures)."""
    out = {}
    for k, v in params.items():
        defaults = [d[k] for d in declared.values() if k in d]
        if k not in SAME_RESULTS and defaults and not any(_same(v, d) for d in defaults):
            out[k] = v
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def run_name(differs: dict) -> str:
    """A folder name made of the differing parameters (`dataset-cifar10-epochs-2`). Folders
    (`artifacts_dir`, `data_root`) and long names are summed up by a hash of all of them."""
    def slug(v) -> str:
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
        return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_.") or "_"

    shown = {k: v for k, v in differs.items() if k not in ("artifacts_dir", "data_root")}
    name = "-".join(f"{slug(k)}-{slug(v)}" for k, v in sorted(shown.items())) or "custom"
    if len(name) > 60 or len(shown) < len(differs):
        digest = hashlib.sha256(json.dumps(differs, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name = name[:60].rstrip("-_.") + "-" + digest
    return name


def output_folder(out_dir: Path, params: dict, notebooks: list[str], name: str | None = None,
                  notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """Where a run writes: `out_dir`, unless `out_dir` is the main reports folder and the run is
    not the default one (other parameters, or a `name`): then `out_dir/runs/<name>`."""
    from ..safepath import child

    if Path(out_dir).resolve() != REPORTS_DIR.resolve():
        return Path(out_dir)
    declared = {n: parameters_of(notebooks_dir / f"{n}.py") for n in notebooks
                if (notebooks_dir / f"{n}.py").exists()}
    differs = differing(params, declared)
    if not differs and name is None:
        return Path(out_dir)
    try:
        return child(Path(out_dir) / RUNS_DIR, name or run_name(differs), "run name (--name)")
    except ConfigError as err:
        raise SystemExit(str(err)) from None


def _record(out_dir: Path, report: str, row: dict) -> None:
    """runs.json keeps each report's last good run; failures.json its last failure since then."""
    runs_file, fail_file = out_dir / "runs.json", out_dir / "failures.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() else {}
    fails = json.loads(fail_file.read_text()) if fail_file.exists() else {}
    if row["status"] == "ok":
        runs[report] = row
        if fails.pop(report, None) is not None:
            (out_dir / FAILED_DIR / f"{report}.html").unlink(missing_ok=True)
        write_json_atomic(runs_file, runs)
    else:
        fails[report] = row
    if fails or fail_file.exists():
        write_json_atomic(fail_file, fails)


def _parse_params(pairs: list[list[str]]) -> dict:
    return {key: yaml.safe_load(value) for key, value in pairs or []}


def run(notebooks: list[str], params: dict, out_dir: Path = REPORTS_DIR, suffix: str = "",
        notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True, name: str | None = None) -> list[dict]:
    """Run `notebooks` in order with `params` (each gets the ones it declares), then index.
    A run that is not the default one writes to `output_folder(...)` (see the module text)."""
    from ..safepath import check_name

    try:
        for n in notebooks:
            check_name(f"{n}{suffix}", "report name (notebook and --suffix)")
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    unknown_nb = [n for n in notebooks if not (notebooks_dir / f"{n}.py").exists()]
    if unknown_nb:
        known = sorted(p.stem for p in notebooks_dir.glob("*.py"))
        raise SystemExit(f"unknown notebook(s) {unknown_nb}; available: {known}")
    declared = {n: parameters_of(notebooks_dir / f"{n}.py") for n in notebooks}
    unknown = sorted(set(params) - set().union(*declared.values()) | (set(params) & set(RUNNER_PARAMS)))
    if unknown:
        raise SystemExit(f"unknown parameter(s) {unknown}; the notebooks declare "
                         f"{sorted(set().union(*declared.values()) - set(RUNNER_PARAMS))}")
    from .grid import check_parameters

    every = {}
    for d in declared.values():
        every.update(d)
    try:  # the sweep's checks: a bad dataset or a NaN fails here, before any kernel starts
        check_parameters(params, every, notebooks)
    except ConfigError as err:
        raise SystemExit(f"bad parameters: {err}") from None
    # Progress bars do not render in static HTML (epoch lines still print), so the kernels get
    # TQDM_DISABLE=1. tqdm reads its environment when it is imported: importing it here first
    # keeps the runner's own per-cell bar (papermill's) on.
    import tqdm.auto  # noqa: F401

    os.environ.setdefault("TQDM_DISABLE", "1")
    out_dir = output_folder(out_dir, params, notebooks, name, notebooks_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for nb in notebooks:
        own = {k: v for k, v in params.items() if k in declared[nb]}
        row = run_notebook(nb, own, out_dir, f"{nb}{suffix}", notebooks_dir, progress)
        results.append(row)
        _record(out_dir, f"{nb}{suffix}", row)
        write_index(out_dir)
        if out_dir.parent.name == RUNS_DIR:  # the main index links this run's folder
            write_index(out_dir.parent.parent)
        where = row.get("page") or f"{out_dir / nb}{suffix}.html"
        print(f"[{row['status']}] {nb}{suffix} in {row['seconds']} s" + (f": {row['error']}" if row["error"] else "")
              + f" → {where}", flush=True)
    return results


def run_attacks(attacks: list[str], notebooks: list[str], params: dict, out_dir: Path = REPORTS_DIR,
                notebooks_dir: Path = NOTEBOOKS_DIR, progress: bool = True, name: str | None = None) -> list[dict]:
    """Run `notebooks` once per attack (names as in the module docstring); record the batch."""
    from ..attacks import ATTACKS

    attacks = list(ATTACKS) if attacks == ["all"] else attacks
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown attack(s) {unknown}; choose from {sorted(ATTACKS)} or 'all'")
    if "attack" in params:
        raise SystemExit("give the attacks with --attacks, not with -p attack")
    out_dir = output_folder(out_dir, params, notebooks, name, notebooks_dir)
    start, results = time.perf_counter(), []
    for attack in attacks:
        suffix = "" if attack == DEFAULT_ATTACK else f"-{attack}"
        own = notebooks
        if "04_ablations" in notebooks:  # its ablations resize and move a patch with one target
            from .ablations import check_ablation_attack
            from ..params import attack_config

            p = {**parameters_of(notebooks_dir / "04_ablations.py"), **params, "attack": attack}  # as 04 sees them
            try:
                check_ablation_attack(attack_config(p), p["dataset"])
            except ConfigError as err:
                own = [n for n in notebooks if n != "04_ablations"]
                print(f"[skip] 04_ablations{suffix}: {err}", flush=True)
        results += run(own, {**params, "attack": attack}, out_dir, suffix, notebooks_dir, progress)
    write_json_atomic(out_dir / "batches.json", {
        "attacks": attacks, "notebooks": notebooks, "parameters": params,
        "seconds": round(time.perf_counter() - start, 1),
        "status": "ok" if all(r["status"] == "ok" for r in results) else "failed",
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    write_index(out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baeraser report", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks and write HTML + JSON reports")
    r.add_argument("--only", nargs="+", default=None, help=f"notebooks to run (default: {NOTEBOOKS})")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="a parameter for every notebook declaring it; VALUE is read as YAML (0.1, true, null, [1,2])")
    r.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports folder (default: reports/)")
    r.add_argument("--suffix", default="", help="appended to report names, e.g. -trojannn")
    r.add_argument("--name", default=None,
                   help="write to reports/runs/NAME/ (runs with non-default parameters go to reports/runs/ anyway, "
                        "named after the parameters they change)")
    r.add_argument("--attacks", nargs="+", default=None, metavar="ATTACK",
                   help="run the notebooks once per attack ('all': every registered one)")
    r.add_argument("--no-progress", action="store_true", help="hide papermill's per-cell progress bar")
    i = sub.add_parser("index", help="rebuild index.html from the reports folder")
    i.add_argument("--out", type=Path, default=REPORTS_DIR)
    t = sub.add_parser("table", help="print the attack × defense table as Markdown")
    t.add_argument("--out", type=Path, default=REPORTS_DIR)
    j = sub.add_parser("injects", help="print every attack's notebook 01 figures as Markdown")
    j.add_argument("--out", type=Path, default=REPORTS_DIR)
    j.add_argument("--pattern", default="01_inject*.json", help="e.g. '*/01_inject.json' in a grid's folder")
    o = sub.add_parser("offline", help="make every HTML report under a folder open offline (no CDN scripts)")
    o.add_argument("--out", type=Path, default=REPORTS_DIR)
    c = sub.add_parser("compact", help="shrink every HTML report under a folder (compact CSS, 256-colour figures)")
    c.add_argument("--out", type=Path, default=REPORTS_DIR)
    v = sub.add_parser("verdicts", help="print an ablation report's claims table as Markdown")
    v.add_argument("--out", type=Path, default=REPORTS_DIR)
    v.add_argument("--report", default="04_ablations")
    m = sub.add_parser("readme", help="rewrite the README's generated tables from the committed JSON")
    m.add_argument("--readme", type=Path, default=REPORTS_DIR.parent / "README.md")
    m.add_argument("--check", action="store_true", help="only list the stale tables (exit 1 if any)")
    args = ap.parse_args(argv)
    if args.cmd == "readme":
        from .readme import update

        try:
            names = update(args.readme, check=args.check)
        except ConfigError as err:
            print(f"baeraser report readme: error: {err}", file=sys.stderr)
            return 2
        print(f"{'stale' if args.check else 'rewritten'}: {', '.join(names)}" if names else "every table is current")
        return 1 if names and args.check else 0
    if args.cmd == "verdicts":
        try:
            print(verdict_markdown(args.out, args.report))
        except ConfigError as err:
            print(f"baeraser report verdicts: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "offline":
        from .html import make_offline

        print(make_offline(args.out))
        return 0
    if args.cmd == "compact":
        from .html import compact_reports

        print(compact_reports(args.out))
        return 0
    if args.cmd == "index":
        print(write_index(args.out))
        return 0
    if args.cmd == "injects":
        print(inject_markdown(args.out, args.pattern))
        return 0
    if args.cmd == "table":
        print(attack_markdown(args.out))
        return 0
    if args.attacks:
        if args.suffix:
            raise SystemExit("--suffix and --attacks do not mix: each attack names its own reports")
        results = run_attacks(args.attacks, args.only or NOTEBOOKS, _parse_params(args.param), args.out,
                              progress=not args.no_progress, name=args.name)
    else:
        results = run(args.only or NOTEBOOKS, _parse_params(args.param), args.out, args.suffix,
                      progress=not args.no_progress, name=args.name)
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    print(f"reports: {len(results) - len(failed)} ok, {len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
