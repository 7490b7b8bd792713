"""Model specifications: what the ``model`` config group instantiates.

A :class:`ModelSpec` names a scikit-learn classifier and its hyperparameters;
:meth:`ModelSpec.build` returns a ``Pipeline(StandardScaler, classifier)`` so the
saved model scales its own inputs. Class imbalance is handled by balanced class
weights when the classifier supports them, otherwise by balanced sample weights
(:meth:`ModelSpec.fit_params`).

Serialisation is skops (MLflow's secure default). Each estimator declares the
few non-default types skops must trust to load it (:data:`SKOPS_TRUSTED_TYPES`);
a model that needs anything else is refused rather than trusted blindly.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from trademl._config import did_you_mean
from trademl.errors import ConfigError, ModelError

__all__ = [
    "SKOPS_TRUSTED_TYPES",
    "ModelSpec",
    "check_trusted_types",
    "shared_sweep_keys",
    "single_job",
    "trusted_types_for",
]

log = logging.getLogger(__name__)

# Types that skops refuses by default but that these estimators need.
SKOPS_TRUSTED_TYPES: dict[str, list[str]] = {
    "sklearn.ensemble.RandomForestClassifier": ["sklearn.tree._tree.Tree"],
    "sklearn.ensemble.ExtraTreesClassifier": ["sklearn.tree._tree.Tree"],
    "sklearn.tree.DecisionTreeClassifier": ["sklearn.tree._tree.Tree"],
    "sklearn.ensemble.HistGradientBoostingClassifier": [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    ],
    "sklearn.linear_model.LogisticRegression": [],
    # The Booster is restored from LightGBM's text model string (parsed, not executed).
    "lightgbm.LGBMClassifier": [
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
    ],
}


class ModelSpec:
    """A classifier choice with hyperparameters (the ``model`` config group).

    Parameters
    ----------
    name
        Short model name (``random_forest``), logged as the ``model_type`` tag.
    estimator
        Import path of a scikit-learn classifier class.
    registered_name
        Default registry name for models of this spec (``baseline_rf``).
    scale
        Put a ``StandardScaler`` in front of the classifier.
    balance
        ``class_weight`` (use ``class_weight='balanced'``), ``sample_weight``
        (balanced sample weights at fit time) or ``none``.
    **params
        Hyperparameters of the classifier. The shared sweep keys (``max_depth``,
        :func:`shared_sweep_keys`) are declared in every model config so that
        ``-m model=a,b model.max_depth=5,10`` works across model types: one the
        classifier does not take is ignored with a warning when set, and silently
        when null. Any other key the classifier does not take is a ConfigError.
    """

    def __init__(
        self,
        name: str,
        estimator: str,
        registered_name: str,
        *,
        scale: bool = True,
        balance: str = "class_weight",
        **params: Any,
    ) -> None:
        self.name = name
        self.estimator = estimator
        self.registered_name = registered_name
        self.scale = scale
        self.balance = balance
        self.params = params
        if balance not in ("class_weight", "sample_weight", "none"):
            raise ConfigError(
                f"model.balance={balance!r} is not valid; choose class_weight, sample_weight "
                "or none"
            )
        self._cls = _import_estimator(estimator)
        if trusted_types_for(estimator) is None:
            raise ConfigError(
                f"model.estimator={estimator!r} has no reviewed skops trusted types, so its "
                "models could be trained but never loaded; add its types to "
                "trademl.models.SKOPS_TRUSTED_TYPES after reviewing them, or choose one of "
                + ", ".join(sorted(SKOPS_TRUSTED_TYPES))
            )
        signature = inspect.signature(self._cls.__init__).parameters
        accepted = {
            n for n, p in signature.items() if n != "self" and p.kind not in (p.VAR_KEYWORD,)
        }
        # LightGBM takes its many parameters (verbose, ...) through **kwargs
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.values())
        shared = shared_sweep_keys()
        self.estimator_params, self.ignored_params = {}, {}
        for key, value in params.items():
            passed = takes_kwargs and key not in shared and value is not None
            if passed and key not in accepted and did_you_mean(key, sorted(accepted)):
                raise ConfigError(  # through **kwargs, but a misspelling of a named parameter
                    f"model.{key} is not a parameter of {estimator}"
                    f"{did_you_mean(key, sorted(accepted))}"
                )
            if key in accepted or passed:
                self.estimator_params[key] = value
            elif key in shared:
                if value is not None:
                    self.ignored_params[key] = value
                    log.warning("model.%s=%r does not apply to %s; ignored", key, value, estimator)
            else:
                raise ConfigError(
                    f"model.{key} is not a parameter of {estimator}"
                    f"{did_you_mean(key, sorted(accepted | shared))} (its parameters: "
                    f"{', '.join(sorted(accepted))})"
                )
        if balance == "class_weight":
            if "class_weight" not in accepted:
                raise ConfigError(
                    f"model.balance=class_weight, but {estimator} has no class_weight; "
                    "use model.balance=sample_weight"
                )
            self.estimator_params.setdefault("class_weight", "balanced")

    def __repr__(self) -> str:
        return f"ModelSpec(name={self.name!r}, estimator={self.estimator!r}, params={self.params})"

    @property
    def trusted_types(self) -> list[str]:
        """The skops types to trust when loading this model."""
        return trusted_types_for(self.estimator) or []

    @property
    def pip_requirements(self) -> list[str]:
        """Packages (pinned) the model needs beyond scikit-learn, for its MLflow environment."""
        package = self.estimator.split(".", 1)[0]
        if package in ("sklearn", "builtins"):
            return []
        module = importlib.import_module(package)
        return [f"{package}=={module.__version__}"]

    def build(self, seed: int | None = None) -> Pipeline:
        """A fresh, unfitted ``Pipeline`` (scaler, classifier)."""
        params = dict(self.estimator_params)
        if seed is not None and "random_state" in inspect.signature(self._cls).parameters:
            params.setdefault("random_state", seed)
        try:
            clf = self._cls(**params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model {self.name}: {exc}") from exc
        steps = [("scaler", StandardScaler())] if self.scale else []
        steps.append(("clf", clf))
        return Pipeline(steps)

    def validate_params(self) -> None:
        """Check the hyperparameters as the estimator would at fit time, without fitting.

        scikit-learn estimators declare their parameter constraints; for others (LightGBM) a
        value must have the type of the parameter's default (an int for an int, ...).
        """
        clf = self.build(0).steps[-1][1]
        if hasattr(clf, "_parameter_constraints"):
            try:
                clf._validate_params()
            except (ValueError, TypeError) as exc:
                raise ConfigError(_param_message(str(exc))) from None
            return
        defaults = {
            n: p.default
            for n, p in inspect.signature(self._cls.__init__).parameters.items()
            if p.default is not p.empty
        }
        self._check_default_types(defaults)
        self._trial_fit()

    def _check_default_types(self, defaults: dict[str, Any]) -> None:
        for key, value in self.estimator_params.items():
            default = defaults.get(key)
            if default is None or (isinstance(default, str) and not isinstance(value, str)):
                continue
            kind = float if isinstance(default, float) else type(default)
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if kind is float:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok:
                raise ConfigError(
                    f"model.{key}={value!r} must be of type {kind.__name__} (like its default "
                    f"{default!r} in {self.estimator})"
                )

    def _trial_fit(self) -> None:
        """Let a library without declared constraints (LightGBM) check its own parameters on
        a tiny made-up problem (one tree, 60 rows): a bad value fails here, not after the
        data is loaded."""
        pipeline = self.build(0)
        clf = pipeline.steps[-1][1]
        if "n_estimators" in clf.get_params():
            clf.set_params(n_estimators=1)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 3))
        y = np.repeat([0, 1, 2], 20)
        try:
            with _native_output_silenced():  # LightGBM prints "[Fatal] ..." before it raises
                pipeline.fit(X, y, **self.fit_params(y))
        except Exception as exc:  # the library's own error type, whatever it is
            text = " ".join(str(exc).split())
            raise ConfigError(f"model ({self.estimator}) refuses its parameters: {text}") from None

    def fit_params(self, y: np.ndarray) -> dict[str, Any]:
        """Keyword arguments for ``Pipeline.fit`` (balanced sample weights if configured)."""
        if self.balance == "sample_weight":
            return {"clf__sample_weight": compute_sample_weight("balanced", y)}
        return {}


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptors 1 and 2 to /dev/null for a moment."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _param_message(text: str) -> str:
    """scikit-learn's "The 'x' parameter of Y must be ... Got v instead." as model.x=v must be."""
    import re

    m = re.match(r"The '(\w+)' parameter of (\w+) must be (.*)\. Got (.*) instead\.", text)
    if not m:
        return f"model: {text}"
    return f"model.{m[1]}={m[4]} must be {m[3]} ({m[2]})"


@functools.cache
def shared_sweep_keys() -> frozenset[str]:
    """Keys declared in every model config (conf/model/*.yaml, null where unused): a sweep may
    set them across model types, so one a model does not use is ignored with a warning; any
    other key a model does not take is an error."""
    import yaml

    from trademl._hydra import CONFIG_DIR

    keys = [set(yaml.safe_load(p.read_text()) or {}) for p in (CONFIG_DIR / "model").glob("*.yaml")]
    spec_keys = {"_target_", "name", "estimator", "registered_name", "scale", "balance"}
    return frozenset(set.intersection(*keys) - spec_keys) if keys else frozenset()


def _import_estimator(path: str) -> type:
    module_name, _, cls_name = str(path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"model.estimator={path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, ClassifierMixin)):
        raise ConfigError(f"model.estimator={path!r} is not a scikit-learn classifier")
    return cls


def trusted_types_for(estimator: str) -> list[str] | None:
    """trademl's reviewed skops trusted types for ``estimator``; ``None`` if it has none (a
    model of it could be trained but never loaded, so it is refused when configured)."""
    types = SKOPS_TRUSTED_TYPES.get(estimator)
    return None if types is None else sorted(types)


def check_trusted_types(pipeline: Pipeline, trusted: list[str]) -> None:
    """Refuse a model whose skops file would need types outside ``trusted``."""
    import skops.io as sio

    needed = set(sio.get_untrusted_types(data=sio.dumps(pipeline)))
    extra = sorted(needed - set(trusted))
    if extra:
        raise ModelError(
            f"the model needs skops to trust {', '.join(extra)}, which trademl does not trust "
            "for this estimator; add them to trademl.models.SKOPS_TRUSTED_TYPES only if you "
            "have reviewed them"
        )


def single_job(model: Any) -> Any:
    """``model`` predicting on one thread without changing the shared model: shallow copies
    of the pipeline and its classifier (sharing the fitted trees) with ``n_jobs=1``. LightGBM's
    ``n_jobs=None`` means all cores, so any value but 1 is replaced."""
    clf = model.steps[-1][1] if hasattr(model, "steps") else model
    params = clf.get_params(deep=False) if hasattr(clf, "get_params") else {}
    if "n_jobs" not in params or params["n_jobs"] == 1:
        return model
    one = copy.copy(clf)
    one.n_jobs = 1  # not set_params: LightGBM's writes into a dict the copy shares
    if not hasattr(model, "steps"):
        return one
    pipeline = copy.copy(model)
    pipeline.steps = [*model.steps[:-1], (model.steps[-1][0], one)]
    return pipeline
