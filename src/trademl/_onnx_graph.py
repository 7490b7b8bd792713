"""The ONNX graph of a fitted pipeline, for :func:`trademl.compiled.compile_model`.

One graph takes float64 rows of the model's features: the scaler's ``(x - mean) / scale`` in
float64 (the operations StandardScaler.transform does), a cast to float32 where scikit-learn's
trees cast (forests), then the classifier's nodes as skl2onnx converts it (LightGBM through
onnxmltools' converter), up to its class probabilities in ``classes_`` order (no label, no
ZipMap). See :mod:`trademl.compiled` for why each step keeps the results equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = {"": 17, "ai.onnx.ml": 3}  # what onnxmltools' LightGBM converter supports
# scikit-learn classifiers that cast their input to float32 themselves
_FLOAT32_INPUT = ("RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier")


def to_onnx(model: Any, n_features: int) -> tuple[Any, str]:
    """The pipeline as one ONNX graph taking float64 rows: the scaler in float64, then the
    classifier as skl2onnx converts it (float32 for trees, as scikit-learn casts them;
    float64 when it converts so), returning its class probabilities (``classes_`` order)."""
    from sklearn.preprocessing import StandardScaler

    steps = model.steps if hasattr(model, "steps") else [("clf", model)]
    scaler = steps[0][1] if len(steps) == 2 else None
    if len(steps) > 2 or (scaler is not None and type(scaler) is not StandardScaler):
        raise ValueError("only Pipeline(StandardScaler, classifier) or a classifier compiles")
    clf = steps[-1][1]
    # float32 for the trees scikit-learn casts to float32 and for LightGBM (its converter's
    # only input type, see _lightgbm_in_float64), float64 for the others (as scikit-learn)
    name = type(clf).__name__
    dtype = np.float32 if name in _FLOAT32_INPUT or name == "LGBMClassifier" else np.float64
    _probe(clf, dtype)
    onx = _classifier_onnx(clf, n_features, dtype)
    if name == "LGBMClassifier" and _lightgbm_in_float64(onx, clf):
        dtype = np.float64
    return _assemble(onx, scaler, n_features, dtype)


def _probe(clf: Any, dtype: type) -> None:
    """Convert a tiny clone first: a converter that cannot take the class then fails in
    milliseconds instead of printing the whole model into its error (skl2onnx 1.20 with
    HistGradientBoosting: 1.5 s for the default config)."""
    import warnings

    from sklearn.base import clone

    tiny = clone(clf)
    tiny.set_params(**{k: 2 for k in ("n_estimators", "max_iter") if k in tiny.get_params()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two iterations do not converge: no matter here
        tiny.fit(np.random.default_rng(0).normal(size=(60, 2)), np.repeat([0, 1, 2], 20))
    _classifier_onnx(tiny, 2, dtype)


def _lightgbm_in_float64(onx: Any, clf: Any) -> bool:
    """LightGBM compares float64 values with float64 thresholds; its converter writes them in
    float32, so a value between a threshold and its rounding branches the other way (1 row in
    52,000 on synthetic data). Put back each threshold's float64 value from LightGBM's own dump
    (matched by feature and float32 value) so the trees take the float64 rows: False, and the
    float32 form kept, when a split is not numeric or a match is not unique."""
    from onnx import helper, numpy_helper

    exact: dict[tuple[int, float], set[float]] = {}
    features: list[int] = []
    for line in clf.booster_.model_to_string().splitlines():  # thresholds printed exactly
        key, _, values = line.partition("=")
        if key == "split_feature":
            features = [int(v) for v in values.split()]
        elif key == "decision_type" and any(int(v) & 1 for v in values.split()):
            return False  # a categorical split
        elif key == "threshold":
            for feature, text in zip(features, values.split(), strict=True):
                exact.setdefault((feature, float(np.float32(text))), set()).add(float(text))
    trees = [n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attrs = {a.name: a for a in trees[0].attribute} if len(trees) == 1 else {}
    if "nodes_values" not in attrs:
        return False
    values = []
    for value, feature, mode in zip(
        attrs["nodes_values"].floats,
        attrs["nodes_featureids"].ints,
        attrs["nodes_modes"].strings,
        strict=True,
    ):
        found = {0.0} if mode == b"LEAF" else exact.get((feature, float(np.float32(value))), ())
        if len(found) != 1:
            return False
        values.append(next(iter(found)))
    trees[0].attribute.remove(attrs["nodes_values"])
    as_tensor = numpy_helper.from_array(np.array(values, dtype=np.float64))
    trees[0].attribute.append(helper.make_attribute("nodes_values_as_tensor", as_tensor))
    return True


def _classifier_onnx(clf: Any, n_features: int, dtype: type) -> Any:
    import warnings

    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if type(clf).__name__ == "LGBMClassifier":
        _register_lightgbm()
    tensor = FloatTensorType if dtype is np.float32 else DoubleTensorType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a converter's notes: the check decides
        # No converter options: with any, skl2onnx reads every fitted attribute of the model,
        # which for a forest recomputes its bootstrap samples (1 s for the default forest);
        # the ZipMap it then adds is dropped by _assemble.
        return convert_sklearn(
            clf, initial_types=[("scaled", tensor([None, n_features]))], target_opset=OPSET
        )


def _register_lightgbm() -> None:
    try:
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError as exc:
        raise ImportError("LightGBM compiles with onnxmltools, which is not installed") from exc
    from lightgbm import LGBMClassifier
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )


def _assemble(onx: Any, scaler: Any, n_features: int, dtype: type) -> tuple[Any, str]:
    """``features`` (float64) -> scaled (float64, then cast to ``dtype``) -> the classifier's
    nodes that lead to its probability tensor (its label and ZipMap dropped)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = onx.graph
    zipmap = [n for n in graph.node if n.op_type == "ZipMap"]
    if len(zipmap) != 1:
        raise ValueError("the converted classifier has no ZipMap over its probabilities")
    probabilities = zipmap[0].input[0]
    needed, wanted = [], {probabilities}
    for node in reversed(graph.node):  # the nodes the probabilities depend on
        if wanted & set(node.output):
            needed.append(node)
            wanted |= set(node.input)
    # what StandardScaler.transform subtracts and divides by (0 and 1 change nothing)
    mean, scale = np.zeros(n_features), np.ones(n_features)
    if scaler is not None and scaler.with_mean:
        mean = np.asarray(scaler.mean_, dtype=np.float64)
    if scaler is not None and scaler.with_std:
        scale = np.asarray(scaler.scale_, dtype=np.float64)
    nodes = [
        helper.make_node("Sub", ["features", "trademl_mean"], ["trademl_centred"]),
        helper.make_node("Div", ["trademl_centred", "trademl_scale"], ["trademl_scaled"]),
        helper.make_node("Cast", ["trademl_scaled"], ["scaled"], to=TensorProto.FLOAT)
        if dtype is np.float32
        else helper.make_node("Identity", ["trademl_scaled"], ["scaled"]),
        *reversed(needed),
    ]
    # ai.onnx.ml's classifiers give float32 probabilities; other operators keep their input's type
    in_float = dtype is np.float32 or any(n.domain == "ai.onnx.ml" for n in needed)
    out_type = TensorProto.FLOAT if in_float else TensorProto.DOUBLE
    new = helper.make_graph(
        nodes,
        "trademl",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(probabilities, out_type, [None, None])],
        [
            numpy_helper.from_array(mean, "trademl_mean"),
            numpy_helper.from_array(scale, "trademl_scale"),
            *graph.initializer,
        ],
    )
    out = helper.make_model(new, opset_imports=onx.opset_import, producer_name="trademl")
    out.ir_version = onx.ir_version
    onnx.checker.check_model(out)
    return out, np.dtype(dtype).name
