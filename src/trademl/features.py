"""The feature catalogue and the batch :func:`build_feature_matrix`.

Seven groups, 49 features with the default periods (the spec's ``ema_periods``
5/9/20/50, ``rsi_periods`` 7/14, ``atr_periods`` 7/14). Every feature is:

* causal: its value at bar ``t`` uses bars ``<= t`` only;
* scale-free: unchanged when all prices, or all volumes, are multiplied by a constant;
* defined everywhere after the warm-up (degenerate windows give a stated neutral value).

The catalogue (:func:`feature_catalogue`, ``trademl features --list``,
``docs/features.md``) lists each feature with its formula and lookback; it is
generated from the same specs that compute the values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from trademl import indicators as ind
from trademl._config import check_choice, check_periods, coerce_config
from trademl.data import validate_ohlcv
from trademl.errors import ConfigError, InsufficientDataError

__all__ = [
    "FEATURE_GROUPS",
    "FeatureConfig",
    "FeatureReport",
    "FeatureSpec",
    "build_feature_matrix",
    "feature_catalogue",
    "feature_names",
]

log = logging.getLogger(__name__)

FEATURE_GROUPS: tuple[str, ...] = (
    "price",
    "returns",
    "ema",
    "rsi",
    "volume",
    "volatility",
    "momentum",
)

_PERIOD_FIELDS = (
    "ema_periods",
    "rsi_periods",
    "atr_periods",
    "return_lags",
    "volatility_windows",
    "volume_windows",
    "corr_windows",
    "momentum_windows",
)


@dataclass(frozen=True)
class FeatureConfig:
    """Which features to build and their periods (bars).

    The defaults give the spec's 49 features. Lists are strictly increasing.
    """

    ema_periods: tuple[int, ...] = (5, 9, 20, 50)
    rsi_periods: tuple[int, ...] = (7, 14)
    atr_periods: tuple[int, ...] = (7, 14)
    return_lags: tuple[int, ...] = (1, 3, 5)
    volatility_windows: tuple[int, ...] = (10, 20)
    volume_windows: tuple[int, ...] = (5, 20)
    corr_windows: tuple[int, ...] = (10, 20)
    momentum_windows: tuple[int, ...] = (10, 20)
    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    groups: tuple[str, ...] = FEATURE_GROUPS

    def __post_init__(self) -> None:
        for name in _PERIOD_FIELDS:
            minimum = 1 if name in ("return_lags", "momentum_windows") else 2
            object.__setattr__(
                self, name, check_periods(f"features.{name}", getattr(self, name), minimum=minimum)
            )
        groups = tuple(self.groups) if not isinstance(self.groups, str) else (self.groups,)
        if not groups:
            raise ConfigError(
                "features.groups is empty; name at least one of " + ", ".join(FEATURE_GROUPS)
            )
        for g in groups:
            check_choice("features.groups entry", g, FEATURE_GROUPS)
        object.__setattr__(self, "groups", groups)
        if not 0.0 < self.rsi_oversold < self.rsi_overbought < 100.0:
            raise ConfigError(
                f"features.rsi_oversold={self.rsi_oversold} and rsi_overbought="
                f"{self.rsi_overbought} must satisfy 0 < oversold < overbought < 100"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping (lists, not tuples), e.g. to log with a model."""
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }

    @property
    def warmup(self) -> int:
        """Rows at the start without a value for every feature (removed by the builder)."""
        return max(spec.lookback for spec in _specs(self))

    @property
    def min_rows(self) -> int:
        """Fewest input rows that give one row of features."""
        return self.warmup + 1


class FeatureSpec(NamedTuple):
    """One feature: its name, group, formula, lookback and how to compute it."""

    name: str
    group: str
    formula: str
    lookback: int
    compute: Callable[[], np.ndarray]


@dataclass
class FeatureReport:
    """What :func:`build_feature_matrix` did."""

    rows_in: int
    rows_out: int
    warmup_rows: int
    n_features: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Bars:
    """Input arrays plus cached intermediate series shared by several features."""

    def __init__(self, df: pd.DataFrame | None) -> None:
        self._cache: dict[tuple, np.ndarray] = {}
        if df is None:  # catalogue only: nothing is computed
            return
        self.open = df["open"].to_numpy(dtype=np.float64)
        self.high = df["high"].to_numpy(dtype=np.float64)
        self.low = df["low"].to_numpy(dtype=np.float64)
        self.close = df["close"].to_numpy(dtype=np.float64)
        self.volume = df["volume"].to_numpy(dtype=np.float64)

    def cached(self, key: tuple, fn: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def ret(self, k: int) -> np.ndarray:
        return self.cached(("ret", k), lambda: self.close / ind.shift(self.close, k) - 1.0)

    def ema(self, p: int) -> np.ndarray:
        return self.cached(("ema", p), lambda: ind.ema(self.close, p))

    def rsi(self, p: int) -> np.ndarray:
        return self.cached(("rsi", p), lambda: ind.rsi(self.close, p))

    def range(self) -> np.ndarray:
        return self.cached(("range",), lambda: self.high - self.low)

    def volume_ma(self, w: int) -> np.ndarray:
        return self.cached(("vma", w), lambda: ind.rolling_mean(self.volume, w))


def _price(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    yield FeatureSpec("open_norm", "price", "open / close - 1", 0, lambda: b.open / b.close - 1.0)
    yield FeatureSpec("high_norm", "price", "high / close - 1", 0, lambda: b.high / b.close - 1.0)
    yield FeatureSpec("low_norm", "price", "low / close - 1", 0, lambda: b.low / b.close - 1.0)
    yield FeatureSpec("hl_range", "price", "(high - low) / close", 0, lambda: b.range() / b.close)
    yield FeatureSpec(
        "body_ratio",
        "price",
        "(close - open) / (high - low); 0 if high == low",
        0,
        lambda: ind.safe_div(b.close - b.open, b.range()),
    )
    yield FeatureSpec(
        "upper_shadow",
        "price",
        "(high - max(open, close)) / (high - low); 0 if high == low",
        0,
        lambda: ind.safe_div(b.high - np.maximum(b.open, b.close), b.range()),
    )
    yield FeatureSpec(
        "lower_shadow",
        "price",
        "(min(open, close) - low) / (high - low); 0 if high == low",
        0,
        lambda: ind.safe_div(np.minimum(b.open, b.close) - b.low, b.range()),
    )


def _returns(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    for k in cfg.return_lags:
        yield FeatureSpec(
            f"return_{k}", "returns", f"close / close[t-{k}] - 1", k, lambda k=k: b.ret(k)
        )
    yield FeatureSpec(
        "log_return_1",
        "returns",
        "ln(close / close[t-1])",
        1,
        lambda: np.log(b.close / ind.shift(b.close, 1)),
    )
    for w in cfg.volatility_windows:
        yield FeatureSpec(
            f"return_vol_{w}",
            "returns",
            f"sample std of return_1 over the last {w} bars",
            w,
            lambda w=w: ind.rolling_std(b.ret(1), w),
        )


def _ema(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    for p in cfg.ema_periods:
        yield FeatureSpec(
            f"ema_dist_{p}",
            "ema",
            f"close / EMA{p} - 1",
            p - 1,
            lambda p=p: b.close / b.ema(p) - 1.0,
        )
    for p in cfg.ema_periods:
        yield FeatureSpec(
            f"ema_slope_{p}",
            "ema",
            f"EMA{p} / EMA{p}[t-1] - 1",
            p,
            lambda p=p: b.ema(p) / ind.shift(b.ema(p), 1) - 1.0,
        )
    pairs = list(zip(cfg.ema_periods[:-1], cfg.ema_periods[1:], strict=True))
    for a, c in pairs:
        yield FeatureSpec(
            f"ema_spread_{a}_{c}",
            "ema",
            f"EMA{a} / EMA{c} - 1",
            c - 1,
            lambda a=a, c=c: b.ema(a) / b.ema(c) - 1.0,
        )
    for a, c in pairs:

        def cross(a: int = a, c: int = c) -> np.ndarray:
            side = np.sign(b.ema(a) - b.ema(c))
            return (side - ind.shift(side, 1)) / 2.0

        yield FeatureSpec(
            f"ema_cross_{a}_{c}",
            "ema",
            f"(sign(EMA{a} - EMA{c}) - its value at t-1) / 2: +1 on the bar EMA{a} "
            f"crosses above EMA{c}, -1 below, 0 otherwise",
            c,
            cross,
        )


def _rsi(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    hi, lo = cfg.rsi_overbought, cfg.rsi_oversold
    for p in cfg.rsi_periods:
        yield FeatureSpec(
            f"rsi_{p}_norm",
            "rsi",
            f"(RSI{p} - 50) / 50, Wilder RSI",
            p,
            lambda p=p: (b.rsi(p) - 50.0) / 50.0,
        )
        yield FeatureSpec(
            f"rsi_{p}_overbought",
            "rsi",
            f"1 if RSI{p} > {hi:g} else 0",
            p,
            lambda p=p: _flag(b.rsi(p) > hi, b.rsi(p)),
        )
        yield FeatureSpec(
            f"rsi_{p}_oversold",
            "rsi",
            f"1 if RSI{p} < {lo:g} else 0",
            p,
            lambda p=p: _flag(b.rsi(p) < lo, b.rsi(p)),
        )


def _volume(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    vw = cfg.volume_windows
    for w in vw:
        yield FeatureSpec(
            f"volume_ratio_{w}",
            "volume",
            f"volume / mean(volume, {w}); 1 if the mean is 0",
            w - 1,
            lambda w=w: ind.safe_div(b.volume, b.volume_ma(w), fill=1.0),
        )
    z = vw[-1]
    yield FeatureSpec(
        f"volume_zscore_{z}",
        "volume",
        f"(volume - mean(volume, {z})) / std(volume, {z}); 0 if std is 0",
        z - 1,
        lambda: ind.safe_div(b.volume - b.volume_ma(z), ind.rolling_std(b.volume, z)),
    )
    if len(vw) > 1:
        s, lg = vw[0], vw[-1]
        yield FeatureSpec(
            f"volume_trend_{s}_{lg}",
            "volume",
            f"mean(volume, {s}) / mean(volume, {lg}) - 1; 0 if the long mean is 0",
            lg - 1,
            lambda: ind.safe_div(b.volume_ma(s), b.volume_ma(lg), fill=1.0) - 1.0,
        )
    for w in cfg.corr_windows:
        yield FeatureSpec(
            f"pv_corr_{w}",
            "volume",
            f"Pearson correlation of return_1 and volume over {w} bars; 0 if either is constant",
            w,
            lambda w=w: ind.rolling_corr(b.ret(1), b.volume, w),
        )


def _volatility(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    for p in cfg.atr_periods:
        yield FeatureSpec(
            f"atr_{p}_norm",
            "volatility",
            f"ATR{p} / close, Wilder ATR",
            p,
            lambda p=p: ind.atr(b.high, b.low, b.close, p) / b.close,
        )
    for w in cfg.volatility_windows:
        yield FeatureSpec(
            f"parkinson_vol_{w}",
            "volatility",
            f"sqrt(mean(ln(high / low)^2, {w}) / (4 ln 2))",
            w - 1,
            lambda w=w: np.sqrt(
                ind.rolling_mean(np.log(b.high / b.low) ** 2, w) / (4.0 * np.log(2.0))
            ),
        )


def _momentum(b: _Bars, cfg: FeatureConfig) -> Iterator[FeatureSpec]:
    for w in cfg.momentum_windows:
        yield FeatureSpec(
            f"roc_{w}", "momentum", f"close / close[t-{w}] - 1", w, lambda w=w: b.ret(w)
        )
    for w in cfg.momentum_windows:

        def efficiency(w: int = w) -> np.ndarray:
            step = np.abs(b.close - ind.shift(b.close, 1))
            return ind.safe_div(b.close - ind.shift(b.close, w), ind.rolling_sum(step, w))

        yield FeatureSpec(
            f"momentum_{w}",
            "momentum",
            f"(close - close[t-{w}]) / sum(|close - close[t-1]|, {w}) "
            "(signed efficiency ratio in [-1, 1]); 0 if flat",
            w,
            efficiency,
        )
    for w in cfg.momentum_windows:
        yield FeatureSpec(
            f"accel_{w}",
            "momentum",
            f"roc_{w} - roc_{w}[t-{w}]",
            2 * w,
            lambda w=w: b.ret(w) - ind.shift(b.ret(w), w),
        )


def _flag(mask: np.ndarray, source: np.ndarray) -> np.ndarray:
    out = mask.astype(np.float64)
    out[np.isnan(source)] = np.nan
    return out


_GROUP_BUILDERS = {
    "price": _price,
    "returns": _returns,
    "ema": _ema,
    "rsi": _rsi,
    "volume": _volume,
    "volatility": _volatility,
    "momentum": _momentum,
}


def _specs(cfg: FeatureConfig, bars: _Bars | None = None) -> list[FeatureSpec]:
    b = bars if bars is not None else _Bars(None)
    return [spec for g in FEATURE_GROUPS if g in cfg.groups for spec in _GROUP_BUILDERS[g](b, cfg)]


def feature_names(config: FeatureConfig | dict | None = None) -> list[str]:
    """Column names :func:`build_feature_matrix` produces for ``config``, in order."""
    return [s.name for s in _specs(coerce_config(config, FeatureConfig, name="features"))]


def feature_catalogue(config: FeatureConfig | dict | None = None) -> pd.DataFrame:
    """Every feature with its group, formula and lookback (first bar index with a value)."""
    specs = _specs(coerce_config(config, FeatureConfig, name="features"))
    return pd.DataFrame(
        [(s.name, s.group, s.formula, s.lookback) for s in specs],
        columns=["name", "group", "formula", "lookback"],
    )


def build_feature_matrix(
    df: pd.DataFrame,
    config: FeatureConfig | dict | None = None,
    *,
    return_report: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, FeatureReport]:
    """Compute the feature matrix of clean candles.

    Parameters
    ----------
    df
        Clean OHLCV (see :func:`trademl.data.validate_ohlcv`), at least
        ``config.min_rows`` rows.
    config
        A :class:`FeatureConfig`, a mapping of its fields, or ``None`` (the 49 defaults).
    return_report
        Also return a :class:`FeatureReport` (rows in/out, warm-up rows removed).

    Returns
    -------
    pandas.DataFrame
        float64, no NaN or inf, one row per input bar after the warm-up, on the
        input's index (``df.index[warmup:]``), columns in catalogue order.

    Raises
    ------
    DataError
        The candles are not clean (see :func:`validate_ohlcv`).
    InsufficientDataError
        Fewer rows than ``config.min_rows``.
    """
    cfg = coerce_config(config, FeatureConfig, name="features")
    what = df.attrs.get("source", "data") if isinstance(df, pd.DataFrame) else "data"
    validate_ohlcv(df, what=what)
    warmup = cfg.warmup
    if len(df) < cfg.min_rows:
        raise InsufficientDataError(
            f"{what}: {len(df)} rows, but the features need at least {cfg.min_rows} "
            f"({warmup} warm-up bars for the longest window plus one); provide more history",
            needed=cfg.min_rows,
            got=len(df),
        )
    bars = _Bars(df)
    specs = _specs(cfg, bars)
    n = len(df)
    out = np.empty((n, len(specs)), dtype=np.float64, order="F")
    for j, spec in enumerate(specs):
        column = out[:, j]
        column[:] = spec.compute()
        if not np.isfinite(column[warmup:]).all():  # pragma: no cover - a formula bug
            i = int(np.flatnonzero(~np.isfinite(column[warmup:]))[0]) + warmup
            raise AssertionError(f"feature {spec.name} is {column[i]} at {df.index[i]}")
    body = out[warmup:]
    matrix = pd.DataFrame(
        body, index=df.index[warmup:], columns=[s.name for s in specs], copy=False
    )
    report = FeatureReport(
        rows_in=n, rows_out=n - warmup, warmup_rows=warmup, n_features=len(specs)
    )
    log.debug(
        "built %d features on %d rows (%d warm-up rows removed)", len(specs), n - warmup, warmup
    )
    return (matrix, report) if return_report else matrix
