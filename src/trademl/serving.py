"""The served model: raw candles in, :class:`~trademl.strategies.MLStrategy`'s signal out.

Every version trademl logs is an MLflow model whose ``python_function`` flavour is this
module (``loader_module: trademl.serving``, ``data:`` the skops file), so
``mlflow models serve -m models:/baseline_rf@champion --env-manager local`` and
``mlflow.pyfunc.load_model(...)`` answer what ``MLStrategy(...).generate_signal(window)``
answers for the same version: the feature step, class names, probabilities, stop and target
are inside the model, not left to the caller. (The ``sklearn`` flavour is unchanged: it is
what :func:`trademl.registry.load_model` reads.)

**Loading** (:func:`_load_pyfunc`, called by MLflow with the path of the skops file) goes
through :func:`trademl.tracking.model_files.load_model_dir` only: skops with trademl's
reviewed trusted types for the estimator named in the model's trademl metadata, never the
list in the model's own ``MLmodel``, never unpickling; a tampered file is a
:class:`~trademl.errors.ModelError` and the server does not start.

**Input**: candles as a DataFrame (JSON ``dataframe_split`` or ``dataframe_records``
through the server), columns ``timestamp`` (ISO 8601 strings, UTC unless they carry an
offset; or datetimes, or a ``DatetimeIndex`` instead of the column), ``open``, ``high``,
``low``, ``close``, ``volume``, oldest first. One window per request, or several at once
with a ``window`` column naming the window each row belongs to (any JSON value; each
window's rows in time order; windows are answered in the order they first appear).
Each window needs at least :attr:`CandleSignals.min_bars` bars (the features' warm-up plus
one, and the ATR period plus one: 51 for the default features).

**Output**: one row per window, for its last bar: :data:`OUTPUT_COLUMNS` (``window`` first
when windows were named). ``signal`` is LONG/SHORT/FLAT; ``confidence`` the probability of
the most likely class; ``entry_price`` the last close; ``sl_distance``/``tp_distance``/``atr``
in price units, from the stops, target and ATR period the model's labels were built with (as
MLStrategy trades by default); ``model_name``/``model_version`` are the registry's when the
model was loaded through a ``models:/`` URI (MLflow writes them beside the files), else null.

**Params**: ``min_confidence`` (a string, default ``"0.55"`` as MLStrategy's): a number in
(0, 1], or ``"validated"`` for the threshold selected on the model's validation segment.

A request the model cannot answer (too few bars, candles that are not clean, an unknown
threshold) is an ``MlflowException`` with MLflow's ``INVALID_PARAMETER_VALUE`` code (HTTP
400 from the server) whose message is trademl's, and whose cause is the trademl error.
Requests are JSON: MLflow's CSV parser needs a concrete type for every column, and
``timestamp``/``window`` accept several.

**Where it runs**: ``--env-manager local`` in an environment where trademl is installed
(the model's requirements do not name trademl, so an environment MLflow builds lacks it).

**Older versions** (logged before this module existed) keep MLflow's sklearn pyfunc: served,
they take the engineered feature columns and answer class codes (0 SHORT, 1 FLAT, 2 LONG),
and MLflow loads their skops file with the types their own ``MLmodel`` lists;
:func:`trademl.registry.load_model` and MLStrategy load them as before. Retrain to serve one.

**What this does not protect**: MLflow imports whichever loader module the ``MLmodel``
names, so an ``MLmodel`` rewritten to name another loader (``mlflow.sklearn`` with a pickle)
is loaded by that loader; trademl's own loading (:func:`trademl.registry.load_model`)
never is.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trademl._config import coerce_config
from trademl.data import OHLCV_COLUMNS, validate_ohlcv
from trademl.errors import ConfigError, DataError, InsufficientDataError, ModelError, TradeMLError
from trademl.features import FeatureConfig, feature_names
from trademl.models import single_job
from trademl.strategies.base import SIDE
from trademl.strategies.ml_strategy import learned_trade, model_signals
from trademl.tracking.model_files import ModelFiles, load_model_dir, read_mlmodel

__all__ = [
    "LOADER_MODULE",
    "OUTPUT_COLUMNS",
    "CandleSignals",
    "candle_signature",
    "example_window",
    "strategy_settings",
]

LOADER_MODULE = "trademl.serving"
TIMESTAMP = "timestamp"
WINDOW = "window"  # optional input column: which window a row belongs to
DEFAULT_MIN_CONFIDENCE = "0.55"  # MLStrategy's default
OUTPUT_COLUMNS = (
    "timestamp",
    "signal",
    "confidence",
    "p_SHORT",
    "p_FLAT",
    "p_LONG",
    "entry_price",
    "sl_distance",
    "tp_distance",
    "atr",
    "min_confidence",
    "model_name",
    "model_version",
)
_PROBABILITY_COLUMNS = ("confidence", "p_SHORT", "p_FLAT", "p_LONG")
_METADATA_COLUMNS = ("entry_price", "sl_distance", "tp_distance", "atr")
_SIDE_NAME = {code: name for name, code in SIDE.items()}
# Written by MLflow beside a model it downloads through a models:/ URI (name and version).
_REGISTERED_META = "registered_model_meta"


# -- what the model stores ------------------------------------------------------------------------
def strategy_settings(meta: dict[str, Any], what: str) -> tuple[FeatureConfig, dict[str, Any]]:
    """The feature config and trade settings MLStrategy uses by default for a model with
    trademl metadata ``meta``: the stored features (checked to give the stored columns) and
    :func:`~trademl.strategies.ml_strategy.learned_trade` of the stored labels."""
    if "features" not in meta or "feature_names" not in meta:
        raise ModelError(
            f"{what} has no trademl feature metadata; it was not trained by trademl, so its "
            "features cannot be rebuilt"
        )
    features = coerce_config(dict(meta["features"]), FeatureConfig, name="features")
    if feature_names(features) != list(meta["feature_names"]):
        raise ModelError(
            f"{what}: its stored feature config does not give its stored feature columns; "
            "its metadata was changed. Retrain it with trademl"
        )
    trade = learned_trade(meta.get("labels"))
    if trade is None:
        raise ModelError(
            f"{what} stores no label settings, so its stops and targets are unknown; retrain "
            "it with trademl"
        )
    return features, trade


def _min_bars(features: FeatureConfig, trade: dict[str, Any]) -> int:
    return max(features.min_rows, int(trade["atr_period"]) + 1)  # as MLStrategy.min_bars


# -- what log_model writes ------------------------------------------------------------------------
def candle_signature() -> Any:
    """The MLflow signature of the served model: candles in (``timestamp`` and ``window``
    optional), one signal row out, ``min_confidence`` as a predict param."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec(AnyType(), TIMESTAMP, required=False),  # ISO strings or datetimes
            *(ColSpec("double", c) for c in OHLCV_COLUMNS),
            ColSpec(AnyType(), WINDOW, required=False),
        ]
    )
    double = {*_PROBABILITY_COLUMNS, *_METADATA_COLUMNS, "min_confidence"}
    outputs = Schema(
        [
            ColSpec(AnyType(), WINDOW, required=False),
            *(
                ColSpec(
                    "double" if c in double else "string",
                    c,
                    required=c not in ("model_name", "model_version"),
                )
                for c in OUTPUT_COLUMNS
            ),
        ]
    )
    params = ParamSchema([ParamSpec("min_confidence", "string", DEFAULT_MIN_CONFIDENCE)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def example_window(candles: pd.DataFrame, metadata: dict[str, Any]) -> pd.DataFrame:
    """The served model's input example: the last window of ``candles`` (clean, with a
    ``DatetimeIndex``) it needs, with ``timestamp`` as ISO 8601 strings, as a client sends."""
    meta = (metadata or {}).get("trademl") or {}
    features, trade = strategy_settings(meta, "the model being logged")
    window = candles[list(OHLCV_COLUMNS)].tail(_min_bars(features, trade))
    out = window.reset_index(drop=True)
    out.insert(0, TIMESTAMP, [ts.isoformat() for ts in window.index])
    return out


# -- what MLflow loads ----------------------------------------------------------------------------
def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> CandleSignals:
    """MLflow's entry point: ``path`` is the flavour's ``data`` (the skops file) inside the
    downloaded model directory; the model loads by trademl's rules only. (``model_config``
    never arrives: the flavour declares none, so MLflow drops one with a warning; the
    threshold is the ``min_confidence`` predict param.)"""
    file = Path(path)
    directory = file if file.is_dir() else file.parent
    name, version = _registered(directory)
    what = f"models:/{name}/{version}" if name and version else str(directory)
    files = ModelFiles(directory, read_mlmodel(directory, what), what)
    model = load_model_dir(files)  # the estimator (and so the trusted types): the metadata's
    return CandleSignals(model, files.trademl, name=name, version=version, what=what)


def _registered(directory: Path) -> tuple[str | None, str | None]:
    """Registered name and version MLflow wrote beside the files (``None`` if it did not)."""
    import yaml

    file = directory / _REGISTERED_META
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) if file.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    if not isinstance(data, dict) or not data.get("model_name"):
        return None, None
    version = data.get("model_version")
    return str(data["model_name"]), (str(version) if version is not None else None)


class CandleSignals:
    """The pyfunc implementation: MLStrategy's decision for each window of candles.

    Built by :func:`_load_pyfunc`; ``model`` is the fitted pipeline, ``meta`` the trademl
    metadata stored with it. The classifier predicts on one thread (``n_jobs=1``), as
    MLStrategy does for one row, so requests served concurrently cannot race on it.
    """

    def __init__(
        self,
        model: Any,
        meta: dict[str, Any],
        *,
        name: str | None = None,
        version: str | None = None,
        what: str = "the served model",
    ) -> None:
        self.model = single_job(model)  # one thread, without changing the caller's model
        self.meta = dict(meta)
        self.name, self.version, self.what = name, version, what
        self.features, self.trade = strategy_settings(self.meta, what)

    @property
    def min_bars(self) -> int:
        """Fewest bars a window needs (MLStrategy's ``min_bars`` for this model)."""
        return _min_bars(self.features, self.trade)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row of :data:`OUTPUT_COLUMNS` per window of ``model_input`` (see the module
        docstring); a request it cannot answer is an ``MlflowException`` (HTTP 400)."""
        try:
            min_confidence = self._min_confidence((params or {}).get("min_confidence"))
            named, windows = _windows(model_input)
            rows = [self.signal(window, min_confidence) for _, window in windows]
        except TradeMLError as exc:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        out = pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))
        if named:
            out.insert(0, WINDOW, [key for key, _ in windows])
        return out

    def signal(self, window: pd.DataFrame, min_confidence: float) -> dict[str, Any]:
        """The output row for the last bar of ``window`` (clean candles, ``DatetimeIndex``):
        what ``MLStrategy.generate_signal(window)`` decides, with the class probabilities."""
        what = window.attrs.get("source", "the candles")
        validate_ohlcv(window, what=what)
        if len(window) < self.min_bars:
            raise InsufficientDataError(
                f"{what}: {len(window)} bars, but {self.what} needs at least {self.min_bars} "
                f"(the features' warm-up of {self.features.warmup} bars plus one, and the ATR "
                f"period of {self.trade['atr_period']} plus one); send a longer window",
                needed=self.min_bars,
                got=len(window),
            )
        row = model_signals(
            self.model,
            window,
            self.features,
            min_confidence=min_confidence,
            sl_atr_mult=self.trade["sl_atr_mult"],
            tp_atr_mult=self.trade["tp_atr_mult"],
            confidence_sl_adjustment=self.trade["confidence_sl_adjustment"],
            atr_period=self.trade["atr_period"],
            last_only=True,
        ).iloc[-1]
        return {
            "timestamp": window.index[-1].isoformat(),
            "signal": _SIDE_NAME[int(row["side"])],
            **{c: float(row[c]) for c in (*_PROBABILITY_COLUMNS, *_METADATA_COLUMNS)},
            "min_confidence": min_confidence,
            "model_name": self.name,
            "model_version": self.version,
        }

    def _min_confidence(self, value: Any) -> float:
        """The threshold of a request: a number in (0, 1] or ``"validated"`` (as MLStrategy)."""
        text = DEFAULT_MIN_CONFIDENCE if value is None else str(value).strip()
        if text == "validated":
            stored = self.meta.get("validated_min_confidence")
            if stored is None:
                raise ModelError(
                    f"{self.what} has no confidence threshold selected on validation (trained "
                    "with split.validation=cpcv or none, without evaluation.validation_backtest, "
                    "with fewer than 10 validation trades at every threshold, or by an older "
                    'trademl); give min_confidence a number, e.g. "0.55"'
                )
            return float(stored)
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not 0.0 < number <= 1.0:
            raise ConfigError(
                f"min_confidence={value!r} must be a number in (0, 1] (as a string, e.g. "
                '"0.6"), or "validated" (the threshold selected on the model\'s validation '
                "segment)"
            )
        return number


# -- reading a request ----------------------------------------------------------------------------
def _windows(data: Any) -> tuple[bool, list[tuple[Any, pd.DataFrame]]]:
    """Whether the request names its windows, and ``(window id or None, candles with a
    DatetimeIndex)`` for each of its windows."""
    if isinstance(data, dict):
        data = pd.DataFrame(data)
    if not isinstance(data, pd.DataFrame):
        raise DataError(
            f"expected candles as a DataFrame (JSON dataframe_split or dataframe_records), got "
            f"{type(data).__name__}"
        )
    if len(data) == 0:
        raise DataError("no candles in the request; send a window of OHLCV rows")
    candles = _candles(data)
    if WINDOW not in data.columns:
        candles.attrs["source"] = "the candles"
        return False, [(None, candles)]
    ids = data[WINDOW].reset_index(drop=True)
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"column '{WINDOW}' is empty at row {i}; name the window of every row")
    out = []
    for key, positions in ids.groupby(ids, sort=False).indices.items():
        window = candles.iloc[positions]
        window.attrs["source"] = f"window {_plain(key)!r}"
        out.append((_plain(key), window))
    return True, out


def _candles(data: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in OHLCV_COLUMNS if c not in data.columns]
    if missing:
        raise DataError(
            f"the candles lack column(s) {', '.join(missing)}; send "
            f"{TIMESTAMP}, {', '.join(OHLCV_COLUMNS)}"
        )
    if TIMESTAMP in data.columns:
        index = _timestamps(data[TIMESTAMP])
    elif isinstance(data.index, pd.DatetimeIndex):
        index = data.index if data.index.tz is not None else data.index.tz_localize("UTC")
    else:
        raise DataError(
            f"the candles have no '{TIMESTAMP}' column; send each bar's time as an ISO 8601 "
            "string, e.g. 2024-01-01T00:00:00Z (or, in Python, a DatetimeIndex)"
        )
    values = {c: np.asarray(data[c], dtype=np.float64) for c in OHLCV_COLUMNS}
    return pd.DataFrame(values, index=pd.DatetimeIndex(index, name=TIMESTAMP))


def _timestamps(column: pd.Series) -> pd.DatetimeIndex:
    """Bar times as UTC (a string without an offset is UTC); numbers are refused (their unit
    is ambiguous)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        raise DataError(
            f"column '{TIMESTAMP}' holds numbers; send ISO 8601 strings such as "
            "2024-01-01T00:00:00Z (an epoch number's unit, s or ms, is ambiguous)"
        )
    try:
        return pd.DatetimeIndex(pd.to_datetime(column, utc=True, format="ISO8601"))
    except (ValueError, TypeError, OverflowError):
        for i, value in enumerate(column):
            try:
                pd.to_datetime(value, utc=True, format="ISO8601")
            except (ValueError, TypeError, OverflowError):
                raise DataError(
                    f"column '{TIMESTAMP}' has {value!r} at row {i}, not an ISO 8601 time such "
                    "as 2024-01-01T00:00:00Z"
                ) from None
        raise DataError(f"column '{TIMESTAMP}' cannot be read as times") from None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (so an id comes back as it was sent)."""
    return value.item() if isinstance(value, np.generic) else value
