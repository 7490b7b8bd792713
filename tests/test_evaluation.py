"""Permutation importance: batched, with scikit-learn's numbers for the same settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from trademl import evaluation
from trademl.evaluation import _balanced_accuracies, feature_importance, permutation_drops


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.standard_normal((700, 6)), columns=[f"f{i}" for i in range(6)])
    score = X["f0"] - 0.5 * X["f1"] + 0.3 * rng.standard_normal(700)
    y = pd.Series(np.digitize(score, [-0.5, 0.5]), index=X.index)  # three classes 0, 1, 2
    return X.iloc[:400], y.iloc[:400], X.iloc[400:], y.iloc[400:]


MODELS = {
    "forest": lambda: RandomForestClassifier(
        n_estimators=20, max_depth=5, n_jobs=2, random_state=0
    ),
    "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
}


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize(
    ("repeats", "seed", "batch_rows"), [(3, 0, 120_000), (2, 11, 650), (1, 3, 1)]
)
def test_drops_equal_sklearn_permutation_importance(
    data, kind, repeats, seed, batch_rows, monkeypatch
):
    X_train, y_train, X, y = data
    model = MODELS[kind]().fit(X_train, y_train)
    # small batches: several predict calls, a feature's repeats spread over them
    monkeypatch.setattr(evaluation, "_BATCH_ROWS", batch_rows)
    ours = permutation_drops(model, X, y, repeats=repeats, seed=seed)
    ref = permutation_importance(
        model, X, y, n_repeats=repeats, random_state=seed, scoring="balanced_accuracy"
    )
    assert ours.shape == (X.shape[1], repeats)
    np.testing.assert_allclose(ours, ref.importances, rtol=0, atol=1e-12)
    assert np.abs(ours[0]).max() > 0.05  # the informative feature matters


def test_feature_importance_table_has_sklearn_mean_and_std(data):
    X_train, y_train, X, y = data
    model = make_pipeline(StandardScaler(), MODELS["forest"]()).fit(X_train, y_train)
    table, kind = feature_importance(model, X, y, repeats=3, max_rows=250, seed=4)
    rows = X.iloc[-250:]
    ref = permutation_importance(
        model, rows, y.loc[rows.index], n_repeats=3, random_state=4, scoring="balanced_accuracy"
    )
    got = table.set_index("feature").loc[list(X.columns)]
    assert kind == "impurity"
    np.testing.assert_allclose(got["permutation_mean"], ref.importances_mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["permutation_std"], ref.importances_std, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_balanced_accuracies_equal_sklearn_with_missing_and_extra_classes():
    rng = np.random.default_rng(0)
    truth = rng.choice([0, 2, 5], size=97)
    pred = rng.choice([0, 1, 2], size=(40, 97))  # 5 never predicted, 1 never true
    pred[0] = truth
    ours = _balanced_accuracies(truth, pred)
    ref = [balanced_accuracy_score(truth, row) for row in pred]
    np.testing.assert_array_equal(ours, ref)
    assert ours[0] == 1.0
