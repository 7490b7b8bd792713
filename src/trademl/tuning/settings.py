"""``tune:`` of ``conf/train.yaml``: the Optuna study that ``trademl tune`` workers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trademl.errors import ConfigError

__all__ = ["TuneSettings", "masked_url"]


@dataclass(frozen=True)
class TuneSettings:
    # null: <hparams_search>-<model>-<data>, so the same command joins the same study
    study_name: str | None = None
    # an Optuna RDB storage: a sqlite file (one machine) or postgresql://... (a team)
    storage: str = "sqlite:///optuna.db"
    n_trials: int = 20  # trials in the study in all, whatever the number of workers
    timeout: float | None = None  # seconds after which this worker starts no new trial
    sampler: Literal["tpe", "random"] = "tpe"
    n_startup_trials: int = 5  # TPE: random trials before it models the space
    pruner: Literal["median", "none"] = "median"  # needs per-split scores (cross-validation)
    heartbeat_interval: int = 30  # seconds; a trial whose worker died fails after 4 of them
    params: dict[str, Any] = field(default_factory=dict)  # key: Hydra sweep syntax

    def __post_init__(self) -> None:
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise ConfigError(f"tune.n_trials={self.n_trials!r} must be an integer >= 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"tune.timeout={self.timeout!r} must be > 0 seconds, or null")
        if self.n_startup_trials < 0:
            raise ConfigError(f"tune.n_startup_trials={self.n_startup_trials!r} must be >= 0")
        if self.heartbeat_interval < 1:
            raise ConfigError(f"tune.heartbeat_interval={self.heartbeat_interval!r} must be >= 1")
        scheme = str(self.storage).split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "mysql"):
            raise ConfigError(
                f"tune.storage={masked_url(self.storage)!r} must be an Optuna RDB URL: "
                "sqlite:///optuna.db (a file here) or postgresql://user@host/db (a team)"
            )


def masked_url(url: str) -> str:
    """``url`` with its password hidden (for messages, tags and logs)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url
