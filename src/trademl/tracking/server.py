"""``trademl server``: an MLflow tracking server on the configured store, started and stopped.

The store comes from ``conf/server.yaml``: the ``mlflow`` preset selects the ``server`` preset
of the same name (``mlflow=local``, the default: ``sqlite:///mlflow.db`` and ``./mlruns``;
``mlflow=team``: PostgreSQL and S3). Artifacts are always served by the server
(``--artifacts-destination``), so its clients need no access to the folder or the bucket.

Everything that can be checked is checked before anything starts
(:mod:`~trademl.tracking.server_store`). Then ``mlflow server`` runs as a child in its own
process group; once ``/health`` answers the URI is printed, and SIGINT or SIGTERM stops the
whole group. Passwords never appear in what is printed or logged: the backend URI is handed to
the server in its environment (``MLFLOW_BACKEND_STORE_URI``, not on its command line) and
masked (``postgresql://user:***@host/db``) everywhere else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from trademl.errors import TrackingError
from trademl.tracking.server_store import (
    ServerSettings,
    _sqlite_file,
    check_server,
    mask_secrets,
)

__all__ = [
    "ServerSettings",
    "check_server",
    "mask_secrets",
    "run_server",
    "server_command",
    "start_server",
    "stop_server",
]


# -- the child process ----------------------------------------------------------------------------
def server_command(settings: ServerSettings) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and its environment.

    The backend URI goes in the environment (``MLFLOW_BACKEND_STORE_URI``), so that a password
    in it is not visible in the process list.
    """
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--artifacts-destination",
        settings.artifacts,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_BACKEND_STORE_URI"] = settings.backend
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if settings.jobs else "false"
    if settings.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return argv, env


def start_server(
    settings: ServerSettings, *, cancel: threading.Event | None = None
) -> subprocess.Popen:
    """Start ``mlflow server`` in its own process group and wait until ``/health`` answers
    (or ``cancel`` is set).

    Raises
    ------
    TrackingError
        The server exited or did not answer within ``startup_timeout`` (with its last log
        lines); it is stopped first.
    """
    argv, env = server_command(settings)
    db = _sqlite_file(settings.backend)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if "://" not in settings.artifacts:
        Path(settings.artifacts).mkdir(parents=True, exist_ok=True)
    log = None
    if settings.log_file:
        path = Path(settings.log_file).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("ab")
    try:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log is not None:
            log.close()  # the child has its own copy
    try:
        _wait_ready(proc, settings, cancel)
    except BaseException:
        stop_server(proc)
        raise
    return proc


def _wait_ready(
    proc: subprocess.Popen, settings: ServerSettings, cancel: threading.Event | None
) -> None:
    import requests

    deadline = time.monotonic() + settings.startup_timeout
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            return
        if proc.poll() is not None:
            raise TrackingError(
                f"mlflow server exited with status {proc.returncode} while starting"
                f"{_log_tail(settings)}"
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{settings.uri}/health", timeout=2).ok:
                return
        time.sleep(0.3)
    raise TrackingError(
        f"mlflow server did not answer {settings.uri}/health within "
        f"{settings.startup_timeout:g} s (server.startup_timeout){_log_tail(settings)}"
    )


def _log_tail(settings: ServerSettings, lines: int = 8) -> str:
    if not settings.log_file:
        return "; see its output above"
    path = Path(settings.log_file).resolve()
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"; no log at {path}"
    return f"; last lines of {path}: " + " | ".join(mask_secrets(t.strip()) for t in tail)


def stop_server(proc: subprocess.Popen, *, timeout: float = 15) -> None:
    """SIGTERM to the server's whole process group (its workers too), SIGKILL to whatever is
    left after ``timeout`` seconds; returns once the group is gone."""
    pgid = proc.pid  # start_new_session: the group is the child's pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the command ----------------------------------------------------------------------------------
def run_server(overrides: Sequence[str] = (), *, check_only: bool = False) -> int:
    """``trademl server [overrides]``: check, start, print the URI, wait for SIGINT/SIGTERM,
    stop. With ``check_only``, print what would run and return after the checks."""
    from trademl._hydra import compose_config
    from trademl.schemas import validate_config

    cfg = compose_config(overrides, config_name="server")
    settings: ServerSettings = validate_config(cfg, "server")["server"]
    preset = next((o.split("=", 1)[1] for o in overrides if o.startswith("mlflow=")), "local")
    client_preset = "server" if preset == "local" else preset
    check_server(settings)
    if not settings.is_loopback:
        print(
            f"trademl server: warning: listening on {settings.host}:{settings.port}, reachable "
            "from other machines; the MLflow server has no authentication: anyone who reaches "
            "it can read, change and delete every run and model",
            file=sys.stderr,
            flush=True,
        )
    store = mask_secrets(settings.backend)
    artifacts = settings.artifacts
    if settings.s3_endpoint_url:
        artifacts += f" at {settings.s3_endpoint_url}"
    if check_only:
        argv, _ = server_command(settings)
        print(f"checked: store {store}, artifacts {artifacts}, port {settings.port} free")
        print(f"would run: MLFLOW_BACKEND_STORE_URI={store} {' '.join(argv)}")
        return 0
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    proc = None
    try:
        proc = start_server(settings, cancel=stop)
        if not stop.is_set():
            print(f"MLflow tracking server at {settings.uri}", flush=True)
            print(f"  store:     {store}")
            print(f"  artifacts: {artifacts} (served through the server)")
            if settings.log_file:
                print(f"  log:       {Path(settings.log_file).resolve()}")
            print(
                f"point clients at it: MLFLOW_TRACKING_URI={settings.uri} trademl train ...\n"
                f"  or: trademl train mlflow={client_preset} mlflow.tracking_uri={settings.uri}\n"
                f"stop it with Ctrl-C (or kill -TERM {os.getpid()})",
                flush=True,
            )
        while not stop.wait(0.5):
            if proc.poll() is not None:
                raise TrackingError(
                    f"mlflow server stopped by itself (status {proc.returncode})"
                    f"{_log_tail(settings)}"
                )
    finally:
        if proc is not None:
            stop_server(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    name = signal.Signals(received[0]).name if received else "a signal"
    print(f"MLflow tracking server at {settings.uri} stopped ({name})", flush=True)
    return 0
