"""MLflow, through client objects only: settings and the store, runs, records, model files.

* :mod:`~trademl.tracking.settings`: the tracking URI (explicit, ``MLFLOW_TRACKING_URI``,
  ``mlflow.set_tracking_uri``, ``sqlite:///mlflow.db``), HTTP limits, store checks,
  :func:`setup_tracking`;
* :mod:`~trademl.tracking.runs`: :class:`RunRecorder` (one run, ended FINISHED, FAILED or
  KILLED), :func:`signals_raise`, :func:`end_open_runs`;
* :mod:`~trademl.tracking.records`: config params, evaluation figures, git commit;
* :mod:`~trademl.tracking.model_files`: log, register and safely load skops models.

Nothing here changes MLflow's process-wide tracking or registry URI.
"""

from trademl.tracking.records import config_params, flatten, git_commit, log_evaluation
from trademl.tracking.runs import (
    RunRecorder,
    end_open_runs,
    ended_runs,
    finite_metrics,
    run_status_for,
    signals_raise,
)
from trademl.tracking.settings import (
    DEFAULT_TRACKING_URI,
    MlflowSettings,
    resolve_tracking_uri,
    setup_tracking,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowSettings",
    "RunRecorder",
    "config_params",
    "end_open_runs",
    "ended_runs",
    "finite_metrics",
    "flatten",
    "git_commit",
    "log_evaluation",
    "resolve_tracking_uri",
    "run_status_for",
    "setup_tracking",
    "signals_raise",
]
