"""Hyperparameter search over trademl trainings with Optuna, shared by many workers.

* :mod:`~trademl.tuning.settings`: ``tune:`` of the training config;
* :mod:`~trademl.tuning.space`: a search space in Hydra's sweep syntax, as Optuna distributions;
* :mod:`~trademl.tuning.storage`: the Optuna storage and study, the checks to join a study;
* :mod:`~trademl.tuning.coordination`: trial slots and the parent run, in the study's database;
* :mod:`~trademl.tuning.study`: :func:`tune`, one worker (``trademl tune``);
* :mod:`~trademl.tuning.summary`: the study's summary on its parent run, written once.
"""

from trademl.tuning.settings import TuneSettings

__all__ = ["TuneSettings"]
