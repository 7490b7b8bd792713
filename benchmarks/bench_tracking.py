"""Team scale: sweeps, Optuna workers, MLflow logging and run search, on sqlite and a server.

Four parts, each a table with ratios against a reference timed in the same run:

1. Sweep runs per minute: the same Hydra grid sweep (``trademl train -m seed=range(0,J)``,
   ``--jobs`` small trainings) with the joblib launcher and ``n_jobs`` 1, 2 and 4, into a local
   sqlite store and into a ``trademl server`` (sqlite-backed, artifacts uploaded through it)
   on loopback. Wall time of the whole command (Hydra start, parent run, every child run, the
   best trial's registration); each sweep is checked to have left ``J`` finished child runs.
   Reference: sqlite, 1 worker.
2. Optuna trials per minute: 1, 2 and 4 ``trademl tune`` worker processes started at once on
   one fresh sqlite study of ``--trials`` trials. Each study is checked to end with exactly
   that many complete trials (``optuna.load_study``). Reference: 1 worker.
3. MLflow logging per run: trainings in this process into sqlite and into a server, every
   ``MlflowClient`` call timed by what it logs (run start/end, params/metrics/tags,
   artifacts and dataset, model files, registry); "local" is the rest of the training's
   ``mlflow`` stage but the ONNX compilation (timed apart): serialising the model, rendering
   figures, writing the files the client uploads. Reference: sqlite.
4. Search over ``--runs`` runs (4 params, 4 metrics, 2 tags each, written with ``log_batch``)
   in sqlite and through a server: ``MlflowClient.search_runs`` filtered by a metric and
   ordered by it, all runs ordered by start time, and ``mlflow.search_runs`` as a DataFrame;
   median of ``--repeats``. The runs are written once, into sqlite, and the server serves
   that same database file, so both answer the same runs. Reference: sqlite.

Every training is small (1,200 synthetic candles, 25 trees, 1 permutation repeat). Sweeps and
studies are repeated ``--sweep-repeats`` times, interleaved, and the median is printed.
Everything lives in a temporary directory; every server is stopped. The load average is
printed before and after each part.

Run: ``python benchmarks/bench_tracking.py`` (about 15 minutes on two cores);
``--quick`` for a smoke run (about 10 minutes); ``--parts 1,4`` for some parts only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

WORKERS = (1, 2, 4)
nan = float("nan")
FAST = (
    "data.n=1200",
    "model.n_estimators=25",
    "evaluation.permutation_repeats=1",
    "progress=false",
)


# -- helpers ----------------------------------------------------------------------------------
def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def clean_env() -> dict[str, str]:
    """This environment without MLflow's variables: every command names its store."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def sqlite_store(root: Path) -> list[str]:
    """Overrides for a private sqlite store in ``root``, its tables created beforehand (as a
    server creates its own at start), so that no timing includes MLflow's migrations."""
    import mlflow

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.MlflowClient(uri).search_experiments()
    return [f"mlflow.tracking_uri={uri}", f"mlflow.artifact_root={root}/mlruns"]


def server_store(uri: str) -> list[str]:
    """Overrides for a client of a server (artifacts uploaded through it)."""
    return ["mlflow=server", f"mlflow.tracking_uri={uri}"]


def store_overrides(stack: contextlib.ExitStack, root: Path, store: str, workers: int) -> list[str]:
    """Overrides for ``store``: "sqlite" (a private file) or "server" (a ``trademl server``
    with ``workers`` workers, started in ``stack`` and stopped with it)."""
    if store == "sqlite":
        return sqlite_store(root)
    return server_store(stack.enter_context(trademl_server(root, workers)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    out.append(int(entry.name))
    return out


@contextlib.contextmanager
def trademl_server(root: Path, workers: int = 1, db: Path | None = None) -> Iterator[str]:
    """``trademl server`` on a sqlite store in ``root`` (or ``db``); its URI. Stopped with
    SIGTERM at exit (its MLflow process group killed if anything is left)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db = db or root / "server.db"
    out, err = root / "trademl-server.out", root / "trademl-server.err"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trademl.cli",
            "server",
            f"server.port={port}",
            f"server.workers={workers}",
            f"server.backend_store_uri=sqlite:///{db}",
            f"server.artifacts_destination={root}/artifacts",
            f"server.log_file={root}/mlflow-server.log",
        ],
        cwd=root,
        stdout=out.open("w"),
        stderr=err.open("w"),
        env=clean_env(),
        start_new_session=True,
    )
    groups = [proc.pid]
    try:
        deadline = time.time() + 180
        while "MLflow tracking server at" not in out.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"trademl server did not start: {err.read_text()[-2000:]}")
            time.sleep(0.2)
        groups += _children(proc.pid)  # `mlflow server`, in its own process group
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        proc.wait()


def trademl(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", *args],
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )


def failure(proc: subprocess.Popen, log: Path) -> str | None:
    """None if ``proc`` exits 0, else its last error line (the log's last exception)."""
    if proc.wait(timeout=3600) == 0:
        return None
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if "Error:" in line or line.startswith("trademl: error:")]
    return (errors or lines or ["no output"])[-1][:160]


def wait_ok(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    for proc, log in zip(procs, logs, strict=True):
        if failure(proc, log):
            raise SystemExit(f"{' '.join(map(str, proc.args))} failed:\n{log.read_text()[-3000:]}")


def client_for(overrides: list[str]):
    import mlflow

    uri = next(o.split("=", 1)[1] for o in overrides if o.startswith("mlflow.tracking_uri="))
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def table(header: list[tuple[str, str]], rows: list[list]) -> None:
    """Print rows under (title, format) columns; a format ending in 's' is left-aligned."""
    widths = [
        max(len(title), *(len(format(r[i], fmt)) for r in rows))
        for i, (title, fmt) in enumerate(header)
    ]
    align = ["<" if fmt.endswith("s") else ">" for _, fmt in header]
    line = " ".join(f"{t:{a}{w}}" for (t, _), a, w in zip(header, align, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        cells = (format(v, f) for v, (_, f) in zip(row, header, strict=True))
        print(" ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths, strict=True)))


# -- part 1: sweep runs per minute --------------------------------------------------------------
def part_sweeps(tmp: Path, args) -> None:
    jobs = args.jobs
    walls: dict[tuple[str, int], list[float]] = defaultdict(list)
    checked: dict[tuple[str, int], bool] = defaultdict(lambda: True)
    errors: dict[tuple[str, int], str] = {}
    for rep in range(args.sweep_repeats):
        for store in ("sqlite", "server"):
            root = tmp / f"sweep-{store}-{rep}"
            with contextlib.ExitStack() as stack:
                overrides = store_overrides(stack, root, store, args.server_workers)
                for k in WORKERS:
                    experiment = f"sweep-j{k}"
                    log = root / f"sweep-j{k}.log"
                    start = time.perf_counter()
                    proc = trademl(
                        [
                            "train",
                            "-m",
                            "hydra/launcher=joblib",
                            f"hydra.launcher.n_jobs={k}",
                            f"seed=range(0,{jobs})",
                            *FAST,
                            *overrides,
                            f"mlflow.experiment_name={experiment}",
                            f"hydra.sweep.dir={root}/sweep-j{k}",
                        ],
                        root,
                        log,
                    )
                    failed = failure(proc, log)
                    wall = time.perf_counter() - start
                    if failed:  # reported in the table; the other configurations go on
                        errors[store, k] = failed
                        print(f"  repeat {rep + 1}: {store} n_jobs={k}: FAILED: {failed}")
                        continue
                    walls[store, k].append(wall)
                    client = client_for(overrides)
                    exp = client.get_experiment_by_name(experiment)
                    runs = client.search_runs([exp.experiment_id], max_results=5000)
                    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
                    ok = len(children) == jobs and len(runs) == jobs + 1
                    ok = ok and all(r.info.status == "FINISHED" for r in runs)
                    checked[store, k] &= ok
                    print(
                        f"  repeat {rep + 1}: {store} n_jobs={k}: {wall:.1f} s, "
                        f"{len(children)} child runs{'' if ok else ' (WRONG)'}",
                        flush=True,
                    )
    ref = float(np.median(walls["sqlite", 1])) if walls["sqlite", 1] else float("nan")
    rows = []
    for store in ("sqlite", "server"):
        for k in WORKERS:
            if not walls[store, k]:
                rows.append([f"{store}, n_jobs={k}", jobs, nan, nan, nan, "FAILED"])
                continue
            wall = float(np.median(walls[store, k]))
            finished = "yes" if checked[store, k] else "NO"
            if (store, k) in errors:
                finished += " (a repeat FAILED)"
            rows.append(
                [f"{store}, n_jobs={k}", jobs, wall, jobs / wall * 60, ref / wall, finished]
            )
    print()
    table(
        [
            ("sweep (joblib launcher)", "s"),
            ("runs", "d"),
            ("wall s", ".1f"),
            ("runs/min", ".1f"),
            ("speed vs sqlite n_jobs=1", ".2f"),
            (f"{jobs} finished", "s"),
        ],
        rows,
    )
    for (store, k), error in sorted(errors.items()):
        print(f"{store}, n_jobs={k} failed: {error}")


# -- part 2: Optuna trials per minute -------------------------------------------------------------
def part_tune(tmp: Path, args) -> None:
    import optuna

    n = args.trials
    walls: dict[int, list[float]] = defaultdict(list)
    counts: dict[int, list[str]] = defaultdict(list)
    for rep in range(args.sweep_repeats):
        for k in WORKERS:
            root = tmp / f"tune-w{k}-{rep}"
            overrides = sqlite_store(root)
            storage = f"sqlite:///{root}/optuna.db"
            command = [
                "tune",
                "hparams_search=random_forest_optuna",
                f"tune.n_trials={n}",
                f"tune.storage={storage}",
                "tune.study_name=bench",
                *FAST,
                "tune.params.model.n_estimators=25",  # every trial the same size
                *overrides,
            ]
            logs = [root / f"worker{i}.log" for i in range(k)]
            start = time.perf_counter()
            procs = [trademl(command, root, log) for log in logs]
            wait_ok(procs, logs)
            walls[k].append(time.perf_counter() - start)
            trials = optuna.load_study(study_name="bench", storage=storage).get_trials()
            done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
            counts[k].append(f"{done}/{len(trials)}")
            wrong = "" if done == len(trials) == n else " (WRONG)"
            print(
                f"  repeat {rep + 1}: {k} worker(s): {walls[k][-1]:.1f} s, study has "
                f"{len(trials)} trials, {done} complete{wrong}",
                flush=True,
            )
    ref = float(np.median(walls[1]))
    rows = []
    for k in WORKERS:
        wall = float(np.median(walls[k]))
        exact = all(c == f"{n}/{n}" for c in counts[k])
        rows.append(
            [
                f"{k} worker process{'es' if k > 1 else ''}",
                n,
                wall,
                n / wall * 60,
                ref / wall,
                f"{', '.join(counts[k])}{'' if exact else ' WRONG'}",
            ]
        )
    print()
    table(
        [
            ("trademl tune, one sqlite study", "s"),
            ("trials", "d"),
            ("wall s", ".1f"),
            ("trials/min", ".1f"),
            ("speed vs 1 worker", ".2f"),
            ("complete/in study", "s"),
        ],
        rows,
    )


# -- part 3: MLflow logging per run --------------------------------------------------------------
CATEGORIES = ("start/end", "params/metrics/tags", "artifacts+dataset", "model", "registry")


def _category(name: str) -> str:
    if name in ("create_run", "set_terminated", "update_run", "set_tag", "delete_tag"):
        return "start/end"
    if name in ("log_batch", "log_param", "log_metric", "set_tags", "get_run"):
        return "params/metrics/tags"
    if name.startswith(("log_text", "log_dict", "log_artifact", "log_figure", "log_image")):
        return "artifacts+dataset"
    if name in ("log_inputs",):
        return "artifacts+dataset"
    if "logged_model" in name or name in ("log_outputs", "log_model_artifacts"):
        return "model"
    if "registered_model" in name or "model_version" in name:
        return "registry"
    if "experiment" in name:
        return "setup"
    return "other"


class ClientTimer:
    """Times every top-level ``MlflowClient`` method call (a call inside another is part of
    it), summed by category, while in use."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()
        self._saved: dict[str, object] = {}
        self._own: set[str] = set()

    def __enter__(self) -> ClientTimer:
        from mlflow import MlflowClient

        for name in dir(MlflowClient):
            attr = getattr(MlflowClient, name)
            if name.startswith("_") or not callable(attr) or isinstance(attr, type):
                continue
            if isinstance(MlflowClient.__dict__.get(name), staticmethod | classmethod):
                continue
            if name in MlflowClient.__dict__:
                self._own.add(name)
            self._saved[name] = MlflowClient.__dict__.get(name, attr)
            setattr(MlflowClient, name, self._wrap(name, attr))
        return self

    def __exit__(self, *exc) -> None:
        from mlflow import MlflowClient

        for name, attr in self._saved.items():
            if name in self._own:
                setattr(MlflowClient, name, attr)
            else:
                delattr(MlflowClient, name)

    def _wrap(self, name, method):
        timer, category = self, _category(name)

        def timed(*a, **kw):
            depth = getattr(timer._local, "depth", 0)
            timer._local.depth = depth + 1
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                timer._local.depth = depth
                if depth == 0:
                    timer.seconds[category] += time.perf_counter() - start

        return timed


def _train_timed(overrides: list[str], seed: int) -> dict[str, float]:
    from hydra.core.global_hydra import GlobalHydra

    import trademl.train as train_module

    GlobalHydra.instance().clear()
    cfg = train_module.compose_config(
        [*FAST, *overrides, f"seed={seed}", "mlflow.experiment_name=logging"]
    )
    compile_model, compiling = train_module.compile_model, []

    def timed_compile(*a, **kw):
        start = time.perf_counter()
        try:
            return compile_model(*a, **kw)
        finally:
            compiling.append(time.perf_counter() - start)

    train_module.compile_model = timed_compile
    try:
        with (
            ClientTimer() as timer,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            start = time.perf_counter()
            result = train_module.train(cfg)
            wall = time.perf_counter() - start
    finally:
        train_module.compile_model = compile_model
    stage = result.seconds["mlflow"]
    out = {"wall": wall, "training": wall - stage, "mlflow stage": stage}
    out.update(timer.seconds)
    out["client"] = sum(timer.seconds[c] for c in CATEGORIES)
    out["onnx"] = sum(compiling)
    in_stage = sum(timer.seconds[c] for c in CATEGORIES if c != "start/end")
    out["local"] = stage - in_stage - out["onnx"]
    return out


LOGGING_ROWS = (
    ("wall", "training run, wall"),
    ("training", "  the rest: data to evaluation, run start/end"),
    ("mlflow stage", "  the mlflow stage"),
    ("client", "MlflowClient calls, all"),
    ("start/end", "  create_run, set_terminated"),
    ("params/metrics/tags", "  params, metrics, tags (log_batch)"),
    ("artifacts+dataset", "  artifacts, dataset (log_text/log_artifacts/log_inputs)"),
    ("model", "  logged model and its files"),
    ("registry", "  registered model version"),
    ("local", "local logging work (model files, figures, reports)"),
    ("onnx", "ONNX compilation of the model"),
    ("logging", "logging per run: client calls + local work"),
)


def part_logging(tmp: Path, args) -> None:
    results: dict[str, list[dict[str, float]]] = {}
    for store in ("sqlite", "server"):
        root = tmp / f"logging-{store}"
        with contextlib.ExitStack() as stack:
            overrides = store_overrides(stack, root, store, args.server_workers)
            _train_timed(overrides, seed=100)  # warm-up: imports, experiment, registered model
            results[store] = [_train_timed(overrides, seed=i) for i in range(args.logging_runs)]
        print(f"  {store}: {args.logging_runs} trainings timed", flush=True)
    for runs in results.values():
        for r in runs:
            r["logging"] = r["client"] + r["local"]
    med = {
        store: {key: float(np.median([r.get(key, 0.0) for r in runs])) for key, _ in LOGGING_ROWS}
        for store, runs in results.items()
    }
    rows = [
        [
            label,
            med["sqlite"][key] * 1e3,
            med["server"][key] * 1e3,
            med["server"][key] / med["sqlite"][key],
        ]
        for key, label in LOGGING_ROWS
    ]
    print()
    table(
        [
            (f"ms per run, median of {args.logging_runs}", "s"),
            ("sqlite", ".0f"),
            ("server", ".0f"),
            ("server / sqlite", ".2f"),
        ],
        rows,
    )
    print(
        "\nEvery MlflowClient call of a training is timed (a call inside another counts once) "
        "and grouped by what it writes; local work is the rest of the training's mlflow stage "
        "but the ONNX compilation (serialising the model, rendering figures, writing the "
        "files the client then uploads). The first training of each store is not counted."
    )


# -- part 4: search over many runs ---------------------------------------------------------------
def _populate(uri: str, n: int, experiment: str) -> tuple[str, float]:
    """``n`` finished runs with 4 params, 4 metrics and 2 tags each; (experiment id, runs/s)."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment(experiment)
    rng = np.random.default_rng(0)
    now = int(time.time() * 1000)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints a link per run to a server
        for i in range(n):
            run = client.create_run(exp, start_time=now + i, run_name=f"run-{i}")
            client.log_batch(
                run.info.run_id,
                metrics=[
                    Metric(name, float(rng.random()), now + i, 0)
                    for name in ("val_score", "val_log_loss", "val_sharpe", "train_accuracy")
                ],
                params=[
                    Param("model", ("random_forest", "lightgbm")[i % 2]),
                    Param("model.max_depth", str(3 + i % 12)),
                    Param("seed", str(i)),
                    Param("data.n", "10000"),
                ],
                tags=[RunTag("sweep", f"s{i // 100}"), RunTag("model_type", "random_forest")],
            )
            client.set_terminated(run.info.run_id, "FINISHED", end_time=now + i + 1)
    return exp, n / (time.perf_counter() - start)


def _searches(uri: str, exp: str) -> dict[str, object]:
    import mlflow

    client = mlflow.MlflowClient(uri)

    def filtered():
        return client.search_runs(
            [exp],
            filter_string="metrics.val_score > 0.5 and params.model = 'random_forest'",
            order_by=["metrics.val_score DESC"],
            max_results=1000,
        )

    def everything():
        return client.search_runs([exp], order_by=["attributes.start_time DESC"], max_results=1000)

    def frame():  # the fluent API reads the store from the environment
        os.environ["MLFLOW_TRACKING_URI"] = uri
        try:
            return mlflow.search_runs(
                experiment_ids=[exp],
                filter_string="metrics.val_score > 0.5",
                order_by=["metrics.val_score DESC"],
                max_results=1000,
            )
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]

    return {
        "search_runs: val_score > 0.5 and model = rf, by val_score": filtered,
        "search_runs: all runs, by start time": everything,
        "mlflow.search_runs DataFrame: val_score > 0.5": frame,
    }


def _time_searches(uri: str, exp: str, repeats: int, times: dict, found: dict, store: str):
    for name, search in _searches(uri, exp).items():
        search()  # warm-up
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = search()
            samples.append(time.perf_counter() - start)
        times[store, name] = float(np.median(samples))
        found[store, name] = len(out)


def part_search(tmp: Path, args) -> None:
    """The runs are written once, into sqlite; then searched in sqlite directly and through a
    server on the same database file (the same runs, so the same answers)."""
    n = args.runs
    times: dict[tuple[str, str], float] = {}
    found: dict[tuple[str, str], int] = {}
    root = tmp / "search"
    uri = sqlite_store(root)[0].split("=", 1)[1]
    exp, sqlite_rate = _populate(uri, n, "search")
    print(f"  sqlite: {n} runs written, {sqlite_rate:.0f} runs/s", flush=True)
    _time_searches(uri, exp, args.repeats, times, found, "sqlite")
    with trademl_server(root / "server", db=root / "mlflow.db") as server_uri:
        _time_searches(server_uri, exp, args.repeats, times, found, "server")
        writes = min(n, 100)
        _, server_rate = _populate(server_uri, writes, "writes-through-server")
        print(f"  server: {writes} runs written, {server_rate:.0f} runs/s", flush=True)
    rows = []
    for name in _searches("", ""):
        for store in ("sqlite", "server"):
            t = times[store, name]
            rows.append(
                [
                    name,
                    store,
                    found[store, name],
                    t * 1e3,
                    t * 1e6 / max(found[store, name], 1),
                    t / times["sqlite", name],
                ]
            )
    print()
    table(
        [
            (f"query over {n:,} runs", "s"),
            ("store", "s"),
            ("runs found", "d"),
            ("median ms", ".1f"),
            ("µs/run", ".0f"),
            ("time / sqlite's", ".2f"),
        ],
        rows,
    )
    print(
        f"\nmedian of {args.repeats} searches after one warm-up. Writing runs (create_run + "
        f"log_batch + set_terminated, one client, in series): sqlite {sqlite_rate:.0f} runs/s "
        f"({n:,} runs), server {server_rate:.0f} runs/s ({writes} runs)."
    )


PARTS = {
    "1": ("Sweep runs per minute", part_sweeps),
    "2": ("Optuna trials per minute", part_tune),
    "3": ("MLflow logging per run", part_logging),
    "4": ("Search over many runs", part_search),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    parser.add_argument("--parts", default="1,2,3,4", help="comma-separated, e.g. 1,4")
    parser.add_argument("--jobs", type=int, help="jobs per sweep (default 8; quick 4)")
    parser.add_argument("--trials", type=int, help="trials per study (default 8; quick 4)")
    parser.add_argument("--sweep-repeats", type=int, help="(default 2; quick 1)")
    parser.add_argument("--logging-runs", type=int, help="trainings per store (default 5)")
    parser.add_argument("--runs", type=int, help="runs to search (default 1000; quick 200)")
    parser.add_argument("--repeats", type=int, default=5, help="searches timed per query")
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn workers")
    args = parser.parse_args()
    defaults = {"jobs": 8, "trials": 8, "sweep_repeats": 2, "logging_runs": 5, "runs": 1000}
    quick = {"jobs": 4, "trials": 4, "sweep_repeats": 1, "logging_runs": 2, "runs": 200}
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    print(
        f"{os.cpu_count()} cores; sweeps of {args.jobs} jobs and studies of {args.trials} "
        f"trials, median of {args.sweep_repeats}; server workers {args.server_workers}"
    )
    begin = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        for part in args.parts.split(","):
            title, run = PARTS[part.strip()]
            print(f"\n## {part.strip()}. {title} (load average {load()})", flush=True)
            run(Path(tmp), args)
            print(f"(load average after: {load()})", flush=True)
    print(f"\ntotal {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
