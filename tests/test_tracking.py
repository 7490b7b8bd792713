"""The MLflow seams: the tracking URI is resolved as MLflow users expect, nothing changes the
process-wide URI, a lookup never creates a store, and run lifecycles end cleanly."""

from __future__ import annotations

import os
import signal

import mlflow
import pytest

from trademl import ModelError, TrackingError, generate_ohlcv
from trademl.errors import Interrupted
from trademl.registry import get_model_info, list_models, load_model, resolve_version
from trademl.strategies import MLStrategy
from trademl.tracking import (
    MlflowSettings,
    RunRecorder,
    end_open_runs,
    resolve_tracking_uri,
    setup_tracking,
    signals_raise,
)
from trademl.tracking.settings import DEFAULT_TRACKING_URI

from .conftest import client_for


@pytest.fixture
def clean_mlflow_uri(monkeypatch):
    """No MLFLOW_TRACKING_URI and no mlflow.set_tracking_uri() in this test (restored after)."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(utils, "_tracking_uri", None)
    yield


def test_tracking_uri_resolution_order(clean_mlflow_uri, monkeypatch, tmp_path):
    assert resolve_tracking_uri() == (DEFAULT_TRACKING_URI, "default")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/set.db")  # also exports the variable
    assert resolve_tracking_uri() == (f"sqlite:///{tmp_path}/set.db", "MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set_tracking_uri() alone
    assert resolve_tracking_uri() == (f"sqlite:///{tmp_path}/set.db", "mlflow.set_tracking_uri")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert resolve_tracking_uri()[0] == f"sqlite:///{tmp_path}/env.db"  # the variable wins
    assert resolve_tracking_uri("sqlite:///x.db") == ("sqlite:///x.db", "explicit")
    assert MlflowSettings().tracking_uri == f"sqlite:///{tmp_path}/env.db"


def test_a_plain_mlruns_file_store_is_refused(clean_mlflow_uri, monkeypatch):
    from trademl import ConfigError

    with pytest.raises(ConfigError, match="plain ./mlruns file store"):
        MlflowSettings(tracking_uri="./mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    with pytest.raises(ConfigError, match="from MLFLOW_TRACKING_URI"):
        MlflowSettings()


def test_python_api_defaults_follow_the_environment_and_keep_the_global_uri(
    production_model, clean_mlflow_uri, monkeypatch, tmp_path
):
    """The issue's case: MLStrategy(model_name=...) with MLFLOW_TRACKING_URI pointing at an
    absolute store loads from it, creates nothing in the working directory, and leaves the
    process-wide URI as the user set it."""
    store = production_model["store"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    df = generate_ohlcv(300, seed=5)
    signal_ = MLStrategy(model_name="baseline_rf").generate_signal(df)
    assert signal_["signal"] in ("LONG", "SHORT", "FLAT")
    assert signal_["metadata"]["model_version"] == production_model["result"].registered_version
    assert [r["name"] for r in list_models()] == ["baseline_rf"]
    assert not (tmp_path / "mlflow.db").exists()
    # mlflow.set_tracking_uri(...) without the variable: honoured, and not reset by a load
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(store["uri"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    loaded = load_model("models:/baseline_rf/Production")
    assert loaded.version == production_model["result"].registered_version
    assert mlflow.get_tracking_uri() == store["uri"]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # load_model set nothing globally
    assert not (tmp_path / "mlflow.db").exists()


def test_library_code_never_sets_the_global_uri(production_model, clean_mlflow_uri, tmp_path):
    store = production_model["store"]
    load_model("models:/baseline_rf/Production", tracking_uri=store["uri"])
    get_model_info("models:/baseline_rf/Production", tracking_uri=store["uri"])
    resolve_version("models:/baseline_rf@champion", tracking_uri=store["uri"])
    list_models(tracking_uri=store["uri"])
    assert not mlflow.is_tracking_uri_set()


def test_a_lookup_in_a_missing_store_says_so_and_creates_nothing(
    clean_mlflow_uri, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    for call in (
        lambda: list_models(),
        lambda: load_model("models:/baseline_rf/Production"),
        lambda: MlflowSettings().require_store(),
        lambda: MLStrategy(model_name="baseline_rf").load(),
        lambda: resolve_version("baseline_rf", tracking_uri=f"sqlite:///{tmp_path}/a/b.db"),
    ):
        with pytest.raises(TrackingError, match="no MLflow store at") as info:
            call()
        assert str(tmp_path) in str(info.value)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "a").exists()


def test_unreachable_server_is_one_error_at_once(clean_mlflow_uri):
    import socket
    import time

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(TrackingError, match=rf"127.0.0.1:{port}.*not reachable"):
        setup_tracking(MlflowSettings(tracking_uri=f"http://127.0.0.1:{port}"))
    with pytest.raises(TrackingError, match="not reachable"):
        list_models(tracking_uri=f"http://127.0.0.1:{port}")
    assert time.perf_counter() - start < 15


def test_http_limits_come_from_config_and_stay_with_the_call(clean_mlflow_uri, monkeypatch):
    """Config, else the user's own MLflow variable, else 10 s / 2 retries; set around each
    call of the client only, so nothing leaks into the user's other MLflow use."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    settings = MlflowSettings(tracking_uri="http://127.0.0.1:1", http_timeout=3)
    assert (settings.http_timeout, settings.http_max_retries) == (3, 5)  # config, else env
    assert MlflowSettings(tracking_uri="http://127.0.0.1:1").http_timeout == 10
    with settings.http_limits(max_retries=0):
        seen = (MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get())
    assert seen == (3, 0)
    client = settings.client()
    assert client.tracking_uri == "http://127.0.0.1:1"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ  # restored after the block
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    from trademl import ConfigError

    with pytest.raises(ConfigError, match="mlflow.http_timeout=0"):
        MlflowSettings(tracking_uri="http://127.0.0.1:1", http_timeout=0)


# -- run lifecycle --------------------------------------------------------------------------------
def _status(store, run_id):
    return client_for(store).get_run(run_id).info.status


def test_recorder_ends_finished_failed_killed(store, clean_mlflow_uri):
    settings, exp = setup_tracking(MlflowSettings(tracking_uri=store["uri"]))
    with RunRecorder.start(settings, exp, run_name="ok") as rec:
        rec.log_metrics({"x": 1.0, "inf": float("inf"), "flag": True})
    assert _status(store, rec.run_id) == "FINISHED"
    assert client_for(store).get_run(rec.run_id).data.metrics == {"x": 1.0}
    with pytest.raises(ZeroDivisionError), RunRecorder.start(settings, exp) as failed:
        1 / 0  # noqa: B018
    run = client_for(store).get_run(failed.run_id)
    assert run.info.status == "FAILED" and "division by zero" in run.data.tags["error"]
    with pytest.raises(KeyboardInterrupt), RunRecorder.start(settings, exp) as killed:
        raise KeyboardInterrupt
    assert _status(store, killed.run_id) == "KILLED"


def test_sigterm_unwinds_and_the_run_ends_killed(store, clean_mlflow_uri):
    settings, exp = setup_tracking(MlflowSettings(tracking_uri=store["uri"]))
    with (
        pytest.raises(Interrupted) as info,
        signals_raise(),
        RunRecorder.start(settings, exp) as rec,
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000_000):  # the handler runs between bytecodes
            pass
    assert info.value.signum == signal.SIGTERM
    assert _status(store, rec.run_id) == "KILLED"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_signal_during_run_creation_still_ends_the_run(store, clean_mlflow_uri, monkeypatch):
    """SIGTERM arriving while MLflow creates the run is held back until the run is known,
    then delivered: the run ends KILLED instead of staying RUNNING."""
    settings, exp = setup_tracking(MlflowSettings(tracking_uri=store["uri"]))
    from mlflow.tracking import MlflowClient

    created = []
    original = MlflowClient.create_run

    def create_and_get_killed(self, *args, **kwargs):
        run = original(self, *args, **kwargs)
        created.append(run.info.run_id)
        os.kill(os.getpid(), signal.SIGTERM)  # in the middle of creating the run
        return run

    monkeypatch.setattr(MlflowClient, "create_run", create_and_get_killed)
    with pytest.raises(Interrupted), signals_raise():
        RunRecorder.start(settings, exp, run_name="doomed")
    assert created and _status(store, created[0]) == "KILLED"


def test_a_run_whose_store_fails_is_not_reported_as_marked(store, clean_mlflow_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    from trademl.tracking import ended_runs

    settings, exp = setup_tracking(MlflowSettings(tracking_uri=store["uri"]))
    rec = RunRecorder.start(settings, exp)

    def unreachable(self, *args, **kwargs):
        raise ConnectionError("store gone")

    monkeypatch.setattr(MlflowClient, "set_terminated", unreachable)
    rec.end("KILLED")
    assert rec.run_id in ended_runs("KILLED", marked=False)
    assert rec.run_id not in ended_runs("KILLED")


def test_open_runs_are_ended_on_the_way_out(store, clean_mlflow_uri):
    settings, exp = setup_tracking(MlflowSettings(tracking_uri=store["uri"]))
    rec = RunRecorder.start(settings, exp, run_name="left open")
    assert rec.run_id in end_open_runs("FAILED", RuntimeError("boom"))
    assert _status(store, rec.run_id) == "FAILED"
    assert end_open_runs("FAILED") == []


def test_missing_model_names_the_store(production_model, clean_mlflow_uri):
    with pytest.raises(ModelError, match="no registered model 'nope'.*registered models: "):
        load_model("models:/nope/Production", tracking_uri=production_model["store"]["uri"])
