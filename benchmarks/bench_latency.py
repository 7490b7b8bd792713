"""Per-candle decision latency, batch scoring, the served model's round trip and a live replay.

Trains the default random forest and the default LightGBM (``conf/model/*.yaml``) on
synthetic candles into a throwaway store, then times, in the same run, for each model, one
decision per candle (candle in, signal with its metadata out):

* (a) the spec's approach: the features recomputed on a trailing window
  (``build_feature_matrix``), the scikit-learn model as stored (``n_jobs=-1`` for both
  defaults) predicting the last row, the ATR and the stop and target;
* (b) ``MLStrategy.generate_signal(window)`` (features on the window, one-thread prediction);
* (c) the fast path: ``MLStrategy.stream()``, warmed on the first window, then
  ``update(candle)`` (streamed features, the compiled predictor if it passed its check);

then batch scoring throughput over ``--batch-rows`` feature rows (the compiled predictor on
one thread and scikit-learn as stored), the HTTP round trip of ``mlflow models serve`` for one
window (``--http`` requests), and a live replay end to end (``trademl live`` on a CSV of
``--replay`` candles, journal and all) with the stream and with the window path.

Each figure is the median over ``--repeats`` runs (``--reference-repeats`` for (a) and (b),
which take tens of milliseconds per candle). Ratios are medians against (a) in the same run.
The load average is printed before and after.

Run: ``python benchmarks/bench_latency.py`` (defaults: 10,000 candles, 1,000-bar windows,
1,000,000 batch rows, 200 HTTP requests, a 10,000-candle replay; about 25 minutes on two
cores). Smaller: ``--candles 2000 --reference-candles 500 --batch-rows 200000 --replay 2000``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np


def pct(samples: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(samples) * 1e3
    return tuple(float(np.percentile(ms, q)) for q in (50, 95, 99))


def median_of(runs: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(float(np.median(col)) for col in zip(*runs, strict=True))


def timed(call, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - start)
    return out


def train_models(tmp: Path, models: list[str], n: int) -> tuple[str, dict[str, str]]:
    from _throwaway import train_throwaway

    out = {}
    for model in models:
        uri, result = train_throwaway(tmp, n, model)
        out[model] = result.registered_name, result.registered_version
        print(f"trained {model}: models:/{out[model][0]}/{out[model][1]}", flush=True)
    return uri, out


def spec_decision(strategy, window):
    """(a): what the spec's pipeline does per candle."""
    from trademl import indicators as ind
    from trademl.inference import calculate_signal_strength, predict_signal

    out = predict_signal(strategy.load().model, window, strategy.min_confidence, strategy._features)
    close = window["close"].to_numpy()
    atr = ind.atr(window["high"].to_numpy(), window["low"].to_numpy(), close, 14)[-1]
    sl, tp = calculate_signal_strength(atr, out["confidence"], min_confidence=0.55)
    return out["signal"], close[-1], sl, tp


def decision_latencies(strategy, candles, window, n_fast, n_ref, repeats, ref_repeats):
    frames = [candles.iloc[i - window + 1 : i + 1] for i in range(window, window + n_ref)]
    strategy.generate_signal(frames[0])  # warm caches (numba, sklearn)
    spec_decision(strategy, frames[0])
    spec = median_of(
        [pct(timed(lambda w: spec_decision(strategy, w), frames)) for _ in range(ref_repeats)]
    )
    window_call = median_of(
        [pct(timed(strategy.generate_signal, frames)) for _ in range(ref_repeats)]
    )
    later = candles.iloc[window : window + n_fast]
    rows = list(later.itertuples())
    fast_runs = []
    for _ in range(repeats):
        stream = strategy.stream()
        stream.warm_up(candles.iloc[:window])
        candle_dicts = [
            {
                "timestamp": r.Index,
                "open": r.open,
                "high": r.high,
                "low": r.low,
                "close": r.close,
                "volume": r.volume,
            }
            for r in rows
        ]
        fast_runs.append(pct(timed(stream.update, candle_dicts)))
    return spec, window_call, median_of(fast_runs)


def batch_throughput(strategy, candles, rows: int, repeats: int) -> tuple[float, float]:
    from trademl.features import build_feature_matrix

    X = build_feature_matrix(candles, strategy._features).to_numpy()
    X = np.tile(X, (int(np.ceil(rows / len(X))), 1))[:rows]
    predictor = strategy.predictor()
    model = strategy.load().model
    import pandas as pd

    frame = pd.DataFrame(X, columns=strategy.load().trademl["feature_names"])

    def rate(call) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return rows / float(np.median(times))

    return rate(lambda: predictor.predict_proba(X)), rate(lambda: model.predict_proba(frame))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_round_trip(uri: str, name: str, version: str, candles, window: int, n: int, repeats: int):
    """p50/p95/p99 ms of POSTing one window to ``mlflow models serve`` (the served pyfunc)."""
    port = free_port()
    bindir = str(Path(sys.executable).parent)  # MLflow starts uvicorn from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }
    mlflow = str(Path(bindir) / "mlflow")
    proc = subprocess.Popen(
        [
            mlflow,
            "models",
            "serve",
            "-m",
            f"models:/{name}/{version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200:
                    break
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("mlflow models serve did not start")
            time.sleep(0.5)
        bodies = []
        for i in range(window, window + n):
            frame = candles.iloc[i - window + 1 : i + 1].reset_index()
            frame["timestamp"] = frame["timestamp"].astype(str)
            bodies.append(
                json.dumps({"dataframe_split": frame.to_dict(orient="split", index=False)}).encode()
            )

        def post(body: bytes) -> None:
            req = urllib.request.Request(
                f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()

        post(bodies[0])
        return median_of([pct(timed(post, bodies)) for _ in range(repeats)])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def replay(uri: str, tmp: Path, name: str, csv: Path, *, stream: bool) -> float:
    """Seconds for ``trademl live`` to replay ``csv`` end to end (journal, MLflow session).

    ``stream=False`` is the runtime as it was before the stream: ``generate_signal`` on the
    trailing window per candle, the journal fsynced and every candle's step metrics logged
    (``live.durable=true live.metrics_interval=0``). ``True`` is today's defaults."""
    from trademl._hydra import compose_config
    from trademl.live.app import run_live
    from trademl.strategies import MLStrategy
    from trademl.strategies.base import BaseStrategy

    tag = "stream" if stream else "window"
    cfg = compose_config(
        [
            f"mlflow.tracking_uri={uri}",
            f"mlflow.artifact_root={tmp}/mlruns",
            f"feeds.0.path={csv}",
            f"live.journal={tmp}/journal-{tag}-{time.time_ns()}.db",
            f"strategy.params.model_name={name}",
            "strategy.params.min_confidence=0.55",
            *([] if stream else ["live.durable=true", "live.metrics_interval=0"]),
        ],
        config_name="live",
    )
    saved = MLStrategy.stream
    if not stream:  # today's path: generate_signal on the trailing window per candle
        MLStrategy.stream = BaseStrategy.stream
    try:
        start = time.perf_counter()
        run_live(cfg)
        return time.perf_counter() - start
    finally:
        MLStrategy.stream = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="random_forest,lightgbm")
    parser.add_argument("--candles", type=int, default=10_000, help="fast-path decisions")
    parser.add_argument("--reference-candles", type=int, default=10_000, help="(a), (b)")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats", type=int, default=1)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--http", type=int, default=200, help="requests (0: skip)")
    parser.add_argument("--replay", type=int, default=10_000, help="candles (0: skip)")
    parser.add_argument("--replay-window-candles", type=int, default=None)
    parser.add_argument("--train-rows", type=int, default=5000)
    args = parser.parse_args()

    from trademl import generate_ohlcv
    from trademl.registry import promote_model
    from trademl.strategies import MLStrategy

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    models = args.models.split(",")
    uri, registered = train_models(tmp, models, args.train_rows)
    n = args.window + max(args.candles, args.reference_candles) + 1
    candles = generate_ohlcv(n, seed=7, start="2025-01-01")
    lines, rates, http, kinds = [], [], {}, {}
    for model in models:
        name, version = registered[model]
        promote_model(name, version, tracking_uri=uri)
        strategy = MLStrategy(name, tracking_uri=uri)
        kinds[model] = repr(strategy.predictor())
        spec, window_call, fast = decision_latencies(
            strategy,
            candles,
            args.window,
            args.candles,
            args.reference_candles,
            args.repeats,
            args.reference_repeats,
        )
        ref = spec[0]
        for label, row, count in (
            ("(a) spec: window features, sklearn as stored", spec, args.reference_candles),
            ("(b) MLStrategy.generate_signal(window)", window_call, args.reference_candles),
            ("(c) fast path: stream.update(candle)", fast, args.candles),
        ):
            lines.append((model, label, count, *row, ref / row[0]))
        print(f"{model}: decisions timed", flush=True)
        if args.batch_rows:
            kind = strategy.predictor().kind
            rate = batch_throughput(strategy, candles, args.batch_rows, args.repeats)
            rates.append((model, kind, *rate))
        if args.http:
            try:
                http[model] = http_round_trip(
                    uri, name, version, candles, args.window, args.http, args.repeats
                )
            except (OSError, RuntimeError) as exc:  # report the rest of the run anyway
                print(f"{model}: HTTP round trip not measured: {exc}", flush=True)
    replay_rows = []
    if args.replay:
        name, _ = registered[models[0]]
        for count, stream in (
            (args.replay, True),
            (args.replay_window_candles or args.replay, False),
        ):
            csv = tmp / f"replay-{count}.csv"
            generate_ohlcv(count, seed=11, start="2025-01-01").to_csv(csv, index_label="timestamp")
            seconds = replay(uri, tmp, name, csv, stream=stream)
            label = "stream (defaults)" if stream else "window, fsync, every metric"
            replay_rows.append((label, count, seconds))
    load_after = os.getloadavg()

    head = f"{'model':<14} {'decision':<46} {'candles':>7} {'p50 ms':>8} {'p95 ms':>8} "
    head += f"{'p99 ms':>8} {'(a)/x':>7}"
    print("\n" + head + "\n" + "-" * len(head))
    for model, label, count, p50, p95, p99, ratio in lines:
        print(
            f"{model:<14} {label:<46} {count:>7} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f} {ratio:>7.1f}"
        )
    for model, kind in kinds.items():
        print(f"  {model} predictor: {kind}")
    if rates:
        print(f"\n{'model':<14} {'batch scoring':<40} {'rows/s':>12}")
        for model, kind, fast, sk in rates:
            what = f"fast predictor ({kind}), one thread"
            print(f"{model:<14} {what:<40} {fast:>12,.0f}")
            print(f"{model:<14} {'scikit-learn as stored (n_jobs=-1)':<40} {sk:>12,.0f}")
        print(f"  ({args.batch_rows:,} rows, median of {args.repeats})")
    if http:
        print(f"\n{'model':<14} {'HTTP round trip, one window':<40} {'p50 ms':>8} {'p99 ms':>8}")
        for model, (p50, _, p99) in http.items():
            print(f"{model:<14} {'mlflow models serve /invocations':<40} {p50:>8.2f} {p99:>8.2f}")
        print(f"  ({args.http} requests of {args.window}-candle windows, median of {args.repeats})")
    if replay_rows:
        print(
            f"\n{'live replay (' + models[0] + ')':<30} {'candles':>8} {'seconds':>9} {'per s':>9}"
        )
        for label, count, seconds in replay_rows:
            print(f"{label:<30} {count:>8} {seconds:>9.1f} {count / seconds:>9.0f}")
        speed = [c / s for _, c, s in replay_rows]
        print(f"  throughput ratio: {speed[0] / speed[1]:.1f} (the second row is the runtime")
        print("  before the stream: window decisions, a journal fsync and 3 metrics per candle)")
    print(
        f"\n(a) and (b): median over {args.reference_repeats} run(s) of {args.reference_candles:,} "
        f"decisions; (c): over {args.repeats} runs of {args.candles:,}."
    )
    print(
        f"Load average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)}; {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    main()
