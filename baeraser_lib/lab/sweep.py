"""Run a grid of notebook runs: locally in a process pool, or on a Dask cluster.

    baeraser sweep grids/cpu.yaml                       # local, all cores
    baeraser sweep grids/cpu.yaml --workers 2 --threads 1
    baeraser sweep grids/paper.yaml --scheduler tcp://10.0.0.5:8786 --artifacts /shared/artifacts
    baeraser sweep grids/cpu.yaml --dry-run              # list the runs, run nothing

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
import hashlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from ..artifacts import git_commit
from ..errors import ConfigError
from ..safepath import child
from .grid import Grid, Run, load_grid, validate
from .notebooks import NOTEBOOKS_DIR, RUNNER_PARAMS
from .reports import REPO, REPORTS_DIR, write_json_atomic
from .runner import run_notebook
from .site import write_index

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
    from ..artifacts import META

    return any((d / META).is_file() and any(d.glob("*.safetensors")) for d in artifacts_dir.glob(f"*/{digest}"))


def code_digest(notebook: Path) -> str:
    """A hash of a notebook's code cells, its parameters cell excepted (its values are hashed as
    parameters): an edit of the code makes earlier runs incomplete, an edit of the prose does not."""
    import jupytext

    nb = jupytext.read(notebook)
    code = [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()[:16]


def fingerprint(run: Run, declared: dict[str, dict], codes: dict[str, str], data_root: str) -> str:
    """What a run's results depend on: every notebook's full parameters (defaults included, and
    the data root) and its code (`codes`: each notebook's `code_digest`). Where artifacts and
    reports are written does not change them."""
    parts = {}
    for nb in run.notebooks:
        full = {**declared[nb], **run.own(nb, declared)}
        if "data_root" in full:
            full["data_root"] = data_root
        for k in ("artifacts_dir", *RUNNER_PARAMS):
            full.pop(k, None)
        parts[nb] = {"parameters": full, "code": codes[nb]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_complete(run: Run, run_dir: Path, artifacts_dir: Path, digest: str) -> bool:
    """True when `run` finished ok with this fingerprint (parameters, data root, notebook code),
    every notebook's executed notebook, HTML and JSON are there, and every artifact its reports
    name is still in the artifacts root."""
    record = read_record(run_dir)
    if record is None or record.get("status") != "ok" or record.get("fingerprint") != digest \
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
    threads = task.get("threads") or _dask_worker_threads()
    if threads:
        for var in THREAD_VARS:  # the kernels inherit these; torch reads them when imported
            os.environ[var] = str(threads)
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
            for stale in (f"{nb}.json", f"{nb}.html", f"{nb}.ipynb"):  # an earlier success's, not this run's
                (run_dir / stale).unlink(missing_ok=True)
    record = {"run_id": run.run_id, "axes": _normal(run.axes), "parameters": _normal(run.parameters),
              "notebooks": list(run.notebooks), "status": "failed" if failed else "ok",
              "failed_notebook": failed, "steps": rows, "seconds": round(time.perf_counter() - start, 1),
              "fingerprint": task["fingerprint"], "data_root": task["data_root"],
              "threads": threads, "host": socket.gethostname(), "commit": git_commit(),
              "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(run_dir / RUN_FILE, record)
    return record


def cores() -> int:
    """The cores this process may use (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _dask_worker_threads() -> int | None:
    """Inside a Dask worker: the cores per worker thread, so its concurrent runs do not
    oversubscribe the machine; elsewhere None (the caller's limit, or torch's default)."""
    try:
        from distributed import get_worker

        return max(1, cores() // get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


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
    n = cores()
    for name, v in (("workers", workers), ("threads", threads)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ConfigError(f"--{name} must be a positive integer, got {v!r}")
    workers = workers or 1
    threads = threads or max(1, n // workers)
    if workers * threads > n:
        raise ConfigError(f"{workers} workers × {threads} threads = {workers * threads} exceeds the {n} cores "
                          f"of this machine: runs would slow each other down")
    return workers, threads


def probe_scheduler(address: str, timeout: float = 10.0) -> None:
    """ConfigError unless a Dask scheduler answers at `address` within `timeout` seconds, overall.

    Asks the peer for its identity over Dask's own comm, under one deadline for the connection,
    the handshake and the reply, in a thread of its own (so it also works where an event loop
    already runs). A closed port, a silent listener and a server of another protocol all end
    here with a message, instead of a client that waits for ever."""
    import asyncio
    import concurrent.futures

    from distributed.comm import connect as comm_connect

    async def identity():
        comm = await comm_connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def ask():
        return asyncio.run(asyncio.wait_for(identity(), timeout))

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        reply = pool.submit(ask).result(timeout + 5)
    except (asyncio.TimeoutError, concurrent.futures.TimeoutError, TimeoutError):
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: no Dask answer within {timeout:g} s "
                          f"(is a Dask scheduler listening there?)") from None
    except OSError as err:  # refused, reset, unreachable (Dask's CommClosedError is an OSError too)
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    except Exception as err:  # the peer answered with something that is not Dask's protocol
        raise ConfigError(f"the peer at {address} is not a Dask scheduler: it does not speak Dask's protocol "
                          f"({type(err).__name__})") from None
    finally:
        pool.shutdown(wait=False)
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ConfigError(f"the peer at {address} is not a Dask scheduler (it says it is a {kind!r})")


def connect(scheduler: str, timeout: float = 10.0):
    """A Dask client on `scheduler` (tcp://host:port), or a ConfigError that says why not."""
    if "://" not in scheduler:
        raise ConfigError(f"--scheduler wants an address like tcp://host:8786, got {scheduler!r}")
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler needs the package 'distributed' (pip install distributed)") from None
    probe_scheduler(scheduler, timeout)  # a hard deadline: a peer that is not Dask never answers the client
    try:
        client = Client(scheduler, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as err:
        client.close()
        raise ConfigError(f"the Dask scheduler at {scheduler} has no workers ({err})") from None
    return client


def _worker_check(notebooks_dir: str, artifacts_dir: str, grid_dir: str) -> str | None:
    """Run on every Dask worker before the grid: the package imports, the notebooks are there,
    the shared folders can be written. None when all is well, else what is wrong."""
    try:
        import baeraser_lib  # noqa: F401
    except ImportError as err:
        return f"cannot import baeraser_lib ({err}): install this repository on the worker"
    if not Path(notebooks_dir).is_dir():
        return f"no notebooks folder {notebooks_dir}"
    try:
        for folder in (artifacts_dir, grid_dir):
            check_writable(Path(folder), "folder")
    except ConfigError as err:
        return f"{err} (the reports folder and artifacts root must be shared by every worker)"
    return None


def check_workers(client, notebooks_dir: Path, artifacts_dir: Path, grid_dir: Path) -> None:
    problems = client.run(_worker_check, str(notebooks_dir), str(artifacts_dir), str(grid_dir))
    bad = {w: p for w, p in problems.items() if p}
    if bad:
        raise ConfigError("Dask workers cannot run this grid: " + "; ".join(f"{w}: {p}" for w, p in bad.items()))


def sweep(grid: Grid, out_root: Path = REPORTS_DIR, artifacts_dir: Path = REPO / "artifacts",
          data_root: Path = REPO / "data", notebooks_dir: Path = NOTEBOOKS_DIR, scheduler: str | None = None,
          workers: int | None = None, threads: int | None = None, rerun: bool = False,
          dry_run: bool = False, only: list[str] | None = None, scheduler_timeout: float = 10.0,
          log=print) -> list[dict]:
    """Validate `grid`, then execute its runs that are not complete; return the records of the
    runs asked for (all, or `only`). The index covers every run of the grid on disk.

    Everything that can be checked is checked before the first run: the grid, the folders, the
    executor (cores; or the scheduler, its workers, their package and shared folders)."""
    from .grid_report import write_grid_index

    all_runs, declared = validate(grid, notebooks_dir)
    runs = all_runs
    if only:
        unknown = sorted(set(only) - {r.run_id for r in all_runs})
        if unknown:
            raise ConfigError(f"unknown run(s) {unknown}; the grid has {[r.run_id for r in all_runs]}")
        runs = [r for r in all_runs if r.run_id in only]
    grid_dir = child(Path(out_root).resolve(), grid.name, "grid name")
    notebooks_dir = Path(notebooks_dir).resolve()
    data_root = Path(data_root).resolve()
    codes = {nb: code_digest(notebooks_dir / f"{nb}.py") for nb in grid.notebooks}  # once per notebook
    digests = {r.run_id: fingerprint(r, declared, codes, str(data_root)) for r in runs}
    if dry_run:
        for r in runs:
            done = run_complete(r, grid_dir / r.run_id, Path(artifacts_dir).resolve(), digests[r.run_id])
            log(f"{r.run_id}: {'complete, would skip' if done and not rerun else 'would run'}  {r.parameters}")
        return []
    client = connect(scheduler, scheduler_timeout) if scheduler else None  # before anything is created
    try:
        grid_dir = check_writable(grid_dir, "reports folder")
        artifacts_dir = check_writable(artifacts_dir, "artifacts root")
    except ConfigError:
        if client is not None:
            client.close()
        raise
    if client is None:
        workers, threads = local_slots(workers, threads)
    else:
        try:
            check_workers(client, notebooks_dir, artifacts_dir, grid_dir)
        except ConfigError:
            client.close()
            raise
    records, todo = {}, []
    for r in runs:
        if not rerun and run_complete(r, grid_dir / r.run_id, artifacts_dir, digests[r.run_id]):
            records[r.run_id] = {**read_record(grid_dir / r.run_id), "skipped": True}
            log(f"[skip] {r.run_id}: complete")
        else:
            todo.append({"run": {"run_id": r.run_id, "axes": r.axes, "notebooks": r.notebooks,
                                 "parameters": r.parameters},
                         "run_dir": str(grid_dir / r.run_id), "declared": declared,
                         "notebooks_dir": str(notebooks_dir), "artifacts_dir": str(artifacts_dir),
                         "data_root": str(data_root), "threads": threads, "fingerprint": digests[r.run_id]})
    where = f"Dask scheduler {scheduler}" if client else f"{workers} local worker(s) × {threads} thread(s)"
    log(f"grid {grid.name}: {len(runs)} runs, {len(todo)} to run on {where}, {len(runs) - len(todo)} complete")
    start = time.perf_counter()

    def index(sweep_seconds=None) -> None:
        """Every run of the grid with a record: this sweep's, else the one on disk."""
        every = [records.get(r.run_id) or read_record(grid_dir / r.run_id) for r in all_runs]
        write_grid_index(grid, grid_dir, [rec for rec in every if rec], sweep_seconds=sweep_seconds)

    try:
        for record in _execute(todo, client, workers):
            records[record["run_id"]] = record
            err = "" if record["status"] == "ok" else \
                f": {next(s['error'] for s in record['steps'] if s['status'] == 'failed')}"
            log(f"[{record['status']}] {record['run_id']} in {record['seconds']:.0f} s{err}")
            index()
    finally:
        if client is not None:
            client.close()
    index(sweep_seconds=round(time.perf_counter() - start, 1) if todo else None)
    write_index(grid_dir.parent)  # the reports' front page links every grid
    return [records[r.run_id] for r in runs if r.run_id in records]


def rebuild_index(grid: Grid, out_root: Path = REPORTS_DIR) -> Path:
    """index.html and grid.json again from the runs' own records (nothing runs)."""
    from .grid_report import write_grid_index

    grid_dir = child(out_root, grid.name, "grid name")
    records = [rec for r in grid.runs() if (rec := read_record(grid_dir / r.run_id))]
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
    ap = argparse.ArgumentParser(prog="baeraser sweep", description=__doc__.split("\n")[0])
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
