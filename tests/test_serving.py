"""The served model: every version is an MLflow pyfunc that takes raw candles and answers what
MLStrategy.generate_signal answers for the same window (through mlflow.pyfunc and through the
real ``mlflow models serve`` on loopback), loading by trademl's trusted-type rules only."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import skops.io as sio
import yaml
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from trademl import DataError, InsufficientDataError, ModelError, generate_ohlcv
from trademl.features import build_feature_matrix
from trademl.registry import get_model_info, load_model
from trademl.serving import OUTPUT_COLUMNS
from trademl.strategies import MLStrategy

from ._servers import free_port, wait_until_answers
from ._tamper import Planted, edit_mlmodel, tampered
from .conftest import client_for

NAME = "baseline_rf"
WINDOWS = 200
rng = np.random.default_rng(10)


@dataclass
class Case:
    """A window of the model's own candles and MLStrategy's answer for its last bar."""

    window: pd.DataFrame
    expected: dict[str, Any]  # MLStrategy.generate_signal(window)
    row: pd.Series  # MLStrategy's signal row for the last bar (it has the probabilities)


@contextlib.contextmanager
def tracking_at(uri: str):
    """MLflow's fluent API (mlflow.pyfunc.load_model) on ``uri``, put back afterwards."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking_utils, "_tracking_uri", uri)
        mp.setattr(registry_utils, "_registry_uri", uri)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        yield


def pyfunc_load(uri: str, store_uri: str):
    import mlflow.pyfunc

    with tracking_at(store_uri):
        return mlflow.pyfunc.load_model(uri)


@pytest.fixture(scope="module")
def model(production_model):
    store = production_model["store"]
    version = production_model["result"].registered_version
    client = client_for(store)
    client.set_registered_model_alias(NAME, "champion", version)
    source = client.get_model_version_download_uri(NAME, version)
    return {
        "store": store,
        "uri": store["uri"],
        "version": version,
        "dir": Path(source.removeprefix("file://")),
        "run_id": client.get_model_version(NAME, version).run_id,
    }


@pytest.fixture(scope="module")
def candles(model):
    """The candles the model was trained on (its stored synthetic data config)."""
    loaded = load_model(f"models:/{NAME}/{model['version']}", tracking_uri=model["uri"])
    config = dict(loaded.trademl["data_config"])
    assert config.pop("_target_") == "trademl.synthetic.generate_ohlcv"
    return generate_ohlcv(**config)


@pytest.fixture(scope="module")
def strategy(model):
    return MLStrategy(NAME, alias="champion", tracking_uri=model["uri"])


@pytest.fixture(scope="module")
def cases(candles, strategy) -> list[Case]:
    """200 windows of 51 to 150 bars ending anywhere in the model's data, with MLStrategy's
    answers."""
    out = []
    for _ in range(WINDOWS):
        size = int(rng.integers(strategy.min_bars, 151))
        end = int(rng.integers(size, len(candles) + 1))
        window = candles.iloc[end - size : end]
        out.append(Case(window, strategy.generate_signal(window), strategy._latest(window)))
    return out


@pytest.fixture(scope="module")
def served(model):
    return pyfunc_load(f"models:/{NAME}/{model['version']}", model["uri"])


def assert_same(answer: dict[str, Any], case: Case) -> None:
    """A served answer equals MLStrategy's for the same window, exactly."""
    meta = case.expected["metadata"]
    assert answer["signal"] == case.expected["signal"]
    for key in ("confidence", "entry_price", "sl_distance", "tp_distance", "atr"):
        assert answer[key] == meta[key], key
    for key in ("p_SHORT", "p_FLAT", "p_LONG"):
        assert answer[key] == case.row[key], key
    assert answer["confidence"] == max(answer[k] for k in ("p_SHORT", "p_FLAT", "p_LONG"))
    assert (answer["model_name"], answer["model_version"]) == (
        meta["model_name"],
        meta["model_version"],
    )
    assert answer["timestamp"] == case.window.index[-1].isoformat()
    assert answer["min_confidence"] == 0.55


def split_json(window: pd.DataFrame, **extra) -> dict[str, Any]:
    """A window as the JSON a client sends (ISO timestamps; floats exactly, as json.dumps)."""
    rows = [
        [ts.isoformat(), *map(float, values)]
        for ts, values in zip(window.index, window.to_numpy(), strict=True)
    ]
    return {
        "dataframe_split": {"columns": ["timestamp", *window.columns], "data": rows},
        **extra,
    }


def records_json(window: pd.DataFrame) -> dict[str, Any]:
    split = split_json(window)["dataframe_split"]
    return {
        "dataframe_records": [dict(zip(split["columns"], r, strict=True)) for r in split["data"]]
    }


# -- (a) mlflow.pyfunc.load_model -----------------------------------------------------------------
def test_every_version_is_served_by_trademl_and_keeps_its_sklearn_flavour(model):
    mlmodel = yaml.safe_load((model["dir"] / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "trademl.serving" and pyfunc["data"] == "model.skops"
    assert "model_path" not in pyfunc  # nothing of MLflow's sklearn loader is left
    sklearn_flavor = mlmodel["flavors"]["sklearn"]
    assert sklearn_flavor["serialization_format"] == "skops"
    assert sklearn_flavor["pickled_model"] == "model.skops"
    info = get_model_info(f"models:/{NAME}/{model['version']}", tracking_uri=model["uri"])
    assert info["feature_count"] == 49 and info["pyfunc_loader"] == "trademl.serving"


def test_the_pyfunc_answers_what_mlstrategy_answers(served, cases):
    signals = set()
    for case in cases:
        out = served.predict(case.window)
        assert list(out.columns) == list(OUTPUT_COLUMNS) and len(out) == 1
        assert_same(out.iloc[0].to_dict(), case)
        signals.add(out.iloc[0]["signal"])
    assert "FLAT" in signals and signals & {"LONG", "SHORT"}, signals


def test_the_input_example_is_candles_the_model_answers(served, model, strategy):
    example = served.input_example.copy()
    assert list(example.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert len(example) == strategy.min_bars == 51
    window = example.set_index(pd.DatetimeIndex(pd.to_datetime(example.pop("timestamp"))))
    window.index.name = "timestamp"
    out = served.predict(served.input_example).iloc[0]
    assert out["signal"] == strategy.generate_signal(window)["signal"]
    assert (model["dir"] / "serving_input_example.json").is_file()


def test_timestamps_as_strings_datetimes_or_index_give_the_same_answer(served, cases):
    case = next(c for c in cases if c.expected["signal"] != "FLAT")
    window = case.window
    naive = window.index.tz_convert(None)
    inputs = {
        "index": window,
        "utc strings": window.reset_index().assign(timestamp=window.index.strftime("%FT%TZ")),
        "naive strings": window.reset_index().assign(timestamp=naive.strftime("%F %T")),
        "offset strings": window.reset_index().assign(
            timestamp=[t.tz_convert("America/New_York").isoformat() for t in window.index]
        ),
        "datetimes": window.reset_index(),
        "naive index": window.set_axis(naive),
    }
    for what, data in inputs.items():
        assert list(served.predict(data)["timestamp"]) == [window.index[-1].isoformat()], what
        assert_same(served.predict(data).iloc[0].to_dict(), case)


def test_several_named_windows_in_one_request(served, cases):
    chosen = cases[:6]
    frames = [
        c.window.reset_index().assign(window=name)
        for c, name in zip(chosen, ["BTC", 7, "ETH", "x", 3, "last"], strict=True)
    ]
    out = served.predict(pd.concat(frames, ignore_index=True))
    assert list(out.columns) == ["window", *OUTPUT_COLUMNS]
    assert out["window"].tolist() == ["BTC", 7, "ETH", "x", 3, "last"]
    for (_, answer), case in zip(out.iterrows(), chosen, strict=True):
        assert_same(answer.to_dict(), case)


def test_min_confidence_is_a_predict_param_as_in_mlstrategy(served, model, cases):
    windows = [c.window for c in cases[:40]]
    for asked in ("0.4", "0.7", "validated"):
        threshold = asked if asked == "validated" else float(asked)
        ref = MLStrategy(NAME, threshold, alias="champion", tracking_uri=model["uri"])
        try:
            expected = [ref.generate_signal(w) for w in windows]
        except ModelError as exc:  # a model without a validated threshold: the same error
            assert asked == "validated"
            with pytest.raises(MlflowException, match="no confidence threshold selected"):
                served.predict(windows[0], params={"min_confidence": asked})
            assert "no confidence threshold selected" in str(exc)
            continue
        got = [served.predict(w, params={"min_confidence": asked}).iloc[0] for w in windows]
        assert [g["signal"] for g in got] == [e["signal"] for e in expected], asked
        assert [g["sl_distance"] for g in got] == [e["metadata"]["sl_distance"] for e in expected]
        assert {g["min_confidence"] for g in got} == {ref.min_confidence}
    for bad in ("0", "1.5", "high", ""):
        with pytest.raises(MlflowException, match=r"must be a number in \(0, 1\]"):
            served.predict(windows[0], params={"min_confidence": bad})
    with pytest.raises(MlflowException, match="min_confidence"):  # MLflow: a string param
        served.predict(windows[0], params={"min_confidence": 0.6})


# -- (c) trust ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_a_pickle_file_is_refused_by_the_pyfunc_and_nothing_runs(model, tmp_path, fmt):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Planted(str(tmp_path / "proof"))))  # the payload is live
    assert (tmp_path / "proof").exists()

    def plant(path: Path) -> None:
        (path / "model.pkl").write_bytes(pickle.dumps(Planted(str(marker))))

        def change(data):
            data["flavors"]["sklearn"].update(serialization_format=fmt, pickled_model="model.pkl")
            data["flavors"]["python_function"]["data"] = "model.pkl"

        edit_mlmodel(path, change)

    uri = tampered(model, tmp_path, plant)
    with pytest.raises(ModelError, match=rf"{uri}: refusing to load serialization_format '{fmt}'"):
        pyfunc_load(uri, model["uri"])
    assert not marker.exists()


@pytest.mark.parametrize("widen", [False, True], ids=["list kept", "list widened"])
def test_a_type_outside_trademls_list_is_refused_by_the_pyfunc(model, tmp_path, widen):
    evil = Pipeline([("f", FunctionTransformer(func=print))])

    def swap(path: Path) -> None:
        sio.dump(evil, path / "model.skops")
        if widen:  # the MLmodel says to trust it: MLflow's own sklearn loader would
            edit_mlmodel(
                path,
                lambda d: d["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.print"),
            )

    uri = tampered(model, tmp_path, swap)
    message = r"asks to trust \['builtins.print'\]" if widen else "does not trust: builtins.print"
    with pytest.raises(ModelError, match=message):
        pyfunc_load(uri, model["uri"])


def test_the_estimator_named_in_the_metadata_chooses_the_trusted_types(model, tmp_path):
    def rename(path: Path) -> None:
        edit_mlmodel(path, lambda d: d["metadata"]["trademl"].update(estimator="no.such.Model"))

    with pytest.raises(ModelError, match="'no.such.Model' has no reviewed skops trusted types"):
        pyfunc_load(tampered(model, tmp_path, rename), model["uri"])


def test_a_version_logged_before_serving_still_loads_with_trademl(model, candles, tmp_path):
    """An older version (MLflow's sklearn pyfunc, a signature of 49 features) loads with
    trademl.registry.load_model as before; served, it is MLflow's sklearn model."""

    def old(path: Path) -> None:
        def change(data):
            data["flavors"]["python_function"] = {
                "loader_module": "mlflow.sklearn",
                "model_path": "model.skops",
                "predict_fn": "predict",
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "python_version": "3.11.7",
            }
            names = data["metadata"]["trademl"].pop("feature_names")
            data["signature"] = {
                "inputs": json.dumps([{"type": "double", "name": n} for n in names]),
                "outputs": None,
            }

        edit_mlmodel(path, change)

    uri = tampered(model, tmp_path, old)
    loaded = load_model(uri, tracking_uri=model["uri"])
    info = get_model_info(uri, tracking_uri=model["uri"])
    assert info["feature_count"] == 49 and info["pyfunc_loader"] == "mlflow.sklearn"
    X = build_feature_matrix(candles.iloc[-60:], loaded.trademl["features"])
    codes = pyfunc_load(uri, model["uri"]).predict(X)
    assert set(np.unique(codes)) <= {0, 1, 2}
    assert list(codes) == list(loaded.model.predict(X))


# -- (d) bad requests -----------------------------------------------------------------------------
def test_a_short_or_dirty_window_is_a_clear_error(served, cases):
    window = cases[0].window
    with pytest.raises(MlflowException, match=r"30 bars, but .* needs at least 51") as info:
        served.predict(window.iloc[-30:])
    assert isinstance(info.value.__cause__, InsufficientDataError)
    assert (info.value.__cause__.needed, info.value.__cause__.got) == (51, 30)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    bad_high = window.copy()
    bad_high.iloc[-1, bad_high.columns.get_loc("high")] = bad_high["low"].iloc[-1] / 2
    unsorted = window.iloc[::-1]
    no_time = window.reset_index(drop=True)
    epoch = window.reset_index().assign(timestamp=window.index.asi8 // 10**6)
    garbage = window.reset_index().assign(timestamp="yesterday")
    named = pd.concat(
        [window.reset_index().assign(window="a"), window.iloc[-20:].reset_index().assign(window=1)]
    )
    for data, message in [
        (bad_high, "column 'high'"),
        (unsorted, "unsorted timestamp"),
        (no_time, "no 'timestamp' column"),
        (epoch, "holds numbers; send ISO 8601 strings"),
        (garbage, "'yesterday' at row 0, not an ISO 8601 time"),
        (named, r"window 1: 20 bars, but .* needs at least 51"),
    ]:
        with pytest.raises(MlflowException, match=message) as info:
            served.predict(data)
        assert isinstance(info.value.__cause__, DataError), message


# -- (b) the real server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """``mlflow models serve -m models:/baseline_rf@champion --env-manager local`` on a free
    127.0.0.1 port, always stopped (its whole process group) at the end."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = model["uri"]
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn
    command = [sys.executable, "-m", "mlflow", "models", "serve"]
    command += ["-m", f"models:/{NAME}@champion", "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answers(
            proc, f"{url}/ping", log, "mlflow models serve", 180, ok=lambda r: r.status_code == 200
        )
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # the CLI and its uvicorn worker
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker that outlived the CLI
        assert proc.poll() is not None


@pytest.mark.slow
def test_the_real_server_answers_what_mlstrategy_answers(server, cases, model):
    signals = set()
    with requests.Session() as http:
        for i, case in enumerate(cases):  # one window per request, as a live client sends
            body = split_json(case.window) if i % 2 else records_json(case.window)
            reply = http.post(f"{server}/invocations", json=body, timeout=60)
            assert reply.status_code == 200, reply.text
            (answer,) = reply.json()["predictions"]
            assert list(answer) == list(OUTPUT_COLUMNS)
            assert_same(answer, case)
            signals.add(answer["signal"])
        assert "FLAT" in signals and signals & {"LONG", "SHORT"}, signals

        named = split_json(pd.concat([c.window for c in cases[:5]]))
        named["dataframe_split"]["columns"].append("window")
        sizes = [len(c.window) for c in cases[:5]]
        for row, key in zip(
            named["dataframe_split"]["data"], np.repeat(range(5), sizes), strict=True
        ):
            row.append(f"w{key}")
        reply = http.post(f"{server}/invocations", json=named, timeout=60)
        assert reply.status_code == 200, reply.text
        answers = reply.json()["predictions"]
        assert [a["window"] for a in answers] == [f"w{i}" for i in range(5)]
        for answer, case in zip(answers, cases[:5], strict=True):
            assert_same(answer, case)

        short = http.post(f"{server}/invocations", json=split_json(cases[0].window[-20:]))
        assert short.status_code == 400
        needs = f"20 bars, but models:/{NAME}/{model['version']} needs at least 51"
        assert needs in short.json()["message"]
        asked = split_json(cases[0].window, params={"min_confidence": "0.35"})
        reply = http.post(f"{server}/invocations", json=asked)
        assert reply.status_code == 200 and reply.json()["predictions"][0]["min_confidence"] == 0.35
