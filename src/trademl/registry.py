"""The model registry, on MLflow: register, promote, load, list, info, delete.

Model references accepted everywhere:

* ``models:/NAME/STAGE`` (``Production``, ``Staging``, ``Archived``, ``None``; deprecated
  by MLflow but supported),
* ``models:/NAME@ALIAS`` (``champion``, the future-proof form),
* ``models:/NAME/VERSION``,
* ``runs:/RUN_ID/model``,
* a bare ``NAME`` (meaning ``models:/NAME/Production``).

Promotion sets both the ``Production`` stage (archiving the previous one) and the
``champion`` alias, so both URIs resolve to the same version.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from trademl.errors import ModelError, TrackingError
from trademl.tracking.model_files import download_model_files, load_model_dir
from trademl.tracking.settings import MlflowSettings

__all__ = [
    "KEY_METRICS",
    "LoadedModel",
    "ModelRef",
    "delete_model",
    "get_model_info",
    "list_models",
    "load_model",
    "parse_model_uri",
    "promote_model",
    "resolve_version",
]

STAGES = ("None", "Staging", "Production", "Archived")
KEY_METRICS = (
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "test_accuracy",
    "test_f1_macro",
    "test_log_loss",
    "test_ic",
)
_NAME = r"[^/@]+"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: exactly one of stage, alias, version, run_id is set."""

    uri: str
    name: str | None = None
    stage: str | None = None
    alias: str | None = None
    version: str | None = None
    run_id: str | None = None


@dataclass
class LoadedModel:
    """A loaded model with where it came from and what it needs to be fed."""

    model: Any
    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)  # files logged beside the model

    @property
    def trademl(self) -> dict[str, Any]:
        """The feature/label configuration stored with the model at training time."""
        meta = self.metadata.get("trademl") or {}
        return dict(meta) if isinstance(meta, dict) else {}


@contextmanager
def _quiet_stages() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*stage.*deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*stage.*", category=FutureWarning)
        yield


def parse_model_uri(reference: str, *, default_stage: str = "Production") -> ModelRef:
    """Parse any accepted model reference (see the module docstring)."""
    ref = str(reference).strip()
    if not ref:
        raise ModelError("empty model reference; give e.g. models:/baseline_rf/Production")
    if ref.startswith("runs:/"):
        parts = ref.removeprefix("runs:/").split("/", 1)
        if len(parts) < 2 or not parts[0]:
            raise ModelError(f"{ref!r}: expected runs:/RUN_ID/ARTIFACT_PATH")
        return ModelRef(uri=ref, run_id=parts[0])
    if not ref.startswith("models:/"):
        if "/" in ref or ":" in ref:
            raise ModelError(
                f"{ref!r} is not a model reference; use models:/NAME/STAGE, "
                "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/model"
            )
        return parse_model_uri(f"models:/{ref}/{default_stage}")
    body = ref.removeprefix("models:/")
    if m := re.fullmatch(rf"({_NAME})@([\w\-]+)", body):
        return ModelRef(uri=ref, name=m[1], alias=m[2])
    if m := re.fullmatch(rf"({_NAME})/(\d+)", body):
        return ModelRef(uri=ref, name=m[1], version=m[2])
    if m := re.fullmatch(rf"({_NAME})/(\w+)", body):
        stage = next((s for s in STAGES if s.lower() == m[2].lower()), None)
        if stage is None:
            raise ModelError(f"{ref!r}: unknown stage {m[2]!r}; stages are {', '.join(STAGES)}")
        return ModelRef(uri=ref, name=m[1], stage=stage)
    if m := re.fullmatch(rf"({_NAME})", body):  # a logged-model id (models:/m-...) or bare name
        if body.startswith("m-"):
            return ModelRef(uri=ref)
        return parse_model_uri(f"models:/{body}/{default_stage}")
    raise ModelError(f"{ref!r} is not a model reference")


def _store(tracking_uri: str | None) -> tuple[MlflowSettings, Any]:
    """Settings and a client for an existing store (a lookup never creates an empty one)."""
    settings = MlflowSettings(tracking_uri=tracking_uri)
    settings.require_store()
    return settings, settings.client()


@contextmanager
def _store_errors(settings: MlflowSettings) -> Iterator[None]:
    """MLflow failures that are not about a model (an unreachable server) as TrackingError."""
    try:
        yield
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow store {settings.describe()} failed: {' '.join(exc.message.split())[:300]}"
        ) from None


def _versions(client, name: str) -> list[ModelVersion]:
    """All versions of ``name``, oldest first, with their aliases filled in.

    (``search_model_versions`` leaves ``aliases`` empty; the registered model has them.)
    """
    with _quiet_stages():
        found = client.search_model_versions(f"name='{name}'")
    aliases: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    for v in found:
        v.aliases = sorted(aliases.get(str(v.version), []))
    return sorted(found, key=lambda v: int(v.version))


def _describe(versions: list[ModelVersion]) -> str:
    if not versions:
        return "none"
    return ", ".join(
        f"{v.version} ({v.current_stage}{', @' + ', @'.join(v.aliases) if v.aliases else ''})"
        for v in versions
    )


def _require_model(client, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        names = sorted(m.name for m in client.search_registered_models())
        raise ModelError(
            f"no registered model {name!r} in {client.tracking_uri}; registered models: "
            f"{', '.join(names) or 'none'}. Train one with `trademl train` (it registers the "
            "model) or check mlflow.tracking_uri"
        ) from exc


def resolve_version(reference: str, *, tracking_uri: str | None = None) -> ModelVersion | None:
    """The registry version a reference points to (``None`` for run or logged-model URIs).

    Raises
    ------
    ModelError
        Naming what is missing and what exists: unknown model, no version in the
        stage, unknown alias or version.
    """
    ref = parse_model_uri(reference)
    if ref.name is None:
        return None
    settings, client = _store(tracking_uri)
    with _store_errors(settings):
        return _resolve(client, ref)


def _resolve(client, ref: ModelRef) -> ModelVersion:
    _require_model(client, ref.name)
    versions = _versions(client, ref.name)
    if ref.version is not None:
        match = [v for v in versions if str(v.version) == ref.version]
        if not match:
            raise ModelError(
                f"{ref.name!r} has no version {ref.version}; versions: {_describe(versions)}"
            )
        return match[0]
    if ref.alias is not None:
        try:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            raise ModelError(
                f"{ref.name!r} has no alias {ref.alias!r}; versions: {_describe(versions)}. "
                f"Set it with `trademl models promote {ref.name} VERSION`"
            ) from exc
    in_stage = [v for v in versions if v.current_stage == ref.stage]
    if not in_stage:
        raise ModelError(
            f"no version of {ref.name!r} in stage {ref.stage!r}; versions: {_describe(versions)}. "
            f"Promote one with `trademl models promote {ref.name} VERSION`"
        )
    return in_stage[-1]


def load_model(reference: str, *, tracking_uri: str | None = None) -> LoadedModel:
    """Load a model and the trademl metadata stored with it, safely.

    The reference is resolved to one exact version first, so the model and the reported
    version always agree. The files load through skops with trademl's own trusted types
    (:func:`trademl.tracking.model_files.load_model_dir`), whatever the model's ``MLmodel``
    says; anything else is a :class:`ModelError` naming the model and version.
    """
    settings, client = _store(tracking_uri)
    ref = parse_model_uri(reference)
    with _store_errors(settings):
        version = _resolve(client, ref) if ref.name is not None else None
        if version is not None:
            what = f"models:/{version.name}/{version.version}"
            source = client.get_model_version_download_uri(version.name, version.version)
            run_id = version.run_id
        else:
            what, (source, run_id) = ref.uri, _unregistered_source(client, ref)
        estimator = _trained_estimator(client, run_id)
    with tempfile.TemporaryDirectory(prefix="trademl-load-") as tmp:
        files = download_model_files(source, settings, what, tmp)
        model = load_model_dir(files, estimator=estimator)
        extras = files.extras
    return LoadedModel(
        model=model,
        uri=what,
        name=version.name if version else None,
        version=str(version.version) if version else None,
        run_id=version.run_id if version else ref.run_id,
        metadata=files.metadata,
        extras=extras,
    )


def _trained_estimator(client, run_id: str | None) -> str | None:
    """The ``estimator`` tag of the run that trained a model (``None`` without one)."""
    if not run_id:
        return None
    try:
        return client.get_run(run_id).data.tags.get("estimator")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def _unregistered_source(client, ref: ModelRef) -> tuple[str, str | None]:
    """Artifact location and run of ``runs:/RUN_ID/PATH`` or of a logged model ``models:/m-``."""
    if ref.run_id is None:
        model_id = ref.uri.removeprefix("models:/")
        try:
            logged = client.get_logged_model(model_id)
        except MlflowException as exc:
            raise ModelError(f"{ref.uri}: no such logged model ({exc.message})") from None
        return logged.artifact_location, logged.source_run_id
    path = ref.uri.removeprefix("runs:/").split("/", 1)[1].strip("/")
    try:
        run = client.get_run(ref.run_id)
    except MlflowException as exc:
        raise ModelError(f"{ref.uri}: no run {ref.run_id} in {client.tracking_uri}") from exc
    for output in (run.outputs.model_outputs if run.outputs else None) or []:
        logged = client.get_logged_model(output.model_id)
        if logged.name == path:
            return logged.artifact_location, ref.run_id
    return f"{run.info.artifact_uri.rstrip('/')}/{path}", ref.run_id  # saved as run artifacts


def promote_model(
    name: str,
    version: int | str,
    *,
    stage: str = "Production",
    alias: str = "champion",
    tracking_uri: str | None = None,
) -> ModelVersion:
    """Move ``version`` to ``stage`` (archiving the versions there) and set ``alias`` on it."""
    if stage not in STAGES:
        raise ModelError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    settings, client = _store(tracking_uri)
    with _store_errors(settings):
        target = _resolve(client, parse_model_uri(f"models:/{name}/{version}"))
        with _quiet_stages():
            client.transition_model_version_stage(
                name, target.version, stage, archive_existing_versions=stage != "None"
            )
        if alias:
            client.set_registered_model_alias(name, alias, target.version)
        return client.get_model_version(name, target.version)


def _run_metrics(client, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        return {}
    return {k: round(metrics[k], 4) for k in KEY_METRICS if k in metrics}


def _version_row(client, v: ModelVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": int(v.version),
        "stage": v.current_stage,
        "aliases": list(v.aliases),
        "run_id": v.run_id,
        "created": v.creation_timestamp,
        **_run_metrics(client, v.run_id),
    }


def list_models(
    name: str | None = None, *, tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """One row per model version: name, version, stage, aliases, run id, key test metrics."""
    settings, client = _store(tracking_uri)
    with _store_errors(settings):
        if name is not None:
            _require_model(client, name)
            names = [name]
        else:
            names = sorted(m.name for m in client.search_registered_models())
        return [_version_row(client, v) for n in names for v in _versions(client, n)]


def get_model_info(reference: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Everything about one version: registry fields, run params/metrics, trademl metadata."""
    settings, client = _store(tracking_uri)
    ref = parse_model_uri(reference, default_stage="Production")
    with _store_errors(settings):
        if ref.name is not None and ref.stage == "Production" and "/" not in reference:
            # bare name: describe the whole model, not only its Production version
            _require_model(client, ref.name)
            versions = list_models(ref.name, tracking_uri=settings.tracking_uri)
            return {"name": ref.name, "versions": versions}
        if ref.name is None:
            raise ModelError(f"{reference!r} is not a registry reference; use models:/NAME/...")
        version = _resolve(client, ref)
        row = _version_row(client, version)
        run = client.get_run(version.run_id) if version.run_id else None
        source = client.get_model_version_download_uri(version.name, version.version)
    what = f"models:/{version.name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="trademl-info-") as tmp:
        files = download_model_files(source, settings, what, tmp, only_mlmodel=True)
    row.update(
        source=version.source,
        description=version.description,
        tags=dict(version.tags),
        metrics=dict(run.data.metrics) if run else {},
        params=dict(run.data.params) if run else {},
        trademl=files.trademl,
        feature_count=files.feature_count,
        pyfunc_loader=files.pyfunc_loader,
    )
    return row


def delete_model(
    name: str, version: int | str | None = None, *, tracking_uri: str | None = None
) -> str:
    """Delete one version, or the registered model with all its versions. Returns what went."""
    settings, client = _store(tracking_uri)
    with _store_errors(settings):
        _require_model(client, name)
        if version is None:
            count = len(_versions(client, name))
            client.delete_registered_model(name)
            return f"deleted registered model {name!r} and its {count} version(s)"
        target = _resolve(client, parse_model_uri(f"models:/{name}/{version}"))
        client.delete_model_version(name, target.version)
        return f"deleted version {target.version} of {name!r}"
