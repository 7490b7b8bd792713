"""Entry point of the MLproject: maps ``mlflow run -P ...`` parameters onto Hydra overrides.

``mlflow run`` passes the declared parameters (``none``: leave it to the config) and appends
any other ``-P key=value`` as ``--key value``: each becomes the Hydra override ``key=value``.
A free-form list of overrides (``-P overrides="a=1 b=2"``) is split with shell rules.

The training logs into the run ``mlflow run`` created (``MLFLOW_RUN_ID``) when that run is in
the training's experiment (``mlflow run . --experiment-name trademl``). ``mlflow run`` puts it
in MLflow's ``Default`` experiment when no experiment is named: then the training goes to a run
of its own experiment (``trademl``), beside the ``trademl train`` runs it compares with, and
the ``Default`` run points to it (tags ``trademl.training_run_id`` and a note).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

__all__ = ["main", "to_overrides"]

NONE = ("", "none", "None", "null")


def to_overrides(args: argparse.Namespace, extra: Sequence[str] = ()) -> list[str]:
    """The Hydra overrides for the MLproject parameters (``none`` ones are left out) and the
    undeclared ones (``--key value`` pairs in ``extra``)."""
    out = [f"model={args.model}", f"data={args.data}"]
    if args.data_path not in NONE:
        out.append(f"data.path={args.data_path}")
    if args.horizon not in NONE:
        out.append(f"labels.horizon={args.horizon}")
    if args.promote not in NONE:
        out.append(f"promote={args.promote}")
    if args.overrides not in NONE:
        out += shlex.split(args.overrides)
    items = list(extra)
    while items:
        key = items.pop(0)
        if not key.startswith("--") or not items or items[0].startswith("--"):
            from trademl.errors import ConfigError

            raise ConfigError(f"MLproject parameter {key!r}: expected -P key=value")
        out.append(f"{key[2:]}={items.pop(0)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trademl-mlproject")
    parser.add_argument("--model", default="random_forest")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--data-path", default="none")
    parser.add_argument("--horizon", default="none")
    parser.add_argument("--promote", default="none")
    parser.add_argument("--overrides", default="none")
    args, extra = parser.parse_known_args(argv)
    try:
        import hydra  # noqa: F401  (the dependencies are there: trademl's own imports below)
        import mlflow  # noqa: F401
        import sklearn  # noqa: F401

        from trademl.errors import EXIT_USER_ERROR, exit_on_user_error
    except ImportError as exc:  # pragma: no cover - an environment without the dependencies
        print(
            f"trademl-mlproject: this environment lacks trademl's dependencies ({exc}); install "
            "them in it (pip install -e .), or let MLflow create one (drop --env-manager local)",
            file=sys.stderr,
        )
        return 2
    try:
        with exit_on_user_error():
            _train(to_overrides(args, extra))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    return 0


def _train(overrides: list[str]) -> None:
    from trademl._hydra import compose_config
    from trademl.schemas import validate_config
    from trademl.tracking import setup_tracking
    from trademl.train import train

    cfg = compose_config(overrides)
    settings, experiment_id = setup_tracking(validate_config(cfg, "train")["mlflow"])
    project_run = os.environ.get("MLFLOW_RUN_ID")
    client = settings.client()
    elsewhere = project_run and client.get_run(project_run).info.experiment_id != experiment_id
    if elsewhere:  # `mlflow run` without --experiment-name: its run is in Default
        os.environ.pop("MLFLOW_RUN_ID")
    result = train(cfg)
    print(result.summary())
    if elsewhere:
        experiment = settings.experiment_name
        client.set_tag(project_run, "trademl.training_run_id", result.run_id)
        client.set_tag(
            project_run,
            "mlflow.note.content",
            f"`mlflow run` started this run in its Default experiment; the training is run "
            f"{result.run_id} of experiment {experiment!r}, beside the other trainings. Give "
            f"`--experiment-name {experiment}` to train into the run mlflow run creates.",
        )
        print(f"training logged in experiment {experiment!r}, run {result.run_id}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
