"""The compiled predictor: ONNX equal to scikit-learn or a fallback that says why, once."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from trademl import ModelError, generate_ohlcv
from trademl import compiled as compiled_module
from trademl._hydra import CONFIG_DIR
from trademl.compiled import (
    CHECK_FILE,
    ONNX_FILE,
    CompiledArtifacts,
    compile_model,
    fast_predictor,
)
from trademl.features import build_feature_matrix
from trademl.inference import signals_from_probabilities
from trademl.models import ModelSpec
from trademl.registry import LoadedModel, load_model
from trademl.train import train

from .conftest import fast_overrides

SMALL = {
    "random_forest": {"n_estimators": 25},
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 25},
    "lightgbm": {"n_estimators": 25},
}
TRAIN, CHECK = 600, 900  # rows fitted on; rows 600-900 are the check sample, the rest fresh


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(compiled_module, "_WARNED", set())


@pytest.fixture(scope="module")
def features():
    """~1,150 feature rows of 1,200 synthetic bars and labels from the next bars' return."""
    candles = generate_ohlcv(1200, seed=11, momentum=0.3)
    X = build_feature_matrix(candles).dropna()
    ahead = candles["close"].pct_change(3).shift(-3).reindex(X.index).fillna(0.0)
    y = np.select([ahead > 0.002, ahead < -0.002], [2, 0], 1)
    return X, y


@pytest.fixture(scope="module")
def models(features):
    X, y = features
    fitted = {}
    for name, params in SMALL.items():
        config = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())
        config.pop("_target_")
        spec = ModelSpec(**{**config, **params})
        model = spec.build(0)
        model.fit(X.iloc[:TRAIN], y[:TRAIN], **spec.fit_params(y[:TRAIN]))
        fitted[name] = model
    return fitted


def loaded_version(model, artifacts, uri="models:/test/1") -> LoadedModel:
    return LoadedModel(
        model=model,
        uri=uri,
        name="test",
        version="1",
        run_id=None,
        metadata={"trademl": {"compiled": artifacts.metadata}},
        extras=dict(artifacts.files),
    )


def signals(proba: np.ndarray, threshold: float) -> np.ndarray:
    return signals_from_probabilities(proba, threshold)[0]


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trademl.compiled"]


@pytest.mark.parametrize("name", list(SMALL))
def test_each_model_type_is_compiled_and_equal_or_falls_back_saying_why_once(
    name, models, features, caplog
):
    X, _ = features
    model = models[name]
    artifacts = compile_model(model, X.iloc[TRAIN:CHECK])
    meta = artifacts.metadata
    loaded = loaded_version(model, artifacts)
    with caplog.at_level(logging.WARNING, logger="trademl.compiled"):
        predictor = fast_predictor(loaded, min_confidence=0.4)
        fast_predictor(loaded, min_confidence=0.4)  # the same version again: no second warning
    fresh = X.iloc[CHECK:]
    want = np.zeros((len(fresh), 3))
    want[:, model.classes_] = model.predict_proba(fresh)
    got = predictor.predict_proba(fresh.to_numpy())
    one_row = np.vstack([predictor.predict_proba(row) for row in fresh.to_numpy()[:20]])
    if predictor.kind == "onnx":
        assert meta["format"] == "onnx" and set(artifacts.files) == {ONNX_FILE, CHECK_FILE}
        assert meta["check_rows"] == CHECK - TRAIN and meta["max_abs_diff"] <= 1e-5
        assert predictor.reason == "" and predictor.max_abs_diff <= 1e-5
        assert fallback_warnings(caplog) == []
        assert np.abs(got - want).max() <= 1e-5
        for threshold in (0.0, 0.4, 0.5):
            assert (signals(got, threshold) == signals(want, threshold)).all()
    else:
        assert predictor.kind == "sklearn" and predictor.reason
        (message,) = fallback_warnings(caplog)
        assert predictor.reason in message and "scikit-learn on one thread" in message
        assert np.abs(got - want).max() < 1e-12  # the same model (threads sum in any order)
    assert np.abs(one_row - got[:20]).max() <= 1e-12
    assert got.dtype == np.float64 and got.shape == (len(fresh), 3)
    if name == "hist_gradient_boosting":  # skl2onnx 1.20 cannot convert it (see the report)
        assert predictor.kind == "onnx" or "cannot be compiled" in meta["reason"]
    else:
        assert predictor.kind == "onnx", meta.get("reason")
        assert meta["input"] == "float64" and meta["converter"]["skl2onnx"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"\x00garbage, not protobuf\xff" * 50,
        lambda blob: blob[: len(blob) // 2],
        lambda blob: b"",
        lambda blob: blob[:-7],
    ],
    ids=["garbage", "half", "empty", "last-bytes-cut"],
)
def test_a_damaged_onnx_file_falls_back_with_a_warning_and_never_raises(
    damage, models, features, caplog
):
    X, _ = features
    model = models["random_forest"]
    artifacts = compile_model(model, X.iloc[TRAIN:CHECK])
    artifacts.files[ONNX_FILE] = damage(artifacts.files[ONNX_FILE])
    with caplog.at_level(logging.WARNING, logger="trademl.compiled"):
        predictor = fast_predictor(loaded_version(model, artifacts), min_confidence=0.5)
    assert predictor.kind == "sklearn"
    (message,) = fallback_warnings(caplog)
    assert ONNX_FILE in message and predictor.reason in message
    row = X.iloc[[CHECK]]
    assert np.abs(predictor.predict_proba(row.to_numpy()) - model.predict_proba(row)).max() < 1e-12


def test_lightgbm_branches_as_lightgbm_at_a_threshold(models, features):
    # LightGBM compares float64 values with float64 thresholds: a value just above one goes
    # right, though in float32 it equals the threshold (its converter's float32 form: left)
    X, _ = features
    model = models["lightgbm"]
    predictor = fast_predictor(
        loaded_version(model, compile_model(model, X.iloc[TRAIN:CHECK])), min_confidence=None
    )
    root = model[-1].booster_.dump_model()["tree_info"][0]["tree_structure"]
    j, threshold = root["split_feature"], float(root["threshold"])
    mean, scale = model[0].mean_[j], model[0].scale_[j]
    raw = threshold * scale + mean
    while (raw - mean) / scale <= threshold:
        raw = np.nextafter(raw, np.inf)
    below = raw
    while (below - mean) / scale > threshold:
        below = np.nextafter(below, -np.inf)
    assert np.float32((raw - mean) / scale) == np.float32(threshold)
    rows = np.repeat(X.iloc[[CHECK]].to_numpy(), 2, axis=0)
    rows[:, j] = [below, raw]
    want = model.predict_proba(pd.DataFrame(rows, columns=X.columns))
    assert np.abs(want[0] - want[1]).max() > 1e-5  # the split matters
    assert np.abs(predictor.predict_proba(rows) - want).max() <= 1e-5


def test_damaged_check_features_and_foreign_onnx_contents_fall_back(models, features, caplog):
    import onnx
    from onnx import helper

    X, _ = features
    model = models["logistic_regression"]
    good = compile_model(model, X.iloc[TRAIN:CHECK])
    # a valid ONNX graph with an operator trademl never writes (a loop could run anything)
    body = helper.make_graph([], "body", [], [])
    loop = helper.make_node("Loop", ["n", "c"], [], body=body)
    foreign = helper.make_model(
        helper.make_graph([loop], "g", [], []), opset_imports=[helper.make_opsetid("", 17)]
    )
    # trademl's own graph, but its weights in a file on disk
    outside = onnx.load_model_from_string(good.files[ONNX_FILE])
    outside.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    outside.graph.initializer[0].external_data.add(key="location", value="/etc/passwd")
    cases = [
        (CHECK_FILE, b"\x80\x04garbage", f"{CHECK_FILE} is unreadable"),
        (CHECK_FILE, _npy(np.zeros((5, 3))), "array of shape (5, 3), not float64 rows"),
        (CHECK_FILE, None, f"{CHECK_FILE} is missing"),
        (ONNX_FILE, foreign.SerializeToString(), ":Loop, which trademl never writes"),
        (ONNX_FILE, outside.SerializeToString(), "refers to files or sparse data"),
    ]
    for i, (file, content, why) in enumerate(cases):
        artifacts = compile_model(model, X.iloc[TRAIN:CHECK])
        if content is None:
            del artifacts.files[file]
        else:
            artifacts.files[file] = content
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trademl.compiled"):
            loaded = loaded_version(model, artifacts, f"models:/test/{i}")
            predictor = fast_predictor(loaded, min_confidence=0.5)
        assert predictor.kind == "sklearn" and why in predictor.reason, (why, predictor)
        assert len(fallback_warnings(caplog)) == 1, why
    assert fast_predictor(loaded_version(model, good), min_confidence=0.5).kind == "onnx"


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def test_the_onnx_of_another_model_is_caught_by_the_check(models, features, caplog):
    X, y = features
    model = models["random_forest"]
    other = ModelSpec(**_config("random_forest", n_estimators=25)).build(1)
    other.fit(X.iloc[:TRAIN], np.roll(y[:TRAIN], 7))  # the same features, other trees
    artifacts = compile_model(model, X.iloc[TRAIN:CHECK])
    artifacts.files[ONNX_FILE] = compile_model(other, X.iloc[TRAIN:CHECK]).files[ONNX_FILE]
    with caplog.at_level(logging.WARNING, logger="trademl.compiled"):
        predictor = fast_predictor(loaded_version(model, artifacts), min_confidence=0.5)
    assert predictor.kind == "sklearn" and predictor.max_abs_diff > 1e-5
    assert "differs from scikit-learn on the 300 check rows" in predictor.reason
    (message,) = fallback_warnings(caplog)
    assert "largest probability difference" in message


def _config(name: str, **params) -> dict:
    config = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text())
    config.pop("_target_")
    return {**config, **params}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_one_row_prediction_starts_no_thread_pool(models, features, monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    X, _ = features
    model = models["random_forest"]
    rows = X.iloc[CHECK : CHECK + 30].to_numpy()
    model[-1].set_params(n_jobs=1)  # compiling predicts the check rows with the stored model
    artifacts = compile_model(model, X.iloc[TRAIN:CHECK])
    model[-1].set_params(n_jobs=-1)  # as the default forest is stored
    before = _threads()
    predictor = fast_predictor(loaded_version(model, artifacts), min_confidence=0.5)
    for row in rows:
        predictor.predict_proba(row)
    assert predictor.kind == "onnx" and _threads() == before  # one thread, no pool

    seen = []
    original = RandomForestClassifier.predict_proba

    def spy(self, X):
        seen.append((len(X), self.n_jobs))
        return original(self, X)

    monkeypatch.setattr(RandomForestClassifier, "predict_proba", spy)
    artifacts.files.clear()  # nothing compiled: scikit-learn
    fallback = fast_predictor(loaded_version(model, artifacts), min_confidence=0.5)
    fallback.predict_proba(rows[0])
    fallback.predict_proba(rows)
    assert fallback.kind == "sklearn" and seen == [(1, 1), (len(rows), 1)]
    assert model[-1].n_jobs == -1  # the shared model is not changed


def test_the_fallback_runs_openmp_models_on_one_thread(models, features, monkeypatch):
    from sklearn.ensemble._hist_gradient_boosting import gradient_boosting

    X, _ = features
    model = models["hist_gradient_boosting"]  # no n_jobs: OpenMP on every core by default
    seen = []
    original = gradient_boosting._openmp_effective_n_threads

    def spy(n_threads=None):
        seen.append(original(n_threads))
        return seen[-1]

    monkeypatch.setattr(gradient_boosting, "_openmp_effective_n_threads", spy)
    empty = compile_model(model, X.iloc[:0])  # nothing to check on: not compiled
    fallback = fast_predictor(loaded_version(model, empty), min_confidence=0.5)
    fallback.predict_proba(X.iloc[CHECK].to_numpy())
    assert fallback.kind == "sklearn" and "no test-period features" in fallback.reason
    assert seen == [1]
    model.predict_proba(X.iloc[[CHECK]])
    assert seen[-1] == original()  # outside the predictor, as configured


def test_rows_of_the_wrong_width_are_a_model_error(models, features):
    X, _ = features
    model = models["logistic_regression"]
    predictor = fast_predictor(
        loaded_version(model, compile_model(model, X.iloc[TRAIN:CHECK])), min_confidence=None
    )
    with pytest.raises(ModelError, match=f"rows of {X.shape[1]} features"):
        predictor.predict_proba(np.zeros((2, 5)))
    for wrong in ("validated", 1.5):
        with pytest.raises(ModelError, match="must be a probability or None"):
            fast_predictor(loaded_version(model, CompiledArtifacts()), min_confidence=wrong)


def test_compiling_never_raises():
    result = compile_model(object(), build_feature_matrix(generate_ohlcv(300, seed=1)).dropna())
    assert result.files == {} and result.metadata["format"] is None
    assert "cannot be compiled" in result.metadata["reason"]


def test_a_trained_forest_is_served_compiled(store, compose):
    result = train(compose(fast_overrides(store)))
    loaded = load_model(result.model_uri, tracking_uri=store["uri"])
    meta = loaded.trademl["compiled"]
    assert meta["format"] == "onnx" and meta["max_abs_diff"] <= 1e-5
    assert {ONNX_FILE, CHECK_FILE} <= set(loaded.extras)
    predictor = fast_predictor(loaded, min_confidence=0.55)
    assert predictor.kind == "onnx", predictor.reason
    check = np.load(io.BytesIO(loaded.extras[CHECK_FILE]))
    assert check.shape == (meta["check_rows"], len(loaded.trademl["feature_names"]))
