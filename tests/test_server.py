"""A real MLflow tracking server on loopback: training and loading through it, and its faults:
unreachable at the start, dead in the middle of a run, or refusing part of the calls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from trademl import TrackingError
from trademl._hydra import compose_config
from trademl.registry import list_models, load_model
from trademl.train import train

from ._servers import FaultyProxy, free_port, mlflow_server, start_mlflow_server


def server_overrides(uri: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "mlflow=server",
        f"mlflow.tracking_uri={uri}",
        f"mlflow.artifact_root={tmp_path}/mlruns",
        "data.n=1200",
        "model.n_estimators=25",
        "evaluation.permutation_repeats=1",
        "progress=false",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def _trademl(args, cwd, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


@pytest.mark.slow
def test_train_register_and_load_through_a_server(server, tmp_path):
    result = train(compose_config(server_overrides(server.uri, tmp_path, "promote=Production")))
    assert result.registered_version is not None
    loaded = load_model("models:/baseline_rf/Production", tracking_uri=server.uri)
    assert loaded.version == result.registered_version
    assert any(r["version"] == int(loaded.version) for r in list_models(tracking_uri=server.uri))
    assert not mlflow.is_tracking_uri_set() or mlflow.get_tracking_uri() != server.uri


@pytest.mark.slow
def test_a_parallel_sweep_through_a_server(server, tmp_path):
    """joblib workers receive the sweep callback with its server client (pickled: its
    attribute lookup recursed), and every job is a child run under one parent."""
    import pickle

    from trademl.tracking import MlflowSettings

    client = MlflowSettings(tracking_uri=server.uri).client()
    assert pickle.loads(pickle.dumps(client))._client.tracking_uri == server.uri
    overrides = [o for o in server_overrides(server.uri, tmp_path) if "artifact_root" not in o]
    proc = _trademl(
        [
            "train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "seed=1,2",
            "mlflow.experiment_name=parallel",
            *overrides,
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    mlflow_client = mlflow.MlflowClient(server.uri)
    exp = mlflow_client.get_experiment_by_name("parallel")
    runs = mlflow_client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)


def test_an_unreachable_server_is_one_line_before_any_data(tmp_path):
    port = free_port()
    bad = tmp_path / "never_read.csv"
    bad.write_text("this is not read: the server is checked first\n")
    overrides = [
        o for o in server_overrides(f"http://127.0.0.1:{port}", tmp_path) if "data.n" not in o
    ]
    cfg = compose_config([*overrides, "data=csv", f"data.path={bad}"])
    start = time.perf_counter()
    with pytest.raises(TrackingError, match=rf"http://127.0.0.1:{port}.*not reachable"):
        train(cfg)
    assert time.perf_counter() - start < 15
    proc = _trademl(["train", *overrides, "data=csv", f"data.path={bad}"], tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trademl: error: MLflow tracking server")


@pytest.mark.slow
def test_a_server_that_dies_mid_run_ends_the_command_in_bounded_time(tmp_path):
    """Killed while a training logs to it: the command gives up within 60 s (the default
    limits), in one line, and registers no version."""
    srv = start_mlflow_server(tmp_path / "srv")
    try:
        proc = _trademl(
            [
                "train",
                *server_overrides(srv.uri, tmp_path, "data.n=3000", "model.n_estimators=50"),
                f"hydra.run.dir={tmp_path}/out",
            ],
            tmp_path,
        )
        client = mlflow.MlflowClient(srv.uri)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name("trademl")
            if exp and client.search_runs([exp.experiment_id]):
                break
            time.sleep(0.3)
        run = client.search_runs([client.get_experiment_by_name("trademl").experiment_id])[0]
        assert run.info.status == "RUNNING"
        srv.stop()  # SIGKILL
        died = time.perf_counter()
        _, err = proc.communicate(timeout=180)
        elapsed = time.perf_counter() - died
    finally:
        srv.stop()
    assert proc.returncode == 2, err
    print(f"the command ended {elapsed:.1f} s after the server died")
    assert elapsed < 60, f"took {elapsed:.0f} s after the server died"
    last = err.strip().splitlines()[-1]
    assert last.startswith("trademl: error:") and "Traceback" not in err, err
    client = mlflow.MlflowClient(srv.backend)  # the server's own store: what is left in it
    assert client.search_model_versions("name='baseline_rf'") == []
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # nobody could end it


@pytest.mark.slow
def test_a_server_failing_some_calls_marks_the_run_failed_and_registers_nothing(server, tmp_path):
    """The server answers but refuses to store models (HTTP 503 on logged-model calls): the
    command ends in one line within the limits, the run is marked FAILED, no version."""
    with FaultyProxy(server.uri, fail_paths=("/logged-models",)) as proxy:
        overrides = server_overrides(proxy.uri, tmp_path, "mlflow.experiment_name=faulty")
        start = time.perf_counter()
        proc = _trademl(["train", *overrides, f"hydra.run.dir={tmp_path}/out"], tmp_path)
        _, err = proc.communicate(timeout=300)
        elapsed = time.perf_counter() - start
    assert proc.returncode == 2, err
    assert err.strip().splitlines()[-1].startswith("trademl: error:"), err
    assert proxy.refused > 0
    client = mlflow.MlflowClient(server.uri)
    exp = client.get_experiment_by_name("faulty")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and "503" in run.data.tags["error"]
    assert client.search_model_versions("name='baseline_rf'") == [] or all(
        v.run_id != run.info.run_id for v in client.search_model_versions("name='baseline_rf'")
    )
    assert elapsed < 120
