"""Model files in MLflow: write a skops model into a run, register it, and load it back safely.

Writing (:func:`log_model`) saves the fitted pipeline as an MLflow model (sklearn flavour,
skops format, with the trademl metadata) whose ``python_function`` flavour is
:mod:`trademl.serving` (raw candles in, MLStrategy's signal out, loaded by the rules below;
its signature and input example describe candles), creates MLflow's logged-model record for
the run and uploads the files, all through the run's client. :func:`register_version` then
creates the registry version in one call (with its description), so a failure leaves either
no version or a complete one.

Reading (:func:`load_model_dir`) never unpickles and never obeys the model's own ``MLmodel``
about what is safe: the file must be skops, and it loads with trademl's reviewed
per-estimator trusted-type list (:data:`trademl.models.SKOPS_TRUSTED_TYPES`) only. A pickle
or cloudpickle format, a trusted-type list other than the project's, a type outside it, a
corrupt or missing file: each is a :class:`~trademl.errors.ModelError` naming the model and
version and what was found.
"""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import LoggedModelOutput

from trademl.errors import ModelError
from trademl.tracking.runs import RunRecorder

__all__ = ["ModelFiles", "download_model_files", "load_model_dir", "log_model", "register_version"]

MLMODEL = "MLmodel"
EXTRAS_DIR = "trademl_extras"  # files logged beside the model (see log_model's extra_files)


@dataclass
class LoggedModelInfo:
    """Where a model written by :func:`log_model` lives."""

    model_id: str
    artifact_location: str
    run_id: str


def log_model(
    recorder: RunRecorder,
    model: Any,
    *,
    name: str = "model",
    example_candles: Any = None,
    metadata: dict[str, Any] | None = None,
    trusted_types: list[str] | None = None,
    pip_requirements: list[str] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> LoggedModelInfo:
    """Save ``model`` (skops) as an MLflow model of the recorder's run; returns where it is.

    Its ``python_function`` flavour is :mod:`trademl.serving` (``metadata`` must hold the
    trademl features and labels it rebuilds the strategy from), with the candle signature;
    the last window of ``example_candles`` (clean candles, e.g. the ones trained on) that
    the model needs is its input example. ``extra_files`` (name to content) are written
    beside it in the model's :data:`EXTRAS_DIR` folder (e.g. a compiled form of the model);
    :attr:`ModelFiles.extras` reads them back.
    """
    import mlflow.sklearn
    from mlflow.models import Model

    from trademl import serving

    example = None if example_candles is None else serving.example_window(example_candles, metadata)

    client = recorder.client
    logged = client.create_logged_model(
        recorder.experiment_id, name=name, source_run_id=recorder.run_id
    )
    try:
        client.log_outputs(recorder.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        with tempfile.TemporaryDirectory(prefix="trademl-model-") as tmp:
            path = Path(tmp) / "model"
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=recorder.run_id,
                metadata=metadata,
                model_id=logged.model_id,
            )
            mlflow.sklearn.save_model(
                model,
                str(path),
                mlflow_model=mlflow_model,
                serialization_format="skops",
                skops_trusted_types=list(trusted_types or []),
                signature=serving.candle_signature(),
                input_example=example,
                metadata=metadata,
                pip_requirements=pip_requirements,
            )
            _serve_with_trademl(mlflow_model, path)
            _write_extras(path, extra_files or {})
            client.log_model_artifacts(logged.model_id, str(path))
        client.finalize_logged_model(logged.model_id, "READY")
    except BaseException:
        _quietly(client.finalize_logged_model, logged.model_id, "FAILED")
        raise
    return LoggedModelInfo(logged.model_id, logged.artifact_location, recorder.run_id)


def _serve_with_trademl(mlflow_model: Any, path: Path) -> None:
    """Make :mod:`trademl.serving` the model's ``python_function`` flavour (instead of
    MLflow's sklearn loader, which takes engineered features, answers class codes and trusts
    the types the ``MLmodel`` lists), keeping the environment files; rewrites ``MLmodel``."""
    from mlflow import pyfunc

    from trademl import serving

    env = dict(mlflow_model.flavors.get(pyfunc.FLAVOR_NAME, {}).get(pyfunc.ENV) or {})
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=serving.LOADER_MODULE,
        data=mlflow_model.flavors["sklearn"]["pickled_model"],
        conda_env=env.get("conda"),
        python_env=env.get("virtualenv"),
    )
    mlflow_model.save(str(path / MLMODEL))


def _write_extras(path: Path, extra_files: dict[str, bytes]) -> None:
    if not extra_files:
        return
    folder = path / EXTRAS_DIR
    folder.mkdir()
    for name, content in extra_files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"extra model file name {name!r} must be a plain file name")
        (folder / name).write_bytes(content)


def register_version(
    recorder: RunRecorder, name: str, logged: LoggedModelInfo, *, description: str = ""
) -> str:
    """A new version of registered model ``name`` for ``logged``; returns the version."""
    return _register(recorder.client, name, logged, description)


def register_run_model(
    client: Any, name: str, run_id: str, experiment_id: str, *, description: str = ""
) -> str:
    """Register the model that run ``run_id`` logged (e.g. a sweep's best trial's) as a new
    version of ``name``; returns the version."""
    models = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        max_results=10,
    )
    ready = [m for m in models if str(m.status).upper().endswith("READY")]
    if len(ready) != 1:
        raise ModelError(
            f"run {run_id} has {len(ready)} finished logged models, not one: nothing to register"
        )
    found = ready[0]
    info = LoggedModelInfo(found.model_id, found.artifact_location, run_id)
    return _register(client, name, info, description)


def _register(client: Any, name: str, logged: LoggedModelInfo, description: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    # The artifact location, not ``models:/<model_id>``: MLflow's sqlalchemy registry store
    # resolves the latter with a client on the *global* tracking URI (its own TODO says so).
    version = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=logged.run_id,
        description=description or None,
        model_id=logged.model_id,
    )
    return str(version.version)


def _quietly(fn, *args) -> None:
    with contextlib.suppress(Exception):  # best effort on the way out of a failure
        fn(*args)


# -- reading --------------------------------------------------------------------------------------
@dataclass
class ModelFiles:
    """A model's files downloaded to a local directory, with its parsed ``MLmodel``."""

    path: Path
    mlmodel: dict[str, Any]
    what: str  # "models:/NAME/VERSION" or the URI, for messages

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.mlmodel.get("metadata") or {}
        return dict(meta) if isinstance(meta, dict) else {}

    @property
    def trademl(self) -> dict[str, Any]:
        """The trademl metadata (features, labels, estimator, periods), ``{}`` if absent."""
        meta = self.metadata.get("trademl") or {}
        return dict(meta) if isinstance(meta, dict) else {}

    @property
    def extras(self) -> dict[str, bytes]:
        """The files :func:`log_model` wrote in :data:`EXTRAS_DIR` (name to content)."""
        folder = self.path / EXTRAS_DIR
        if not folder.is_dir():
            return {}
        return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}

    @property
    def feature_count(self) -> int | None:
        """How many feature columns the sklearn model takes: the stored feature names, or
        (a model without them) the columns of its signature when that describes features."""
        names = self.trademl.get("feature_names")
        if isinstance(names, list):
            return len(names)
        if self.pyfunc_loader == "trademl.serving":
            return None  # its signature describes candles, not features
        sig = self.mlmodel.get("signature") or {}
        inputs = sig.get("inputs") if isinstance(sig, dict) else None
        if not isinstance(inputs, str):
            return None
        try:
            return len(yaml.safe_load(inputs))
        except yaml.YAMLError:
            return None

    @property
    def pyfunc_loader(self) -> str | None:
        """The ``python_function`` flavour's loader module: ``trademl.serving`` (candles in,
        signal out) for versions :func:`log_model` writes, ``mlflow.sklearn`` (features in,
        class codes out) for versions logged by an older trademl."""
        flavors = self.mlmodel.get("flavors")
        conf = flavors.get("python_function") if isinstance(flavors, dict) else None
        loader = conf.get("loader_module") if isinstance(conf, dict) else None
        return loader if isinstance(loader, str) else None


def download_model_files(
    source: str, settings: Any, what: str, dst: str | Path, *, only_mlmodel: bool = False
) -> ModelFiles:
    """Download the files at ``source`` (an artifact URI) into ``dst`` and parse ``MLmodel``
    (only that file with ``only_mlmodel``)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    local_dir = _local_path(source)
    if local_dir is not None:  # a local artifact store: read the files where they are
        if not local_dir.is_dir():
            raise ModelError(f"{what}: the model files are missing ({local_dir} does not exist)")
        return ModelFiles(local_dir, read_mlmodel(local_dir, what), what)
    try:
        repo = get_artifact_repository(
            source, tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        if only_mlmodel:
            local = Path(repo.download_artifacts(MLMODEL, dst_path=str(dst))).parent
        else:
            local = Path(repo.download_artifacts("", dst_path=str(dst)))
    except Exception as exc:  # MLflow, OS and HTTP errors alike
        raise ModelError(
            f"{what}: cannot download the model files from {source} "
            f"({type(exc).__name__}: {_short(exc)}); the artifact store may be unreachable "
            "or the files deleted"
        ) from None
    return ModelFiles(local, read_mlmodel(local, what), what)


def _local_path(source: str) -> Path | None:
    """The directory of a local artifact location (a path or ``file:`` URI), else ``None``."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and source.startswith("/"):
        return Path(source)
    return None


def read_mlmodel(path: Path, what: str) -> dict[str, Any]:
    """The parsed ``MLmodel`` file (safe YAML), or a ModelError saying what is wrong."""
    file = path / MLMODEL
    if not file.is_file():
        raise ModelError(f"{what}: the model has no {MLMODEL} file; it is not an MLflow model")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{what}: its {MLMODEL} file is not valid YAML ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{what}: its {MLMODEL} file is not a mapping of model fields")
    return data


def load_model_dir(files: ModelFiles, *, estimator: str | None = None) -> Any:
    """The sklearn model in ``files``, loaded by skops with trademl's trusted types only.

    ``estimator`` is the estimator recorded by the run that trained the model (its
    ``estimator`` tag); it chooses the trusted types, and the ``MLmodel`` metadata must agree
    with it. Without a run, the metadata names it; a model that names none is refused.
    """
    import skops.io as sio

    from trademl.models import trusted_types_for

    what = files.what
    flavors = files.mlmodel.get("flavors")
    flavor = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        raise ModelError(
            f"{what}: its {MLMODEL} has no sklearn flavour; trademl loads sklearn models only"
        )
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != "skops":
        raise ModelError(
            f"{what}: refusing to load serialization_format {fmt!r} (found in {MLMODEL}); "
            "trademl loads only skops files, because unpickling can run arbitrary code. "
            "Retrain the model with trademl (it saves skops)"
        )
    named = files.trademl.get("estimator")
    if named is not None and not isinstance(named, str):
        raise ModelError(f"{what}: its {MLMODEL} names the estimator as {named!r}, not a name")
    if estimator is not None and named is not None and named != estimator:
        raise ModelError(
            f"{what}: its {MLMODEL} says estimator {named!r}, the run that trained it says "
            f"{estimator!r}; refusing to load a model whose files were changed"
        )
    estimator = estimator or named
    if estimator is None:
        raise ModelError(
            f"{what}: neither its run nor its {MLMODEL} names the estimator, so trademl cannot "
            "tell which types to trust; refusing to load it (retrain it with trademl)"
        )
    trusted = trusted_types_for(estimator)
    if trusted is None:
        raise ModelError(
            f"{what}: estimator {estimator!r} has no reviewed skops trusted types in "
            "trademl.models.SKOPS_TRUSTED_TYPES; refusing to load it"
        )
    declared = flavor.get("skops_trusted_types") or []
    if not isinstance(declared, list) or not set(map(str, declared)) <= set(trusted):
        extra = sorted(set(map(str, declared)) - set(trusted)) if isinstance(declared, list) else []
        raise ModelError(
            f"{what}: its {MLMODEL} asks to trust {extra or declared!r}, which is not in "
            f"trademl's list for {estimator} ({', '.join(trusted) or 'none'}); refusing to "
            "load it. A model file cannot widen what trademl trusts"
        )
    name = flavor.get("pickled_model", "model.skops")
    if not isinstance(name, str):
        raise ModelError(f"{what}: its {MLMODEL} names the model file as {name!r}, not a file")
    file = files.path / name
    if Path(name).name != name or not file.is_file():
        raise ModelError(f"{what}: the model file {name!r} named in {MLMODEL} is missing")
    if file.stat().st_size == 0:
        raise ModelError(f"{what}: the model file {name} is empty; re-register the model")
    try:
        untrusted = sio.get_untrusted_types(file=file)
        refused = sorted(set(untrusted) - set(trusted))
        if refused:
            raise ModelError(
                f"{what}: {name} contains type(s) trademl does not trust: {', '.join(refused)}; "
                "refusing to load it"
            )
        return sio.load(file, trusted=trusted)
    except ModelError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ModelError(
            f"{what}: {name} is corrupt or truncated ({type(exc).__name__}: {_short(exc)}); "
            "re-register the model by training it again"
        ) from None
    except Exception as exc:  # skops raises many types for a damaged schema
        raise ModelError(
            f"{what}: {name} cannot be read by skops ({type(exc).__name__}: {_short(exc)}); "
            "re-register the model by training it again"
        ) from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")
