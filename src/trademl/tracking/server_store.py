"""What ``trademl server`` serves, and the checks made before it starts anything.

:class:`ServerSettings` is the ``server`` config group (``conf/server/<preset>.yaml``, picked by
the ``mlflow`` preset). :func:`check_server` refuses, with one clear error, what would make the
server fail: the port taken, a plain ``./mlruns`` file store as backend, the database driver
missing, PostgreSQL or the S3 bucket not answering. Passwords are masked in every message
(:func:`mask_secrets`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from trademl.errors import ConfigError, TrackingError

__all__ = ["ServerSettings", "check_server", "mask_secrets", "postgres_driver"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# SQLAlchemy driver (the part after "+") -> the module it needs
_PG_DRIVERS = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000"}
_TEAM_EXTRA = "pip install 'trademl[team]'"
_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def mask_secrets(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``, in any text."""
    return _PASSWORD.sub(r"\1***@", str(text))


@dataclass(frozen=True)
class ServerSettings:
    """The ``server`` config group: where ``trademl server`` listens and what it serves.

    Attributes
    ----------
    host, port
        Interface and port (``127.0.0.1:5000``). Another interface than loopback makes the
        server reachable from other machines, without authentication: it warns.
    workers
        Worker processes of the server.
    backend_store_uri
        SQLAlchemy URI of runs and the registry: ``sqlite:///mlflow.db``,
        ``postgresql://user@host:5432/db`` (password from ``PGPASSWORD`` or ``~/.pgpass``).
    artifacts_destination
        Where the server stores artifacts: a folder (relative to the working directory) or a
        URI such as ``s3://bucket/prefix``.
    s3_endpoint_url
        An S3-compatible service (MinIO, ...), exported to the server as
        ``MLFLOW_S3_ENDPOINT_URL``; ``None``: AWS S3.
    startup_timeout
        Seconds to wait for ``/health`` to answer.
    log_file
        The server's output (appended); ``None``: this terminal.
    jobs
        MLflow's job runner (GenAI scorers and trace roll-ups: eight more processes, none of
        them used by trademl); off unless asked for.
    """

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    backend_store_uri: str = "sqlite:///mlflow.db"
    artifacts_destination: str = "mlruns"
    s3_endpoint_url: str | None = None
    startup_timeout: float = 120
    log_file: str | None = "mlflow-server.log"
    jobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"server.host={self.host!r} must be a host name or address")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigError(f"server.port={self.port!r} must be an integer in [1, 65535]")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"server.port={self.port!r} must be an integer in [1, 65535]")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"server.workers={self.workers!r} must be an integer >= 1")
        if not self.startup_timeout > 0:
            raise ConfigError(f"server.startup_timeout={self.startup_timeout!r} must be > 0")
        for key in ("backend_store_uri", "artifacts_destination"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ConfigError(f"server.{key} must be a non-empty string")

    @property
    def is_loopback(self) -> bool:
        return self.host in _LOOPBACK or self.host.startswith("127.")

    @property
    def uri(self) -> str:
        """The URI clients on this machine use (loopback when bound to every interface)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def backend(self) -> str:
        """The backend URI with a relative sqlite path made absolute (the server's cwd may
        differ from what a user means)."""
        uri = self.backend_store_uri
        db = _sqlite_file(uri)
        if db is not None:
            return f"sqlite:///{db}"
        return postgres_driver(uri)[0] if _scheme(uri) == ("postgresql", None) else uri

    @property
    def artifacts(self) -> str:
        """The artifacts destination, a local folder made absolute."""
        dest = self.artifacts_destination
        if dest.startswith("file://"):
            return str(Path(unquote(urlparse(dest).path)).resolve())
        if "://" in dest:
            return dest
        return str(Path(dest).resolve())


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///") or uri.removeprefix("sqlite:///") in ("", ":memory:"):
        return None
    return Path(unquote(uri.removeprefix("sqlite:///"))).resolve()


def postgres_driver(uri: str) -> tuple[str, str]:
    """The URI MLflow gets and the driver module it needs. A ``postgresql://`` URI without a
    driver takes SQLAlchemy's default (psycopg2 before SQLAlchemy 2.1, psycopg 3 since); when
    that is not installed but psycopg2 (``trademl[team]``) is, the URI names psycopg2."""
    driver = _scheme(uri)[1]
    if driver is not None:
        return uri, _PG_DRIVERS.get(driver, driver)
    from sqlalchemy.engine import make_url

    default = make_url(uri).get_dialect().driver
    if importlib.util.find_spec(default) is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + uri.split("://", 1)[1], "psycopg2"
    return uri, default


def _scheme(uri: str) -> tuple[str, str | None]:
    """``postgresql+psycopg2://...`` -> ``("postgresql", "psycopg2")``."""
    if "://" not in uri:
        return "", None
    scheme = uri.split("://", 1)[0].lower()
    base, _, driver = scheme.partition("+")
    return base, driver or None


# -- checks before anything starts ----------------------------------------------------------------
def check_server(settings: ServerSettings, *, timeout: float = 5) -> None:
    """Refuse, with one clear error, what would make the server fail: the port taken, a file
    store as backend, a missing database driver, PostgreSQL or the S3 bucket not answering."""
    _check_port(settings)
    _check_backend(settings.backend_store_uri, timeout=timeout)
    _check_artifacts(settings, timeout=timeout)


def _check_port(settings: ServerSettings) -> None:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            raise TrackingError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
                "(is another server running there?); choose another with server.port=..."
            ) from None


def _check_backend(uri: str, *, timeout: float) -> None:
    base = _scheme(uri)[0]
    shown = mask_secrets(uri)
    if base in ("", "file"):
        raise ConfigError(
            f"server.backend_store_uri={shown!r}: a plain ./mlruns file store is not supported "
            "(MLflow no longer supports it as a tracking backend); use sqlite:///mlflow.db or "
            "postgresql://user@host:5432/db"
        )
    if base not in _SQL_SCHEMES:
        raise ConfigError(
            f"server.backend_store_uri={shown!r} is not a database URI; use "
            "sqlite:///path/to/mlflow.db or postgresql://user@host:5432/db"
        )
    if base == "sqlite":
        db = _sqlite_file(uri)
        if db is None:
            raise ConfigError(f"server.backend_store_uri={shown!r}: give a file, sqlite:///x.db")
        return
    if base != "postgresql":
        return  # mysql, mssql: MLflow reports their problems itself
    uri, module = postgres_driver(uri)
    if importlib.util.find_spec(module) is None:
        install = _TEAM_EXTRA if module == "psycopg2" else f"pip install {module}"
        raise TrackingError(
            f"server.backend_store_uri={shown} needs the PostgreSQL driver {module}, which is "
            f"not installed: {install}"
        )
    _check_postgres(uri, module, timeout=timeout)


def _check_postgres(uri: str, module: str, *, timeout: float) -> None:
    parsed = urlparse(uri)
    where = f"PostgreSQL at {parsed.hostname or 'localhost'}:{parsed.port or 5432}"
    try:
        if module == "psycopg2":
            import psycopg2

            dsn = re.sub(r"^postgresql\+psycopg2://", "postgresql://", uri)
            psycopg2.connect(dsn, connect_timeout=max(1, int(timeout))).close()
        else:
            import sqlalchemy

            sqlalchemy.create_engine(uri).connect().close()
    except Exception as exc:
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())
        hint = ""
        if "does not exist" in text and "database" in text:
            db = parsed.path.lstrip("/")
            hint = f"; create it first (createdb -h HOST -p PORT -U USER {db})"
        elif "password" in text:
            hint = "; give the password in PGPASSWORD or ~/.pgpass (never in a config file)"
        raise TrackingError(
            f"{where} (server.backend_store_uri={mask_secrets(uri)}) is not reachable: "
            f"{mask_secrets(text)[:300]}{hint}"
        ) from None


def _check_artifacts(settings: ServerSettings, *, timeout: float) -> None:
    dest = settings.artifacts_destination
    if "://" not in dest or dest.startswith("file://"):
        return  # created at the start
    if not dest.startswith("s3://"):
        return  # gs://, wasbs://, ...: MLflow checks them on first use
    if importlib.util.find_spec("boto3") is None:
        raise TrackingError(f"server.artifacts_destination={dest} needs boto3: {_TEAM_EXTRA}")
    import boto3
    import botocore.exceptions as bce
    from botocore.config import Config

    bucket = urlparse(dest).netloc
    endpoint = settings.s3_endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
    where = f"S3 bucket {bucket!r} at {endpoint or 'AWS S3'}"
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    try:
        boto3.client("s3", endpoint_url=endpoint, config=config).head_bucket(Bucket=bucket)
    except bce.NoCredentialsError:
        raise TrackingError(
            f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
            "AWS_PROFILE) in the server's environment"
        ) from None
    except (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError) as exc:
        raise TrackingError(f"{where} is not reachable: {exc}") from None
    except bce.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        reason = {
            "404": "the bucket does not exist; create it first",
            "NoSuchBucket": "the bucket does not exist; create it first",
            "403": "access denied with these credentials",
        }.get(code, " ".join(str(exc).split()))
        raise TrackingError(f"{where}: {reason}") from None
    except (bce.BotoCoreError, ValueError) as exc:
        raise TrackingError(f"{where}: {' '.join(str(exc).split())}") from None
