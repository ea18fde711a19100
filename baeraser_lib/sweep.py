"""Run a grid of notebook runs: locally in a process pool, or on a Dask cluster.

    python -m baeraser_lib.sweep grids/cpu.yaml                       # local, all cores
    python -m baeraser_lib.sweep grids/cpu.yaml --workers 2 --threads 1
    python -m baeraser_lib.sweep grids/paper.yaml --scheduler tcp://10.0.0.5:8786 --artifacts /shared/artifacts
    python -m baeraser_lib.sweep grids/cpu.yaml --dry-run              # list the runs, run nothing

Each run executes its notebooks in order through papermill into `reports/<grid>/<run>/`: the
executed notebook, its HTML and its JSON, and `run.json` (status, time, parameters). A run whose
outputs and cached artifacts are complete is skipped; a failing notebook marks its run failed (the
later notebooks of that run are not started) and the grid goes on. The grid's `index.html` and
`grid.json` are rewritten as runs finish (see `grid_report`).

With `--scheduler`, runs are Dask tasks: every worker needs this package installed and must see
the same reports folder and artifacts root (a shared filesystem).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from .errors import ConfigError
from .grid import Grid, Run, load_grid, validate
from .reports import NOTEBOOKS_DIR, REPO, REPORTS_DIR, run_notebook, write_index, write_json_atomic

RUN_FILE = "run.json"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _normal(obj):
    """JSON round trip, so recorded and fresh parameters compare equal (tuples become lists)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def artifact_ids(run_dir: Path, notebooks) -> list[str]:
    """The artifact hashes a finished run's reports name (`victim_artifact`, `pool_artifact`, ...)."""
    ids = []
    for nb in notebooks:
        f = run_dir / f"{nb}.json"
        if f.exists():
            figs = json.loads(f.read_text())
            ids += [v for k, v in sorted(figs.items()) if k.endswith("_artifact") and isinstance(v, str)]
    return ids


def artifact_complete(artifacts_dir: Path, digest: str) -> bool:
    """An artifact folder `<root>/<kind>/<digest>/` with its metadata and weights."""
    from .artifacts import META

    return any((d / META).is_file() and any(d.glob("*.safetensors")) for d in artifacts_dir.glob(f"*/{digest}"))


def run_complete(run: Run, run_dir: Path, artifacts_dir: Path) -> bool:
    """True when `run` finished ok with these parameters, every notebook's executed notebook, HTML
    and JSON are there, and every artifact its reports name is still in the artifacts root."""
    record_file = run_dir / RUN_FILE
    if not record_file.exists():
        return False
    try:
        record = json.loads(record_file.read_text())
    except json.JSONDecodeError:
        return False
    if record.get("status") != "ok" or record.get("parameters") != _normal(run.parameters) \
            or record.get("notebooks") != list(run.notebooks):
        return False
    for nb in run.notebooks:
        if not all((run_dir / f"{nb}{ext}").is_file() for ext in (".json", ".html", ".ipynb")):
            return False
    return all(artifact_complete(artifacts_dir, d) for d in artifact_ids(run_dir, run.notebooks))


def execute_run(task: dict) -> dict:
    """One run, start to end, in this process (a pool worker or a Dask worker): its notebooks in
    order, each through papermill; stops at the first failure. Returns and writes its record."""
    run = Run(**task["run"])
    run_dir = Path(task["run_dir"])
    if task.get("threads"):
        for var in THREAD_VARS:  # the kernels inherit these; torch reads them when imported
            os.environ[var] = str(task["threads"])
    os.environ.setdefault("TQDM_DISABLE", "1")  # bars do not render in static HTML
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    paths = {"artifacts_dir": task["artifacts_dir"], "data_root": task["data_root"]}
    start, rows, failed = time.perf_counter(), [], None
    for nb in run.notebooks:
        if failed:
            rows.append({"notebook": nb, "status": "not run", "error": f"{failed} failed first", "seconds": 0})
            for stale in (f"{nb}.json", f"{nb}.html", f"{nb}.ipynb"):
                (run_dir / stale).unlink(missing_ok=True)
            continue
        params = {**run.own(nb, task["declared"]),
                  **{k: v for k, v in paths.items() if k in task["declared"][nb]}}
        row = run_notebook(nb, params, run_dir, nb, Path(task["notebooks_dir"]), progress=False,
                           executed_dir=run_dir)
        rows.append(row)
        if row["status"] != "ok":
            failed = nb
    record = {"run_id": run.run_id, "axes": _normal(run.axes), "parameters": _normal(run.parameters),
              "notebooks": list(run.notebooks), "status": "failed" if failed else "ok",
              "failed_notebook": failed, "steps": rows, "seconds": round(time.perf_counter() - start, 1),
              "threads": task.get("threads"), "host": socket.gethostname(),
              "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(run_dir / RUN_FILE, record)
    return record


def check_writable(path: Path, what: str) -> Path:
    """Create `path` if needed and prove a file can be written there; ConfigError otherwise."""
    path = Path(path).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(f"{what} {path} is not writable: {err.strerror or err}") from None
    return path


def local_slots(workers: int | None, threads: int | None) -> tuple[int, int]:
    """Workers × torch threads that fit the machine's cores (default: one run at a time, all cores)."""
    cores = os.cpu_count() or 1
    for name, v in (("workers", workers), ("threads", threads)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(f"--{name} must be a positive integer, got {v!r}")
    workers = workers or 1
    threads = threads or max(1, cores // workers)
    if workers * threads > cores:
        raise ConfigError(f"{workers} workers × {threads} threads = {workers * threads} exceeds the {cores} cores "
                          f"of this machine: runs would slow each other down")
    return workers, threads


def connect(scheduler: str, timeout: float = 10.0):
    """A Dask client on `scheduler` (tcp://host:port), or a ConfigError that says why not."""
    if "://" not in scheduler:
        raise ConfigError(f"--scheduler wants an address like tcp://host:8786, got {scheduler!r}")
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler needs the package 'distributed' (pip install distributed)") from None
    try:
        return Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None


def sweep(grid: Grid, out_root: Path = REPORTS_DIR, artifacts_dir: Path = REPO / "artifacts",
          data_root: Path = REPO / "data", notebooks_dir: Path = NOTEBOOKS_DIR, scheduler: str | None = None,
          workers: int | None = None, threads: int | None = None, rerun: bool = False,
          dry_run: bool = False, only: list[str] | None = None, scheduler_timeout: float = 10.0,
          log=print) -> list[dict]:
    """Validate `grid`, then execute its runs that are not complete; return every run's record.

    Everything that can be checked is checked before the first run: the grid, the folders, the
    executor (cores, or the scheduler's reachability)."""
    from .grid_report import write_grid_index

    runs, declared = validate(grid, notebooks_dir)
    if only:
        unknown = sorted(set(only) - {r.run_id for r in runs})
        if unknown:
            raise ConfigError(f"unknown run(s) {unknown}; the grid has {[r.run_id for r in runs]}")
        runs = [r for r in runs if r.run_id in only]
    grid_dir = out_root / grid.name
    if dry_run:
        for r in runs:
            done = run_complete(r, grid_dir / r.run_id, Path(artifacts_dir).resolve())
            log(f"{r.run_id}: {'complete, would skip' if done and not rerun else 'would run'}  {r.parameters}")
        return []
    grid_dir = check_writable(grid_dir, "reports folder")
    artifacts_dir = check_writable(artifacts_dir, "artifacts root")
    data_root = Path(data_root).resolve()
    client = connect(scheduler, scheduler_timeout) if scheduler else None
    if client is None:
        workers, threads = local_slots(workers, threads)
    records, todo = {}, []
    for r in runs:
        if not rerun and run_complete(r, grid_dir / r.run_id, artifacts_dir):
            record = json.loads((grid_dir / r.run_id / RUN_FILE).read_text())
            records[r.run_id] = {**record, "skipped": True}
            log(f"[skip] {r.run_id}: complete")
        else:
            todo.append({"run": {"run_id": r.run_id, "axes": r.axes, "notebooks": r.notebooks,
                                 "parameters": r.parameters},
                         "run_dir": str(grid_dir / r.run_id), "declared": declared,
                         "notebooks_dir": str(Path(notebooks_dir).resolve()), "artifacts_dir": str(artifacts_dir),
                         "data_root": str(data_root), "threads": threads})
    where = f"Dask scheduler {scheduler}" if client else f"{workers} local worker(s) × {threads} thread(s)"
    log(f"grid {grid.name}: {len(runs)} runs, {len(todo)} to run on {where}, {len(runs) - len(todo)} complete")
    start = time.perf_counter()

    def finished(record: dict) -> None:
        records[record["run_id"]] = record
        err = "" if record["status"] == "ok" else \
            f": {next(s['error'] for s in record['steps'] if s['status'] == 'failed')}"
        log(f"[{record['status']}] {record['run_id']} in {record['seconds']:.0f} s{err}")
        write_grid_index(grid, grid_dir, [records[r.run_id] for r in runs if r.run_id in records])

    try:
        for record in _execute(todo, client, workers):
            finished(record)
    finally:
        if client is not None:
            client.close()
    ordered = [records[r.run_id] for r in runs if r.run_id in records]
    write_grid_index(grid, grid_dir, ordered, sweep_seconds=round(time.perf_counter() - start, 1) if todo else None)
    write_index(Path(out_root))  # the reports' front page links every grid
    return ordered


def rebuild_index(grid: Grid, out_root: Path = REPORTS_DIR) -> Path:
    """index.html and grid.json again from the runs' own records (nothing runs)."""
    from .grid_report import write_grid_index

    grid_dir = out_root / grid.name
    runs = grid.runs()
    records = [json.loads((grid_dir / r.run_id / RUN_FILE).read_text()) for r in runs
               if (grid_dir / r.run_id / RUN_FILE).exists()]
    if not records:
        raise ConfigError(f"no run records under {grid_dir}: run the grid first")
    page = write_grid_index(grid, grid_dir, records)
    write_index(Path(out_root))
    return page


def _execute(tasks: list[dict], client, workers: int):
    """Yield each task's record as it finishes: on Dask, in a process pool, or in this process."""
    if not tasks:
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="runs", unit="run")
    try:
        if client is not None:
            from distributed import as_completed

            futures = {client.submit(execute_run, t, key=f"baeraser-{Path(t['run_dir']).parent.name}-"
                                     f"{t['run']['run_id']}-{time.time_ns()}", pure=False): t for t in tasks}
            for fut in as_completed(list(futures), loop=client.loop):
                yield _record_or_crash(fut.result, futures[fut])
                bar.update()
        elif workers == 1:
            for t in tasks:
                yield _record_or_crash(lambda t=t: execute_run(t), t)
                bar.update()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed as done

            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(execute_run, t): t for t in tasks}
                for fut in done(futures):
                    yield _record_or_crash(fut.result, futures[fut])
                    bar.update()
    finally:
        bar.close()


def _record_or_crash(get, task: dict) -> dict:
    """The run's record; if the worker itself died (not a notebook), a failed record saying so."""
    try:
        return get()
    except Exception as err:  # a lost worker, a full disk: the grid goes on
        run = task["run"]
        record = {"run_id": run["run_id"], "axes": _normal(run["axes"]), "parameters": _normal(run["parameters"]),
                  "notebooks": list(run["notebooks"]), "status": "failed", "failed_notebook": None,
                  "steps": [{"notebook": "(worker)", "status": "failed", "error": f"{type(err).__name__}: {err}",
                             "seconds": 0}], "seconds": 0,
                  "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            write_json_atomic(Path(task["run_dir"]) / RUN_FILE, record)
        except OSError:
            pass
        return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m baeraser_lib.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("grid", type=Path, help="a grid file (YAML), e.g. grids/cpu.yaml")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler address, tcp://host:port (default: local)")
    ap.add_argument("--workers", type=int, default=None, help="local runs at a time (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per local run (default: cores / workers)")
    ap.add_argument("--artifacts", type=Path, default=REPO / "artifacts",
                    help="the artifacts root every run shares (default: artifacts/)")
    ap.add_argument("--data", type=Path, default=REPO / "data", help="the data root (default: data/)")
    ap.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; the grid writes to <out>/<name>/")
    ap.add_argument("--only", nargs="+", default=None, metavar="RUN", help="run only these runs (by name)")
    ap.add_argument("--rerun", action="store_true", help="run complete runs again")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and what would be skipped")
    ap.add_argument("--index-only", action="store_true", help="rebuild index.html and grid.json from the runs' records")
    args = ap.parse_args(argv)
    try:
        grid = load_grid(args.grid)
        if args.index_only:
            print(rebuild_index(grid, args.out))
            return 0
        records = sweep(grid, args.out, args.artifacts, args.data, scheduler=args.scheduler, workers=args.workers,
                        threads=args.threads, rerun=args.rerun, dry_run=args.dry_run, only=args.only)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    failed = [r["run_id"] for r in records if r["status"] != "ok"]
    print(f"grid {grid.name}: {len(records) - len(failed)} ok, {len(failed)} failed {failed or ''}; "
          f"index: {args.out / grid.name / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
