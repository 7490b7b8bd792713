"""Where runs and models live: the tracking URI, the HTTP limits, and the store checks.

The tracking URI is resolved the way MLflow users expect, in this order:

1. an explicit value (``tracking_uri=`` argument, ``mlflow.tracking_uri`` config key);
2. the ``MLFLOW_TRACKING_URI`` environment variable;
3. a URI set in this process with ``mlflow.set_tracking_uri(...)``;
4. ``sqlite:///mlflow.db`` (the working directory).

Everything here talks to MLflow through :class:`mlflow.MlflowClient` objects built for that
URI; nothing changes MLflow's process-wide tracking or registry URI.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow.tracking import MlflowClient

from trademl.errors import ConfigError, TrackingError

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowSettings",
    "resolve_tracking_uri",
    "setup_tracking",
    "sqlite_path",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
# MLflow's own environment variables for its HTTP client (read by MLflow at every request).
_HTTP_ENV = {
    "http_timeout": "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "http_max_retries": "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "http_backoff_factor": "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
}
_HTTP_DEFAULTS = {"http_timeout": 10, "http_max_retries": 2, "http_backoff_factor": 1}


_ENV_LOCK = threading.RLock()


class _LimitedClient:
    """An MlflowClient whose every method call runs under a store's HTTP limits."""

    def __init__(self, client: MlflowClient, settings: MlflowSettings, retries: int | None):
        self._client, self._settings, self._retries = client, settings, retries

    def __getattr__(self, name: str):
        # only the client's own methods: pickle (a sweep callback sent to joblib workers)
        # looks up dunders on an instance whose _client is not set yet, which recursed
        if name.startswith("__") or name in ("_client", "_settings", "_retries"):
            raise AttributeError(name)
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            with self._settings.http_limits(max_retries=self._retries):
                return attr(*args, **kwargs)

        return call


def resolve_tracking_uri(explicit: str | None = None) -> tuple[str, str]:
    """The tracking URI to use and where it came from (for messages).

    Returns ``(uri, origin)`` with origin one of ``"explicit"``, ``"MLFLOW_TRACKING_URI"``,
    ``"mlflow.set_tracking_uri"`` or ``"default"``.
    """
    if explicit:
        return str(explicit), "explicit"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, "MLFLOW_TRACKING_URI"
    import mlflow

    if mlflow.is_tracking_uri_set():  # set_tracking_uri() without the environment variable
        return mlflow.get_tracking_uri(), "mlflow.set_tracking_uri"
    return DEFAULT_TRACKING_URI, "default"


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute), else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri.removeprefix("sqlite:///"))).resolve()


@dataclass(frozen=True)
class MlflowSettings:
    """Where runs and models are stored (the ``mlflow`` config group).

    Attributes
    ----------
    tracking_uri
        Tracking and registry store; ``None`` resolves it (see the module docstring).
    artifact_root
        Directory (relative to the working directory) or URI under which each experiment gets
        ``<artifact_root>/<experiment_name>``; applies when the experiment is created.
        ``None``: the store's own default, e.g. a tracking server's ``mlflow-artifacts:/``
        (artifacts uploaded through the server, which needs no client access to its storage).
    experiment_name, registered_model_name, run_name
        Where runs go and the name new model versions are registered under.
    http_timeout, http_max_retries, http_backoff_factor
        Limits of MLflow's HTTP client for a tracking server (seconds per request, retries,
        exponential back-off factor), applied to every call of :meth:`client`; ``None`` takes
        MLflow's environment variable if the user set it, else 10 s, 2 retries, factor 1. A
        dead server is then given up on within about ``(retries + 1) x timeout +
        2**retries x factor`` seconds per request.
    """

    tracking_uri: str | None = None
    artifact_root: str | None = "mlruns"
    experiment_name: str = "trademl"
    registered_model_name: str | None = None
    run_name: str | None = None
    http_timeout: int | None = None
    http_max_retries: int | None = None
    http_backoff_factor: int | None = None
    uri_origin: str = field(default="explicit", compare=False)

    def __post_init__(self) -> None:
        if self.tracking_uri is not None and not isinstance(self.tracking_uri, str):
            raise ConfigError(f"mlflow.tracking_uri={self.tracking_uri!r} must be a string")
        uri, origin = resolve_tracking_uri(self.tracking_uri)
        object.__setattr__(self, "tracking_uri", uri)
        object.__setattr__(self, "uri_origin", origin)
        if _scheme(uri) not in _SCHEMES:
            hint = (
                " (a plain ./mlruns file store is no longer supported by MLflow)"
                if _scheme(uri) in ("file", "") or "://" not in uri
                else ""
            )
            raise ConfigError(
                f"mlflow.tracking_uri={uri!r} (from {origin}) is not supported{hint}; use "
                "sqlite:///path/to/mlflow.db, postgresql://..., or http://host:port of a "
                "tracking server"
            )
        if not self.experiment_name or not isinstance(self.experiment_name, str):
            raise ConfigError("mlflow.experiment_name must be a non-empty string")
        for key, default in _HTTP_DEFAULTS.items():
            value = getattr(self, key)
            if value is None:
                env = os.environ.get(_HTTP_ENV[key])
                value = int(env) if env and env.strip().isdigit() else default
            minimum = 1 if key == "http_timeout" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"mlflow.{key}={value!r} must be an integer >= {minimum}")
            object.__setattr__(self, key, value)

    # -- the store ------------------------------------------------------------------------------
    @property
    def is_server(self) -> bool:
        return _scheme(self.tracking_uri) in ("http", "https")

    def describe(self) -> str:
        """The store for messages: the URI, its origin and, for sqlite, the absolute file."""
        db = sqlite_path(self.tracking_uri)
        where = f" = {db}" if db is not None else ""
        return f"{self.tracking_uri}{where} (from {self.uri_origin})"

    def client(self, *, max_retries: int | None = None) -> MlflowClient:
        """A client for this store (tracking and registry).

        For a tracking server every call of the client runs under this config's HTTP limits
        (:meth:`http_limits`; ``max_retries`` overrides the retries).
        """
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        if not self.is_server:
            return client
        return _LimitedClient(client, self, max_retries)  # type: ignore[return-value]

    @contextlib.contextmanager
    def http_limits(self, *, max_retries: int | None = None) -> Iterator[None]:
        """Within the block, MLflow's HTTP client uses this config's timeout and retries.

        MLflow reads them from its documented environment variables at every request and
        takes no per-client setting, so they are set there for the block only and restored
        after (under a lock); nothing in MLflow is patched and nothing outlives the call.
        """
        if not self.is_server:
            yield
            return
        values = {env: str(getattr(self, key)) for key, env in _HTTP_ENV.items()}
        if max_retries is not None:
            values[_HTTP_ENV["http_max_retries"]] = str(max_retries)
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in values}
            os.environ.update(values)
            try:
                yield
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def check_reachable(self) -> None:
        """Fail fast (one clear error) if a tracking server does not answer."""
        if not self.is_server:
            return
        import requests

        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            requests.get(url, timeout=min(5, self.http_timeout))
        except requests.RequestException as exc:
            reason = type(exc).__name__
            if isinstance(exc, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(exc, requests.Timeout):
                reason = f"no answer within {min(5, self.http_timeout)} s"
            raise TrackingError(
                f"MLflow tracking server {self.tracking_uri} (from {self.uri_origin}) is not "
                f"reachable: {reason}. Start it (mlflow server --host "
                f"{urlparse(self.tracking_uri).hostname} --port "
                f"{urlparse(self.tracking_uri).port or 80} ...) or use the local store "
                "(mlflow=local)"
            ) from None

    def require_store(self) -> None:
        """For lookups: the store must exist (a lookup never creates an empty one)."""
        db = sqlite_path(self.tracking_uri)
        if db is not None and not db.is_file():
            raise TrackingError(
                f"no MLflow store at {db} (tracking URI {self.tracking_uri}, from "
                f"{self.uri_origin}). Train a model first (`trademl train`), or point to your "
                "store with MLFLOW_TRACKING_URI, mlflow.tracking_uri=... (trademl train, "
                "backtest, live), --tracking-uri (trademl models) or tracking_uri= (Python)"
            )
        self.check_reachable()

    def artifact_location(self) -> str | None:
        root = self.artifact_root
        if root is None:
            return None
        if "://" in root:
            return f"{root.rstrip('/')}/{self.experiment_name}"
        return (Path(root).resolve() / self.experiment_name).as_uri()


@contextlib.contextmanager
def first_open(db: Path | None):
    """Hold an exclusive lock (``<db>.init.lock``, left beside it) while a sqlite database is
    opened: MLflow and Optuna create and migrate their tables on first use, and two processes
    doing it at once fail ("duplicate column name", "table studies already exists"). Every
    opening takes it; it is held only while the tables are checked. ``None``: no lock."""
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        yield
        return
    with open(db.with_name(db.name + ".init.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# The MLflow UI opens an experiment on its runs (not on its GenAI overview) when it is tagged
# as a model-training experiment; trademl's experiments are, whoever created them.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def setup_tracking(settings: MlflowSettings | Mapping | None) -> tuple[MlflowSettings, str]:
    """Check the store answers and get (or create) the experiment: (settings, experiment id).

    Creates the sqlite database's directory when needed (this is where runs are written); a
    tracking server that does not answer is one :class:`TrackingError` before anything else.
    """
    from mlflow.exceptions import MlflowException

    from trademl._config import coerce_config

    cfg = coerce_config(settings, MlflowSettings, name="mlflow")
    db = sqlite_path(cfg.tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    cfg.check_reachable()
    try:
        with first_open(db):  # workers starting together on a new sqlite store
            client = cfg.client()
            exp = client.get_experiment_by_name(cfg.experiment_name)
            client.search_registered_models(max_results=1)  # the registry's tables too
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"experiment {cfg.experiment_name!r} is deleted in {cfg.describe()}; "
                    "restore it (mlflow experiments restore) or choose another "
                    "mlflow.experiment_name"
                )
            if EXPERIMENT_KIND_TAG not in exp.tags:
                client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
            return cfg, exp.experiment_id
        try:
            return cfg, client.create_experiment(
                cfg.experiment_name,
                artifact_location=cfg.artifact_location(),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
            )
        except MlflowException:  # created concurrently by a parallel job
            exp = client.get_experiment_by_name(cfg.experiment_name)
            if exp is None:
                raise
            return cfg, exp.experiment_id
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow store {cfg.describe()} failed: {' '.join(exc.message.split())[:300]}"
        ) from None
