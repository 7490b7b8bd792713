"""Test-period evaluation of a fitted classifier: metrics, confusion matrix, importances.

Pure functions, no MLflow: :mod:`trademl.tracking` logs what these return.
Metric names are the same for every model type so that runs line up in the
MLflow UI's compare view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)
from sklearn.pipeline import Pipeline

from trademl.inference import class_probabilities
from trademl.labels import LABEL_TO_INT, LABELS

__all__ = [
    "Evaluation",
    "class_probabilities",
    "directional_accuracy",
    "evaluate",
    "feature_importance",
    "optimizable_metrics",
    "permutation_drops",
    "probability_metrics",
]

CODES = [LABEL_TO_INT[name] for name in LABELS]


def optimizable_metrics() -> list[str]:
    """The test-period scores a sweep can optimise (``optimized_metric``), as
    :func:`probability_metrics` names them, plus ``train_accuracy``."""
    per_class = [f"test_{m}_{n}" for m in ("precision", "recall", "f1") for n in LABELS]
    return [
        "test_accuracy",
        "test_balanced_accuracy",
        "test_log_loss",
        "test_precision_macro",
        "test_recall_macro",
        "test_f1_macro",
        *per_class,
        "test_ic",
        "test_rank_ic",
        "train_accuracy",
    ]


@dataclass
class Evaluation:
    """Everything measured on the test period."""

    metrics: dict[str, float]
    confusion: np.ndarray  # rows: true SHORT/FLAT/LONG, columns: predicted
    report: dict
    report_text: str
    importance: pd.DataFrame  # feature, importance (model), permutation_mean, permutation_std
    importance_kind: str
    segment: str = "test"  # the rows the confusion matrix, report and importances describe


def _ic(score: np.ndarray, fwd: np.ndarray) -> tuple[float, float]:
    if len(score) < 3 or np.ptp(score) == 0 or np.ptp(fwd) == 0:
        return 0.0, 0.0
    from scipy.stats import pearsonr, spearmanr  # here: scipy.stats costs 1.3 s to import

    return float(pearsonr(score, fwd)[0]), float(spearmanr(score, fwd)[0])


def directional_accuracy(pred: np.ndarray, fwd: np.ndarray) -> tuple[float, int]:
    """Share of LONG/SHORT predictions whose side has the sign of the realised forward return,
    and how many there were; FLAT predictions and zero or missing returns are left out.

    Unlike balanced accuracy it ignores FLAT, which is partly predictable from past volatility
    when volatility clusters, so on a random walk it stays near 0.5 (NaN with no LONG/SHORT
    prediction). Not offered as a sweep objective: a model making few calls can score high.
    """
    side = np.where(pred == LABEL_TO_INT["LONG"], 1.0, 0.0)
    side[pred == LABEL_TO_INT["SHORT"]] = -1.0
    realised = np.sign(np.asarray(fwd, dtype=np.float64))
    mask = (side != 0) & np.isfinite(realised) & (realised != 0)
    n = int(mask.sum())
    return (float(np.mean(side[mask] == realised[mask])) if n else float("nan")), n


def evaluate(
    model: Pipeline,
    X_test: pd.DataFrame,
    y_test: pd.Series,
    fwd_test: pd.Series,
    y_train: pd.Series,
    *,
    permutation_repeats: int = 3,
    permutation_max_rows: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Score ``model`` on the test period.

    Metrics: ``test_accuracy``, ``test_balanced_accuracy``, macro and per-class
    precision/recall/F1 (``test_f1_LONG`` ...), ``test_log_loss``, class
    distributions of train and test (``train_frac_LONG`` ...), and the
    information coefficient (``test_ic``, Pearson) and rank IC (``test_rank_ic``,
    Spearman) of ``P(LONG) - P(SHORT)`` against the forward return, and the
    directional accuracy of the LONG/SHORT predictions (``test_directional_accuracy``,
    over ``test_directional_rows``; see :func:`directional_accuracy`).
    """
    proba = class_probabilities(model, X_test)
    metrics, confusion, report, text = probability_metrics(proba, y_test, fwd_test, y_train)
    importance, kind = feature_importance(
        model,
        X_test,
        y_test,
        repeats=permutation_repeats,
        max_rows=permutation_max_rows,
        seed=seed,
    )
    return Evaluation(
        metrics=metrics,
        confusion=confusion,
        report=report,
        report_text=text,
        importance=importance,
        importance_kind=kind,
    )


def probability_metrics(
    proba: np.ndarray, y_test: pd.Series, fwd_test: pd.Series, y_train: pd.Series
) -> tuple[dict[str, float], np.ndarray, dict, str]:
    """Metrics, confusion matrix and classification report from class probabilities
    (one column per label code), as :func:`evaluate` reports them."""
    pred = proba.argmax(axis=1)
    y = y_test.to_numpy()
    metrics: dict[str, float] = {
        "test_accuracy": accuracy_score(y, pred),
        "test_balanced_accuracy": balanced_accuracy_score(y, pred),
        "test_log_loss": log_loss(y, np.clip(proba, 1e-15, 1.0), labels=CODES),
        "test_rows": float(len(y)),
        "train_rows": float(len(y_train)),
    }
    p, r, f, _ = precision_recall_fscore_support(
        y, pred, labels=CODES, average="macro", zero_division=0
    )
    metrics.update({"test_precision_macro": p, "test_recall_macro": r, "test_f1_macro": f})
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=CODES, zero_division=0)
    for name, code in LABEL_TO_INT.items():
        metrics[f"test_precision_{name}"] = p[code]
        metrics[f"test_recall_{name}"] = r[code]
        metrics[f"test_f1_{name}"] = f[code]
        metrics[f"train_frac_{name}"] = float(np.mean(y_train.to_numpy() == code))
        metrics[f"test_frac_{name}"] = float(np.mean(y == code))
        metrics[f"test_pred_frac_{name}"] = float(np.mean(pred == code))
    score = proba[:, LABEL_TO_INT["LONG"]] - proba[:, LABEL_TO_INT["SHORT"]]
    metrics["test_ic"], metrics["test_rank_ic"] = _ic(score, fwd_test.to_numpy())
    hit_rate, hits_n = directional_accuracy(pred, fwd_test.to_numpy())
    metrics["test_directional_accuracy"], metrics["test_directional_rows"] = hit_rate, hits_n
    metrics = {k: float(v) for k, v in metrics.items()}

    report = classification_report(
        y, pred, labels=CODES, target_names=list(LABELS), zero_division=0, output_dict=True
    )
    text = classification_report(
        y, pred, labels=CODES, target_names=list(LABELS), zero_division=0, digits=4
    )
    return metrics, confusion_matrix(y, pred, labels=CODES), report, text


def feature_importance(
    model: Pipeline,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    repeats: int = 3,
    max_rows: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, str]:
    """Model importance (impurity for trees, |coefficients| for linear models) and
    permutation importance on the test set (drop in balanced accuracy), sorted by
    the model importance when there is one, else by the permutation importance.

    A model with no importance of its own (gradient boosting) always gets the
    permutation importance, with at least one repeat even when ``repeats=0``.
    """
    clf = model[-1]
    names = list(X.columns)
    if hasattr(clf, "feature_importances_"):
        own = np.asarray(clf.feature_importances_, dtype=float)
        kind = str(getattr(clf, "importance_type", "impurity"))  # LightGBM: "split" counts
    elif hasattr(clf, "coef_"):
        own, kind = np.abs(np.asarray(clf.coef_, dtype=float)).mean(axis=0), "abs_coefficient"
    else:
        own, kind = None, "permutation"
        repeats = max(repeats, 1)
    table = pd.DataFrame({"feature": names})
    table["importance"] = own if own is not None else np.nan
    if repeats > 0:
        rows = X.iloc[-max_rows:] if len(X) > max_rows else X
        target = y.loc[rows.index]
        drops = permutation_drops(model, rows, target, repeats=repeats, seed=seed)
        table["permutation_mean"] = drops.mean(axis=1)
        table["permutation_std"] = drops.std(axis=1)
    sort_by = "importance" if own is not None else "permutation_mean"
    if sort_by in table:
        table = table.sort_values(sort_by, ascending=False, kind="stable")
    return table.reset_index(drop=True), kind


_BATCH_ROWS = 120_000  # permuted rows scored per predict call (about 50 MB for 49 features)


def permutation_drops(
    model: Pipeline, X: pd.DataFrame, y: pd.Series, *, repeats: int, seed: int = 0
) -> np.ndarray:
    """Drop in balanced accuracy when each feature is permuted, one row per feature and one
    column per repeat.

    The numbers of ``sklearn.inspection.permutation_importance(model, X, y,
    n_repeats=repeats, random_state=seed, scoring="balanced_accuracy").importances``: the
    same shuffles (one seed drawn from ``seed``, the same for every feature; each repeat
    shuffles the already shuffled column again), the same predictions and scores. Only
    the calls differ: the permuted copies of ``X`` are stacked and scored in a few
    batched ``predict`` calls instead of one per feature and repeat, which for a forest
    with a thread pool per call is several times faster.
    """
    values = X.to_numpy()
    n, k = values.shape
    truth = y.to_numpy()
    random_seed = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    rng = np.random.RandomState(random_seed)
    order = np.arange(n)
    orders = []
    for _ in range(repeats):
        rng.shuffle(order)
        orders.append(order.copy())
    copies = [(c, r) for c in range(k) for r in range(repeats)]
    per_batch = max(1, _BATCH_ROWS // max(n, 1))
    dtypes = X.dtypes.to_dict()
    scores = np.empty((k, repeats))
    baseline = _balanced_accuracies(truth, model.predict(X)[None, :])[0]
    columns: dict[int, np.ndarray] = {}
    for start in range(0, len(copies), per_batch):
        batch = copies[start : start + per_batch]
        block = np.tile(values, (len(batch), 1))
        for i, (c, r) in enumerate(batch):
            # repeat r permutes repeat r-1's column again, as sklearn's in-place shuffle does
            columns[c] = (values[:, c] if r == 0 else columns[c])[orders[r]]
            block[i * n : (i + 1) * n, c] = columns[c]
        frame = pd.DataFrame(block, columns=X.columns).astype(dtypes)
        pred = model.predict(frame).reshape(len(batch), n)
        batch_scores = _balanced_accuracies(truth, pred)
        for i, (c, r) in enumerate(batch):
            scores[c, r] = batch_scores[i]
    return baseline - scores


def _balanced_accuracies(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``balanced_accuracy_score(truth, row)`` for each row of ``pred``, in sklearn's
    arithmetic: the mean, over the classes present in ``truth`` in sorted order, of the
    share of that class's rows predicted right."""
    right = pred == truth
    recalls = []
    for label in np.unique(truth):
        of_label = truth == label
        recalls.append(right[:, of_label].sum(axis=1) / np.count_nonzero(of_label))
    return np.mean(np.stack(recalls, axis=1), axis=1)
