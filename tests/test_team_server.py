"""`trademl server` on real stores, on loopback: sqlite + a local folder (the default) and the
team preset, PostgreSQL + S3 (a throwaway PostgreSQL cluster, moto's S3). Against each: a
training promoted to Production, the `trademl models` commands, a backtest and MLStrategy
loading models:/baseline_rf/Production. Then the refusals, before anything starts."""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from trademl import generate_ohlcv
from trademl.cli import main as cli
from trademl.strategies import MLStrategy
from trademl.tracking.server import ServerSettings, mask_secrets, server_command

from ._servers import free_port, moto_s3_server, postgres_server, trademl_server

BUCKET = "team-artifacts"
TRAIN = ["data.n=1200", "model.n_estimators=25", "evaluation.permutation_repeats=1"]


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    """`trademl server` with the embedded defaults: sqlite:///mlflow.db and ./mlruns."""
    with trademl_server(tmp_path_factory.mktemp("trademl-server")) as server:
        yield server


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """`trademl server mlflow=team`: the store from the documented environment variables."""
    work = tmp_path_factory.mktemp("team-server")
    with postgres_server() as pg, moto_s3_server(work / "moto") as s3:
        pg.create_database("mlflow")
        s3.create_bucket(BUCKET)
        env = {
            **s3.env(),
            "TRADEML_BACKEND_STORE_URI": pg.uri("mlflow", driver=None),  # as a user writes it
            "TRADEML_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
        }
        with trademl_server(work / "server", "mlflow=team", "server.workers=1", env=env) as srv:
            yield SimpleNamespace(server=srv, pg=pg, s3=s3)


def _exercise(uri: str, preset: str, tmp_path: Path, capsys) -> str:
    """Train and promote, list/info/promote, backtest, MLStrategy: all through the server.
    Returns the promoted model's run id."""
    client = [f"mlflow={preset}", f"mlflow.tracking_uri={uri}"]
    quiet = [
        f"hydra.run.dir={tmp_path}/out",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    assert cli(["train", *client, *TRAIN, "progress=false", "promote=Production", *quiet]) == 0
    capsys.readouterr()
    assert cli(["models", "list", "--tracking-uri", uri]) == 0
    listing = capsys.readouterr().out
    assert "baseline_rf" in listing and "Production" in listing and "champion" in listing
    assert cli(["models", "info", "models:/baseline_rf/Production", "--tracking-uri", uri]) == 0
    info = json.loads(capsys.readouterr().out)
    assert str(info["version"]) == "1" and info["stage"] == "Production", info
    assert cli(["models", "promote", "baseline_rf", "1", "--tracking-uri", uri]) == 0
    assert "now in stage Production" in capsys.readouterr().out
    assert cli(["backtest", "model=models:/baseline_rf/Production", *client, *quiet]) == 0
    assert "trades, total return" in capsys.readouterr().out
    strategy = MLStrategy(model_uri="models:/baseline_rf/Production", tracking_uri=uri)
    signal = strategy.generate_signal(generate_ohlcv(300, seed=5))
    assert signal["signal"] in ("LONG", "SHORT", "FLAT")
    assert signal["metadata"]["model_version"] == "1"
    return info["run_id"]


def _stops_cleanly(srv) -> None:
    """SIGTERM: `trademl server` stops MLflow's whole process group and exits 0."""
    assert srv.mlflow_pgid is not None and srv.leftovers()
    assert srv.stop() == 0
    assert srv.leftovers() == []
    assert "stopped (SIGTERM)" in srv.stdout
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2)


def test_trademl_server_on_sqlite_serves_training_registry_backtest_and_strategy(
    sqlite_server, tmp_path, capsys
):
    srv = sqlite_server
    assert (
        "store:     sqlite:///" in srv.stdout and "mlflow=server mlflow.tracking_uri" in srv.stdout
    )
    run_id = _exercise(srv.uri, "server", tmp_path, capsys)
    with sqlite3.connect(srv.workdir / "mlflow.db") as db:  # the default store, in its cwd
        runs = dict(db.execute("select run_uuid, status from runs").fetchall())
    assert runs[run_id] == "FINISHED" and len(runs) == 2  # the training and the backtest
    # artifacts were uploaded through the server into its ./mlruns, not written by the client
    assert list((srv.workdir / "mlruns").rglob("model.skops"))
    assert not (tmp_path / "mlruns").exists()
    _stops_cleanly(srv)


@pytest.mark.slow
def test_trademl_server_team_preset_on_postgres_and_s3(team_server, tmp_path, capsys):
    srv, pg, s3 = team_server.server, team_server.pg, team_server.s3
    assert "store:     postgresql+psycopg2://postgres@127.0.0.1" in srv.stdout
    assert f"s3://{BUCKET}/mlflow" in srv.stdout and "mlflow=team mlflow.tracking_uri" in srv.stdout
    run_id = _exercise(srv.uri, "team", tmp_path, capsys)
    runs = dict(pg.query("mlflow", "select run_uuid, status from runs"))
    assert runs[run_id] == "FINISHED" and len(runs) == 2
    assert pg.query("mlflow", "select name from registered_models") == [("baseline_rf",)]
    keys = s3.keys(BUCKET, "mlflow/")
    assert any(k.endswith("/model.skops") for k in keys), keys[:20]
    assert any(k.endswith("evaluation/confusion_matrix.json") for k in keys)
    assert not (tmp_path / "mlruns").exists()
    _stops_cleanly(srv)


# -- refusals: one line, exit 2, nothing started ------------------------------------------------
def _refused(tmp_path: Path, monkeypatch, capsys, *overrides: str, env=None) -> str:
    """`trademl server ...` (in this process): exit 2, one line, nothing started."""
    monkeypatch.chdir(tmp_path)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    assert cli(["server", *overrides]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trademl: error: "), captured.err
    assert not (tmp_path / "mlflow-server.log").exists()  # nothing was started
    return lines[0]


def test_a_port_in_use_is_refused(tmp_path, monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _refused(tmp_path, monkeypatch, capsys, f"server.port={port}")
    assert f"cannot listen on 127.0.0.1:{port}" in err and "server.port=" in err


@pytest.mark.parametrize("backend", ["./mlruns", "mlruns", "file:///tmp/mlruns"])
def test_a_file_store_backend_is_refused(tmp_path, monkeypatch, capsys, backend):
    assert "plain ./mlruns file store is not supported" in _refused(
        tmp_path, monkeypatch, capsys, f"server.backend_store_uri={backend}"
    )


def test_unreachable_postgres_is_refused_and_its_password_never_shown(
    tmp_path, monkeypatch, capsys
):
    port = free_port()
    uri = f"postgresql://team:s3cret@127.0.0.1:{port}/mlflow"
    err = _refused(
        tmp_path, monkeypatch, capsys, "mlflow=team", env={"TRADEML_BACKEND_STORE_URI": uri}
    )
    assert f"PostgreSQL at 127.0.0.1:{port}" in err and "not reachable" in err
    assert "s3cret" not in err and "team:***@" in err


def test_a_missing_postgres_driver_names_the_extra(tmp_path):
    from trademl.errors import TrackingError
    from trademl.tracking.server_store import _check_backend

    with pytest.raises(TrackingError, match=r"driver pg8000.*pip install pg8000"):
        _check_backend("postgresql+pg8000://u@127.0.0.1:1/db", timeout=1)
    # psycopg2 itself missing: the extra that installs it
    import importlib.util

    real = importlib.util.find_spec

    def no_psycopg2(name, *args):
        return None if name == "psycopg2" else real(name, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.util, "find_spec", no_psycopg2)
        with pytest.raises(TrackingError, match=r"pip install 'trademl\[team\]'"):
            _check_backend("postgresql+psycopg2://u@127.0.0.1:1/db", timeout=1)


def test_an_unreachable_s3_endpoint_is_refused(tmp_path, monkeypatch, capsys):
    port = free_port()
    err = _refused(
        tmp_path,
        monkeypatch,
        capsys,
        "server.artifacts_destination=s3://bucket/prefix",
        f"server.s3_endpoint_url=http://127.0.0.1:{port}",
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert f"S3 bucket 'bucket' at http://127.0.0.1:{port} is not reachable" in err


def test_a_missing_bucket_is_refused(tmp_path, monkeypatch, capsys):
    with moto_s3_server(tmp_path / "moto") as s3:
        err = _refused(
            tmp_path,
            monkeypatch,
            capsys,
            "server.artifacts_destination=s3://nobucket/x",
            f"server.s3_endpoint_url={s3.endpoint}",
            env=s3.env(),
        )
    assert "'nobucket'" in err and "does not exist" in err


def test_non_loopback_must_be_asked_for_and_warns(tmp_path, capsys):
    from trademl.tracking.server import run_server

    assert ServerSettings().host == "127.0.0.1"
    port = free_port()
    assert run_server(["server.host=0.0.0.0", f"server.port={port}"], check_only=True) == 0
    captured = capsys.readouterr()
    assert "has no authentication" in captured.err
    assert "checked:" in captured.out and "--host 0.0.0.0" in captured.out
    assert ServerSettings(host="0.0.0.0", port=port).uri == f"http://127.0.0.1:{port}"


def test_the_backend_uri_is_not_on_the_command_line_and_secrets_are_masked():
    settings = ServerSettings(backend_store_uri="postgresql+psycopg2://u:pw@db:5432/m")
    argv, env = server_command(settings)
    assert not any("pw" in a for a in argv)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "postgresql+psycopg2://u:pw@db:5432/m"
    assert (
        mask_secrets("at postgresql://u:pw@db/m and s3://b")
        == "at postgresql://u:***@db/m and s3://b"
    )


def test_bad_server_settings_are_config_errors(tmp_path, monkeypatch, capsys):
    assert "server.port=0" in _refused(tmp_path, monkeypatch, capsys, "server.port=0")
    assert "server.workers" in _refused(tmp_path, monkeypatch, capsys, "server.workers=0")
    assert "did you mean" in _refused(tmp_path, monkeypatch, capsys, "server.prot=5001")


_FAKE_SERVER = """
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
print("fake mlflow server: listening"); print("fake mlflow server: about to fail", flush=True)
if sys.argv[1] == "fail-at-start":
    raise SystemExit(3)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a): pass
srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
time.sleep(1.5)
raise SystemExit(5)
"""


@pytest.mark.parametrize("mode", ["fail-at-start", "fail-later"])
def test_a_server_that_exits_is_one_error_with_its_last_log_lines(
    tmp_path, monkeypatch, capsys, mode
):
    """The child exiting while starting, or after it answered: exit 2, one line with the last
    lines of its log."""
    import trademl.tracking.server as server_module

    started = []

    def fake_command(settings):
        env = server_command(settings)[1]
        started.append(settings.port)
        return [sys.executable, "-c", _FAKE_SERVER, mode, str(settings.port)], env

    monkeypatch.setattr(server_module, "server_command", fake_command)
    monkeypatch.chdir(tmp_path)
    assert cli(["server", f"server.port={free_port()}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "about to fail" in err[0], err
    status = 3 if mode == "fail-at-start" else 5
    what = "exited with status 3 while starting" if status == 3 else "stopped by itself (status 5)"
    assert what in err[0] and "mlflow-server.log" in err[0]
    assert started
