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

import importlib
import inspect
import logging
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from trademl.errors import ConfigError, ModelError

__all__ = ["SKOPS_TRUSTED_TYPES", "ModelSpec", "check_trusted_types"]

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
        Hyperparameters of the classifier. A parameter the classifier does not
        accept is ignored with a warning when set, and silently when null: the
        shared sweep keys (``max_depth``) are declared in every model config so
        that ``-m model=a,b model.max_depth=5,10`` works across model types.
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
        accepted = set(inspect.signature(self._cls.__init__).parameters) - {"self"}
        self.estimator_params = {k: v for k, v in params.items() if k in accepted}
        self.ignored_params = {
            k: v for k, v in params.items() if k not in accepted and v is not None
        }
        for key, value in self.ignored_params.items():
            log.warning("model.%s=%r does not apply to %s; ignored", key, value, estimator)
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
        return list(SKOPS_TRUSTED_TYPES.get(self.estimator, []))

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

    def fit_params(self, y: np.ndarray) -> dict[str, Any]:
        """Keyword arguments for ``Pipeline.fit`` (balanced sample weights if configured)."""
        if self.balance == "sample_weight":
            return {"clf__sample_weight": compute_sample_weight("balanced", y)}
        return {}


def _import_estimator(path: str) -> type:
    module_name, _, cls_name = str(path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"model.estimator={path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, ClassifierMixin)):
        raise ConfigError(f"model.estimator={path!r} is not a scikit-learn classifier")
    return cls


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
