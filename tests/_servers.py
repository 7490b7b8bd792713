"""Real services for tests, on free 127.0.0.1 ports, always stopped: an MLflow tracking server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str
    port: int
    backend: str
    artifacts: Path
    proc: subprocess.Popen
    log: Path

    def stop(self, sig: int | None = None) -> None:
        """Stop the server (SIGKILL by default: a crash), and wait for it."""
        if self.proc.poll() is None:
            if sig is None:
                self.proc.kill()
            else:
                self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        # uvicorn workers are children of the `mlflow server` process: stop them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, 9)


def start_mlflow_server(
    workdir: Path, port: int | None = None, timeout: float = 120
) -> MlflowServer:
    """``mlflow server`` on a sqlite store in ``workdir``; waits until /health answers."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    backend = f"sqlite:///{workdir}/server.db"
    log = workdir / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--default-artifact-root",
            str(workdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: stop() reaches the workers
    )
    server = MlflowServer(
        f"http://127.0.0.1:{port}", port, backend, workdir / "artifacts", proc, log
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{server.uri}/health", timeout=2).ok:
                return server
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"mlflow server did not start in {timeout} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def mlflow_server(workdir: Path, port: int | None = None) -> Iterator[MlflowServer]:
    server = start_mlflow_server(workdir, port)
    try:
        yield server
    finally:
        server.stop()


class FaultyProxy:
    """An HTTP proxy in front of a server that answers 503 to the paths containing any of
    ``fail_paths`` and forwards everything else: a server that is up but failing."""

    def __init__(self, target: str, fail_paths: tuple[str, ...] = ()) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.target, self.fail_paths, self.refused = target.rstrip("/"), fail_paths, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if any(p in self.path for p in proxy.fail_paths):
                    proxy.refused += 1
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503 test"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                resp = requests.request(
                    self.command, proxy.target + self.path, data=body, headers=headers, timeout=30
                )
                self.send_response(resp.status_code)
                skip = {"content-length", "content-encoding", "transfer-encoding", "connection"}
                for key, value in resp.headers.items():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
