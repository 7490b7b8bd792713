"""The study's storage, the study itself and its MLflow parent run, for ``trademl tune``: an
Optuna RDB storage opened safely by many workers at once, and the checks a worker passes to
join a study (same training config, compatible search space, metric and direction)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from trademl.errors import ConfigError, TrackingError
from trademl.tuning.settings import TuneSettings, masked_url

__all__ = [
    "check_same_search",
    "create_parent",
    "engine_kwargs",
    "fail_stale_trials",
    "open_storage",
    "open_study",
    "storage_url",
    "unfinished",
]


def storage_url(url: str) -> str:
    """``url`` as SQLAlchemy can open it here: a ``postgresql://`` without a driver names
    psycopg2 (``trademl[team]``) when SQLAlchemy's default (psycopg 3 since 2.1) is missing."""
    if url.startswith("postgresql://"):
        from trademl.tracking.server_store import postgres_driver

        return postgres_driver(url)[0]
    return url


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def open_storage(settings: TuneSettings):
    import optuna

    url = storage_url(settings.storage)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    from trademl.tracking.settings import first_open, sqlite_path

    def open_storage():
        # workers starting together on a new database race to create Optuna's tables: one at a
        # time on a sqlite file; again after a short wait elsewhere
        with first_open(sqlite_path(url)), warnings.catch_warnings():
            # heartbeat_interval is "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=4 * settings.heartbeat_interval,
            )

    try:
        for attempt in range(4):
            try:
                return open_storage()
            except ImportError:
                raise
            except Exception:
                if attempt == 3:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        raise ConfigError(
            f"tune.storage={masked_url(url)}: its database driver is missing ({exc}); for "
            "PostgreSQL: pip install 'trademl[team]'"
        ) from None
    except Exception as exc:
        raise TrackingError(
            f"tune.storage={masked_url(url)} is not usable: {' '.join(str(exc).split())[:300]}"
        ) from None


def open_study(storage, settings: TuneSettings, name: str, direction: str, metric: str):
    import optuna

    # no seed: workers share the study, and one seed would make them sample the same points
    sampler = (
        optuna.samplers.TPESampler(seed=None, n_startup_trials=settings.n_startup_trials)
        if settings.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=None)
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if settings.pruner == "median"
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {name} maximises/minimises {study.direction.name.lower()}, this worker "
            f"was given optimized_direction={direction}; use another tune.study_name"
        )
    known = _kept(study, "optimized_metric", metric)
    if known != metric:
        raise ConfigError(
            f"study {name} selects on {known}, this worker on optimized_metric={metric}; use "
            "the same metric or another tune.study_name"
        )
    return study


def _kept(study, key: str, value: str) -> str:
    """The study's ``key`` (user attribute), set to ``value`` by the first worker."""
    known = study.user_attrs.get(key)
    if known is None:
        study.set_user_attr(key, value)
        return value
    return known


def _config_digest(cfg) -> str:
    """What the trials of a study must share: the training config but for the search itself
    (``tune``), where runs are logged (``mlflow``) and display settings."""
    import hashlib
    import json

    from omegaconf import OmegaConf

    values = OmegaConf.to_container(cfg, resolve=True)
    for key in ("tune", "mlflow", "progress", "hydra", "register", "promote"):
        values.pop(key, None)
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_search(study, space: dict, cfg) -> None:
    """A worker joins a study only with its config and a compatible search space: trials on
    other data, labels or features would be compared as if they were alike."""
    from optuna.distributions import check_distribution_compatibility

    digest = _config_digest(cfg)
    if _kept(study, "config_digest", digest) != digest:
        raise ConfigError(
            f"study {study.study_name} was started with another training config (data, "
            "features, labels, split, model or evaluation differ): its trials would not be "
            "comparable; give this search its own tune.study_name"
        )
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            if key in space:
                try:
                    check_distribution_compatibility(dist, space[key])
                except ValueError as exc:
                    raise ConfigError(
                        f"tune.params.{key}: study {study.study_name} searched it as {dist}; "
                        f"{exc} (give this search its own tune.study_name)"
                    ) from None


def create_parent(tracking, experiment_id, study_name, settings, space, metric):
    """The study's MLflow parent run (created once, by the first worker)."""
    client = tracking.client()
    run = client.create_run(
        experiment_id,
        run_name=f"tune {study_name}",
        tags={
            "sweep": "parent",
            "optuna_study": study_name,
            "optuna_storage": masked_url(settings.storage),
            "swept": " ".join(sorted(space)),
            "optimized_metric": metric,
            "tune_n_trials": str(settings.n_trials),
        },
    )
    return run.info.run_id, run.info.experiment_id


def unfinished():
    from optuna.trial import TrialState

    return (TrialState.RUNNING, TrialState.WAITING)


def fail_stale_trials(study) -> None:
    """Optuna's own clean-up of trials whose heartbeat stopped (experimental since 2.9, meant
    for ``study.optimize``: its warnings say so, and this is the intended use)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
