"""A compiled predictor: the trained pipeline in ONNX Runtime, for fast one-row decisions.

At training time :func:`compile_model` converts the fitted ``Pipeline(StandardScaler?,
classifier)`` to ONNX (skl2onnx; LightGBM through onnxmltools' converter) and keeps a check
sample of the test-period features. Both are logged beside the model (``model.onnx`` and
``check_features.npy`` in its ``trademl_extras``); what was done, or why not, goes into the
trademl metadata under ``compiled``. A conversion failure never fails the training.

At load time :func:`fast_predictor` opens the ONNX bytes (untrusted input: refused unless made
of the operators trademl writes) in a one-thread ONNX Runtime session and checks it against the
scikit-learn model on the check sample: the largest absolute probability difference must be at
most :data:`TOLERANCE` and every signal (the most likely class, FLAT below the threshold) the
same. If it passes it is used; otherwise (nothing compiled, an unsupported model, a mismatch,
any error) the predictor is the scikit-learn model with ``n_jobs=1``, and one warning per
loaded version says why. Neither form starts a thread pool for a prediction.

Precision (what keeps the results equal). The graph takes float64 rows and scales them in
float64 with StandardScaler's own operations (``(x - mean) / scale``). scikit-learn's forests
then cast the scaled values to float32 and compare them with float64 thresholds t; the graph
casts to float32 too, and skl2onnx stores for each t the float32 w with ``x <= t`` exactly when
``x <= w`` for every float32 x, so every split goes the same way and only the sums of leaf
values (float32 in ONNX Runtime) differ, by about 3e-7. Logistic regression runs in float64
throughout (1e-16). LightGBM compares float64 values with float64 thresholds; its converter
writes float32 ones (1 row in 52,000 of synthetic features then took another branch, 5e-3 off),
so each threshold is put back to LightGBM's own float64 value and the rows stay float64
(1e-7). skl2onnx's plain float32 input (scaling in float32) agreed as well on those 52,000
rows for the forest, but only by luck: a scaled value within a float32 rounding of a threshold
would branch differently.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trademl.errors import ModelError
from trademl.models import single_job

if TYPE_CHECKING:
    import pandas as pd

    from trademl.registry import LoadedModel

__all__ = [
    "CHECK_FILE",
    "ONNX_FILE",
    "TOLERANCE",
    "CompiledArtifacts",
    "Predictor",
    "compile_model",
    "fast_predictor",
]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
CHECK_FILE = "check_features.npy"
TOLERANCE = 1e-5  # largest absolute probability difference accepted against scikit-learn
CHECK_ROWS = 2000
# The operators of the graphs compile_model writes; any other is refused at load time.
_ALLOWED_OPS = {
    "": {"Sub", "Div", "Cast", "Identity", "MatMul", "Add", "Softmax", "Sigmoid"}
    | {"Abs", "ReduceSum"},  # a binary logistic regression's
    "ai.onnx.ml": {"TreeEnsembleClassifier", "LinearClassifier", "Normalizer"},
}
_WARNED: set[tuple[Any, ...]] = set()  # (uri, run, reason) already warned about


@dataclass
class CompiledArtifacts:
    """What :func:`compile_model` gives the training: files for ``log_model(extra_files=)``
    (none when not compiled) and the metadata to store under ``compiled``."""

    files: dict[str, bytes] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


class _Unusable(Exception):
    """The compiled form cannot be used (the message says why)."""

    def __init__(self, reason: str, max_abs_diff: float = float("nan")) -> None:
        super().__init__(reason)
        self.max_abs_diff = max_abs_diff


def compile_model(
    model: Any, X_check: pd.DataFrame, *, max_check_rows: int = CHECK_ROWS
) -> CompiledArtifacts:
    """The ONNX form of a fitted pipeline and a check sample of ``X_check`` (up to
    ``max_check_rows`` rows spread evenly over it), checked here already so that a form
    that would fail the load-time check is not stored. Never raises: a failure is the
    ``reason`` in the metadata (and no files)."""
    start = time.perf_counter()
    meta: dict[str, Any] = {"format": None, "converter": _versions()}
    try:
        X = np.ascontiguousarray(X_check.to_numpy(dtype=np.float64))
        rows = np.unique(np.linspace(0, len(X) - 1, min(len(X), max_check_rows)).round())
        X = X[rows.astype(int)] if len(X) else X
        if not len(X):
            raise _Unusable("no test-period features to check the compiled form on")
        from trademl._onnx_graph import OPSET, to_onnx

        onx, classifier_input = to_onnx(model, X.shape[1])
        blob = onx.SerializeToString()
        diff = _check(_session(_vetted(blob)), model, X, None)  # as at load time
        check = io.BytesIO()
        np.save(check, X, allow_pickle=False)
        meta.update(format="onnx", file=ONNX_FILE, check_file=CHECK_FILE, check_rows=len(X))
        meta.update(input="float64", classifier_input=classifier_input, max_abs_diff=diff)
        meta["opset"] = {domain or "ai.onnx": v for domain, v in OPSET.items()}
        files = {ONNX_FILE: blob, CHECK_FILE: check.getvalue()}
    except Exception as exc:  # any converter's own error: recorded, never raised
        meta["reason"] = _describe(exc, model)
        files = {}
        log.info("the model is not compiled: %s", meta["reason"])
    meta["seconds"] = round(time.perf_counter() - start, 3)
    return CompiledArtifacts(files, meta)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("skl2onnx", "onnx", "onnxruntime", "onnxmltools"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _describe(exc: BaseException, model: Any) -> str:
    """One line: what failed and the root cause (converter errors carry huge attribute dumps)."""
    if isinstance(exc, _Unusable):
        return str(exc)
    root = exc
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    return f"{type(_final(model)).__name__} cannot be compiled: {_line(root)}"


def _line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut at 240 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text if len(text) <= 240 else text[:237] + '...'}"


def _final(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


# -- load time ----------------------------------------------------------------------------------
@dataclass(repr=False)
class Predictor:
    """Class probabilities (columns SHORT, FLAT, LONG; float64) of float64 feature rows in the
    model's column order, from the compiled form (``kind`` "onnx") or the scikit-learn model
    on one thread (``kind`` "sklearn", ``reason`` says why). ``max_abs_diff`` is the largest
    probability difference the check measured (NaN when it did not run)."""

    kind: str
    reason: str
    max_abs_diff: float
    n_features: int
    _run: Callable[[np.ndarray], np.ndarray]
    _codes: np.ndarray  # the label code of each of the model's classes

    def __repr__(self) -> str:
        why = f", reason={self.reason!r}" if self.reason else ""
        return f"Predictor(kind={self.kind!r}, max_abs_diff={self.max_abs_diff:.3g}{why})"

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, 3)`` probabilities of ``(n, n_features)`` rows (one 1-D row is one row)."""
        X = np.asarray(X, dtype=np.float64)
        X = X.reshape(1, -1) if X.ndim == 1 else X
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ModelError(
                f"the predictor takes rows of {self.n_features} features in the model's "
                f"column order; got an array of shape {X.shape}"
            )
        proba = self._run(np.ascontiguousarray(X))
        out = np.zeros((len(X), 3))
        out[:, self._codes] = proba
        return out


def fast_predictor(loaded: LoadedModel, *, min_confidence: float | None) -> Predictor:
    """The fastest exact predictor of a loaded version (see the module docstring).

    ``min_confidence`` is the threshold the signals are checked at (``None``: the most
    likely class only). Build it once per loaded version: the check runs here, and a
    fallback is warned about once per version; predictions never log.
    """
    try:
        valid = min_confidence is None or 0 <= float(min_confidence) <= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:  # 'validated' is resolved by the caller (MLStrategy) to the model's number
        raise ModelError(f"min_confidence={min_confidence!r} must be a probability or None")
    model = loaded.model
    codes = np.asarray(model.classes_).astype(int)
    n_features = int(model.n_features_in_)
    one_job = single_job(model)
    try:
        session, diff = _checked_session(loaded, one_job, n_features, min_confidence)
    except Exception as exc:  # whatever the bytes or the runtime did: fall back, never raise
        reason = str(exc) if isinstance(exc, _Unusable) else f"{ONNX_FILE} failed: {_line(exc)}"
        diff = getattr(exc, "max_abs_diff", float("nan"))
        _warn_once(loaded, reason)
        run = _sklearn_run(one_job, getattr(model, "feature_names_in_", None))
        return Predictor("sklearn", reason, diff, n_features, run, codes)
    return Predictor("onnx", "", diff, n_features, _onnx_run(session), codes)


def _checked_session(
    loaded: LoadedModel, model: Any, n_features: int, min_confidence: float | None
) -> tuple[Any, float]:
    extras = loaded.extras or {}
    if ONNX_FILE not in extras:
        compiled = loaded.trademl.get("compiled")
        if isinstance(compiled, dict) and compiled.get("reason"):
            raise _Unusable(f"not compiled at training time: {compiled['reason']}")
        raise _Unusable(f"no compiled form is stored with {loaded.uri} (trained without one)")
    if CHECK_FILE not in extras:
        raise _Unusable(f"{CHECK_FILE} is missing beside {ONNX_FILE}, so it cannot be checked")
    try:
        X = np.load(io.BytesIO(extras[CHECK_FILE]), allow_pickle=False)
    except Exception as exc:  # any malformed file
        raise _Unusable(f"{CHECK_FILE} is unreadable ({type(exc).__name__}: {exc})") from exc
    if X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != n_features or not len(X):
        raise _Unusable(
            f"{CHECK_FILE} holds a {X.dtype} array of shape {X.shape}, not float64 rows of "
            f"the model's {n_features} features"
        )
    session = _session(_vetted(extras[ONNX_FILE]))
    return session, _check(session, model, X, min_confidence)


def _vetted(blob: bytes) -> bytes:
    """Refuse what trademl never writes before ONNX Runtime parses it: unknown operators or
    domains (so no subgraphs), functions, tensors in external files."""
    import onnx

    try:
        model = onnx.load_model_from_string(blob)
    except Exception as exc:  # protobuf's decode error on garbage or truncated bytes
        raise _Unusable(f"{ONNX_FILE} is not a readable ONNX model ({exc})") from exc
    if model.functions or not model.graph.node:
        raise _Unusable(f"{ONNX_FILE} has no graph or has functions; trademl writes neither")
    for node in model.graph.node:
        if node.op_type not in _ALLOWED_OPS.get(node.domain, ()):
            op = f"{node.domain}:{node.op_type}"
            raise _Unusable(f"{ONNX_FILE} uses {op}, which trademl never writes; not loaded")
    attributes = [a for node in model.graph.node for a in node.attribute]
    tensors = [
        *model.graph.initializer,
        *(a.t for a in attributes),
        *(t for a in attributes for t in a.tensors),
    ]
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)
    if external or model.graph.sparse_initializer:
        raise _Unusable(f"{ONNX_FILE} refers to files or sparse data; trademl writes neither")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx's ValidationError
        raise _Unusable(f"{ONNX_FILE} is not a valid ONNX model ({exc})") from exc
    return blob


def _session(blob: bytes) -> Any:
    """A one-thread, sequential ONNX Runtime session (no thread pool), one float64 input and
    one ``(n, n_classes)`` output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: the fallback warning says what went wrong
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(double)" or len(outputs) != 1:
        raise _Unusable(f"{ONNX_FILE} does not take one float64 matrix to one probability matrix")
    return session


def _onnx_run(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name, output = session.get_inputs()[0].name, [session.get_outputs()[0].name]

    def run(X: np.ndarray) -> np.ndarray:
        return session.run(output, {name: X})[0]

    return run


def _sklearn_run(model: Any, columns: Any) -> Callable[[np.ndarray], np.ndarray]:
    from threadpoolctl import ThreadpoolController

    openmp = ThreadpoolController()  # the OpenMP runtimes loaded now (scikit-learn's)

    def run(X: np.ndarray) -> np.ndarray:
        if columns is not None:  # fitted on a frame: keep its column names (no warning)
            import pandas as pd

            X = pd.DataFrame(X, columns=columns)
        # HistGradientBoosting predicts with OpenMP on every core: one thread (35 µs a call)
        with openmp.limit(limits=1, user_api="openmp"):
            return model.predict_proba(X)

    return run


def _check(session: Any, model: Any, X: np.ndarray, min_confidence: float | None) -> float:
    """The largest probability difference of ``session`` against ``model`` on ``X``; a
    mismatch (beyond :data:`TOLERANCE`, a different signal or shape) is :class:`_Unusable`."""
    import pandas as pd

    from trademl.inference import signals_from_probabilities
    from trademl.labels import LABELS

    columns = getattr(model, "feature_names_in_", None)
    want = model.predict_proba(pd.DataFrame(X, columns=columns) if columns is not None else X)
    got = np.asarray(_onnx_run(session)(X), dtype=np.float64)
    if got.shape != want.shape:
        raise _Unusable(f"{ONNX_FILE} gives probabilities of shape {got.shape}, not {want.shape}")
    diff = float(np.max(np.abs(got - want))) if np.isfinite(got).all() else float("inf")
    threshold = 0.0 if min_confidence is None else float(min_confidence)
    full = np.zeros((2, len(X), 3))
    full[0][:, np.asarray(model.classes_).astype(int)] = want
    full[1][:, np.asarray(model.classes_).astype(int)] = got
    signals = [
        signals_from_probabilities(pd.DataFrame(f, columns=LABELS), threshold)[0] for f in full
    ]
    differ = int(np.sum(signals[0] != signals[1]))
    if diff > TOLERANCE or differ:
        raise _Unusable(
            f"the compiled form differs from scikit-learn on the {len(X)} check rows (largest "
            f"probability difference {diff:.3g}, tolerance {TOLERANCE:g}; {differ} different "
            f"signals at min_confidence={min_confidence})",
            diff,
        )
    return diff


def _warn_once(loaded: LoadedModel, reason: str) -> None:
    key = (loaded.uri, loaded.run_id, reason)
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning("%s: scikit-learn on one thread, not the compiled form: %s", loaded.uri, reason)
