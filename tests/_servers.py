"""Real services for tests, on free 127.0.0.1 ports, always stopped: an MLflow tracking server
(plain, or through `trademl server`), a throwaway PostgreSQL cluster and an S3 stand-in (moto).

Each service runs in its own process group and its context manager stops the whole group, even
when the test fails; ``TrademlServer.leftovers()`` lists what would still be running."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answers(
    proc: subprocess.Popen,
    url: str,
    log: Path,
    what: str,
    timeout: float,
    ok: Callable[[requests.Response], bool] = lambda response: response.ok,
) -> None:
    """Poll GET ``url`` until ``ok`` accepts its answer; a RuntimeError with the tail of
    ``log`` if ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if ok(requests.get(url, timeout=2)):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}"
            )
        time.sleep(0.25)


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
    try:
        wait_until_answers(proc, f"{server.uri}/health", log, "mlflow server", timeout)
    except BaseException:
        server.stop()
        raise
    return server


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


# -- PostgreSQL: a throwaway cluster in a temporary directory -------------------------------------
POSTGRES_HINT = (
    "PostgreSQL (15 or later) is needed for these tests: install it (Debian/Ubuntu: apt-get "
    "install postgresql; initdb and pg_ctl are then in /usr/lib/postgresql/<version>/bin), or "
    "set TRADEML_SKIP_POSTGRES=1 to skip them"
)


def postgres_bin(name: str) -> str | None:
    """``initdb``, ``pg_ctl``, ...: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1:``port``, trust authentication for loopback."""

    port: int
    root: Path
    pg_ctl: str
    user: str = "postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def uri(self, database: str = "postgres", driver: str | None = "psycopg2") -> str:
        """SQLAlchemy URI of a database. The driver is named: SQLAlchemy 2.1 defaults to
        psycopg 3 for a plain postgresql://, and trademl[team] installs psycopg2."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname=database, connect_timeout=5
        )

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its SQLAlchemy URI (``postgresql+psycopg2://...``)."""
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def query(self, database: str, sql: str, *args) -> list[tuple]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``; the postmaster killed if that fails; files removed."""
        import shutil

        with contextlib.suppress(Exception):
            _as_postgres(
                [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                self.root,
                check=False,
                timeout=60,
            )
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().split()[0]), 9)
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_owner() -> tuple[int, int] | None:
    """(uid, gid) of the `postgres` user when running as root (initdb refuses root), else None."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, and initdb refuses root: a `postgres` user is needed "
            "(the postgresql package creates it)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _as_postgres(cmd: list[str], cwd: Path, *, check: bool = True, timeout: float = 120):
    owner = _postgres_owner()
    kwargs = {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=check, timeout=timeout, **kwargs
    )


def start_postgres() -> PostgresServer:
    """``initdb`` + ``pg_ctl start`` in a fresh temporary directory (outside pytest's root-only
    temp tree, which the `postgres` user cannot enter), listening on 127.0.0.1 only."""
    import tempfile

    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError(POSTGRES_HINT)
    root = Path(tempfile.mkdtemp(prefix="trademl-pg-"))
    owner = _postgres_owner()
    if owner is not None:
        os.chown(root, *owner)
    port = free_port()
    server = PostgresServer(port, root, pg_ctl)
    try:
        _as_postgres(
            [
                initdb,
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            root,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        _as_postgres(
            [
                pg_ctl,
                "-D",
                str(server.data),
                "-l",
                str(root / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            root,
        )
    except subprocess.CalledProcessError as exc:
        log = root / "postgres.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}{exc.stdout}{tail}") from None
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL cluster, stopped and removed at exit. Usable from a fixture of any
    scope; without PostgreSQL it fails with what to install, or skips with
    TRADEML_SKIP_POSTGRES=1."""
    import pytest

    try:
        server = start_postgres()
    except FileNotFoundError:
        if os.environ.get("TRADEML_SKIP_POSTGRES") == "1":
            pytest.skip("TRADEML_SKIP_POSTGRES=1: PostgreSQL tests skipped")
        pytest.fail(POSTGRES_HINT, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


# -- S3: moto's server -----------------------------------------------------------------------------
S3_CREDENTIALS = {  # fake, for moto: given to the servers' environments only
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer:
    endpoint: str
    proc: subprocess.Popen
    log: Path

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def env(self) -> dict[str, str]:
        """What a server needs to reach this S3: credentials and the endpoint."""
        return {**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        _stop_group(self.proc)


def _stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, 9)
    proc.wait()


@contextlib.contextmanager
def moto_s3_server(workdir: Path, timeout: float = 60) -> Iterator[MotoServer]:
    """``python -m moto.server`` on 127.0.0.1 (fake credentials in its environment only)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"moto-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**env, **S3_CREDENTIALS},
        start_new_session=True,
    )
    server = MotoServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        url = f"{server.endpoint}/moto-api/"
        wait_until_answers(proc, url, log, "moto server", timeout, ok=lambda _: True)
        yield server
    finally:
        server.stop()


# -- `trademl server` -----------------------------------------------------------------------------
def _proc_table() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgid) of every process (Linux /proc)."""
    rows = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rows.append((int(entry.name), int(fields[1]), int(fields[2])))
    return rows


@dataclass
class TrademlServer:
    """A `trademl server` subprocess and the MLflow server it started."""

    uri: str
    port: int
    proc: subprocess.Popen
    workdir: Path
    mlflow_pgid: int | None = None

    @property
    def stdout(self) -> str:
        return (self.workdir / "trademl-server.out").read_text()

    @property
    def stderr(self) -> str:
        return (self.workdir / "trademl-server.err").read_text()

    def leftovers(self) -> list[int]:
        """Processes still running from this server (its own group and MLflow's)."""
        groups = {self.proc.pid, self.mlflow_pgid} - {None}
        return [pid for pid, _, pgid in _proc_table() if pgid in groups and pid != os.getpid()]

    def stop(self, sig: int = 15, timeout: float = 60) -> int:
        """Signal `trademl server` (SIGTERM), wait for it; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        return self.proc.poll()

    def kill_leftovers(self) -> None:
        for group in {self.proc.pid, self.mlflow_pgid} - {None}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def start_trademl_server(
    workdir: Path, *overrides: str, env: dict[str, str] | None = None, timeout: float = 180
) -> TrademlServer:
    """``python -m trademl.cli server server.port=<free> ...`` in ``workdir``; waits for its
    "MLflow tracking server at" line (printed once /health answers)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trademl.cli", "server", f"server.port={port}", *overrides],
        cwd=workdir,
        stdout=(workdir / "trademl-server.out").open("w"),
        stderr=(workdir / "trademl-server.err").open("w"),
        env={**base, **(env or {})},
        start_new_session=True,
    )
    server = TrademlServer(f"http://127.0.0.1:{port}", port, proc, workdir)
    deadline = time.time() + timeout
    while "MLflow tracking server at" not in server.stdout:
        if proc.poll() is not None or time.time() > deadline:
            server.stop()
            server.kill_leftovers()
            raise RuntimeError(
                f"trademl server did not start (status {proc.poll()}): {server.stderr[-2000:]}"
            )
        time.sleep(0.2)
    children = [pid for pid, ppid, _ in _proc_table() if ppid == proc.pid]
    server.mlflow_pgid = children[0] if children else None  # its own group: pgid == pid
    return server


@contextlib.contextmanager
def trademl_server(workdir: Path, *overrides: str, env: dict[str, str] | None = None):
    """`trademl server` for a block; stopped with SIGTERM at exit, and fails the test if any of
    its processes is still running afterwards (they are killed then)."""
    server = start_trademl_server(workdir, *overrides, env=env)
    try:
        yield server
    finally:
        server.stop()
        left = server.leftovers()
        if left:
            server.kill_leftovers()
            raise AssertionError(f"trademl server left processes running: {left}")
