"""Cleaning raw OHLCV candles, counting every row touched.

:func:`clean_ohlcv_data` applies, in this order: sort, de-duplicate, drop
non-positive prices, drop non-finite and absurd values, handle missing values,
repair invalid OHLC relations, fix negative volume, treat return outliers and
report (or fill) gaps in the time grid. Each case has a policy in
:class:`CleaningConfig`; the returned :class:`CleaningReport` counts every row
each step touched, so that
``rows_out == rows_in - rows_dropped + rows_inserted`` always holds.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trademl._config import check_choice, check_positive_int, coerce_config
from trademl.calendars import check_calendar, infer_calendar, missing_open_bars, open_times_between
from trademl.data import (
    MAX_VALUE,
    MIN_PRICE,
    OHLCV_COLUMNS,
    PRICE_COLUMNS,
    count_out_of_order,
    out_of_ns_range,
)
from trademl.errors import ConfigError, DataError

__all__ = ["CleaningConfig", "CleaningReport", "clean_ohlcv_data"]

log = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826
# A price this many times above (or below) the median close of the bars around it is absurd.
SPIKE_FACTOR = 1e5
SPIKE_WINDOW = 11  # bars, centred on the one tested and including it
# gaps=fill inserts at most this many rows, or 10 per existing row if that is more.
_MAX_FILL_ROWS = 1_000_000


@dataclass(frozen=True)
class CleaningConfig:
    """Policies for each kind of defect.

    Attributes
    ----------
    unsorted : {"sort", "error"}
        Rows out of time order are sorted (stable) or rejected.
    duplicates : {"last", "first", "drop", "error"}
        Rows sharing a timestamp: keep the last (latest update of that candle),
        the first, drop all of them, or reject.
    nonpositive_price : {"drop", "error"}
        Rows with a price <= 0 cannot be repaired: drop or reject.
    absurd : {"drop", "error"}
        Rows with a non-finite value (``inf``, ``-inf``), a value no market has (a price
        outside ``[1e-30, 1e30]``, a volume above ``1e30``: ``trademl.data.MIN_PRICE`` and
        ``MAX_VALUE``) or a price more than ``SPIKE_FACTOR`` (1e5) times above or below the
        median close of the ``SPIKE_WINDOW`` (11) bars centred on it: drop or reject. A
        price level that lasts more than half the window is a market move, not a typo.
    missing : {"fill", "drop", "error"}
        Rows with NaN: ``fill`` takes missing prices from the previous close (a
        flat candle) and missing volume as 0; leading rows with no earlier close
        and no price of their own are dropped. ``drop`` drops every such row.
    invalid_ohlc : {"repair", "drop", "error"}
        ``high < max(open, close)`` or ``low > min(open, close)``: ``repair``
        widens high/low to the envelope of the four prices.
    negative_volume : {"zero", "drop", "error"}
    outliers : {"clip", "drop", "keep", "error"}
        A bar whose log close-to-close return has a robust z-score above
        ``outlier_threshold`` (centre and scale: median and 1.4826 x median
        absolute deviation of the previous ``outlier_window`` returns) is clipped
        to the threshold band, dropped, only counted (``keep``), or rejected.
    outlier_window, outlier_threshold
        Window (bars) and robust z threshold of the outlier test.
    gaps : {"report", "fill", "error"}
        Missing bars in the time grid: count them, insert flat zero-volume
        candles at the previous close, or reject.
    freq : str or None
        Bar interval (``"1h"``, ``"5min"``); ``None`` infers the median step.
    calendar : {"auto", "24/7", "24/5", "weekdays"} or "days:..."
        When the market has bars (:mod:`trademl.calendars`): a missing bar is a gap only when
        the market was open. ``auto`` infers it (no Saturday bars: ``24/5`` with Sunday bars,
        else ``weekdays``).

    The default outlier policy is ``keep``: outliers are counted and reported, prices are not
    changed (a real market event, such as an election-weekend gap, must stay what it was);
    ``clip`` and ``drop`` are opt-ins.
    """

    unsorted: str = "sort"
    duplicates: str = "last"
    nonpositive_price: str = "drop"
    absurd: str = "drop"
    missing: str = "fill"
    invalid_ohlc: str = "repair"
    negative_volume: str = "zero"
    outliers: str = "keep"
    outlier_window: int = 100
    outlier_threshold: float = 12.0
    gaps: str = "report"
    freq: str | None = None
    calendar: str = "auto"

    def __post_init__(self) -> None:
        check_choice("cleaning.unsorted", self.unsorted, ("sort", "error"))
        check_choice("cleaning.duplicates", self.duplicates, ("last", "first", "drop", "error"))
        check_choice("cleaning.nonpositive_price", self.nonpositive_price, ("drop", "error"))
        check_choice("cleaning.absurd", self.absurd, ("drop", "error"))
        check_choice("cleaning.missing", self.missing, ("fill", "drop", "error"))
        check_choice("cleaning.invalid_ohlc", self.invalid_ohlc, ("repair", "drop", "error"))
        check_choice("cleaning.negative_volume", self.negative_volume, ("zero", "drop", "error"))
        check_choice("cleaning.outliers", self.outliers, ("clip", "drop", "keep", "error"))
        check_choice("cleaning.gaps", self.gaps, ("report", "fill", "error"))
        check_calendar(self.calendar)
        check_positive_int("cleaning.outlier_window", self.outlier_window, minimum=5)
        if not isinstance(self.outlier_threshold, int | float) or self.outlier_threshold <= 0:
            raise ConfigError(
                f"cleaning.outlier_threshold={self.outlier_threshold!r} must be a positive number"
            )
        if self.freq is not None:
            _parse_freq(self.freq)


@dataclass
class CleaningReport:
    """What :func:`clean_ohlcv_data` did, row by row. All counts are rows."""

    rows_in: int = 0
    rows_out: int = 0
    unsorted_rows: int = 0
    duplicate_rows_dropped: int = 0
    nonpositive_rows_dropped: int = 0
    nonfinite_rows_dropped: int = 0
    absurd_rows_dropped: int = 0
    missing_rows_filled: int = 0
    missing_rows_dropped: int = 0
    invalid_ohlc_repaired: int = 0
    invalid_ohlc_dropped: int = 0
    negative_volume_zeroed: int = 0
    negative_volume_dropped: int = 0
    outliers_clipped: int = 0
    outliers_dropped: int = 0
    outliers_kept: int = 0
    gaps: int = 0
    missing_bars: int = 0
    gap_rows_inserted: int = 0
    largest_gap: str | None = None
    freq: str | None = None
    calendar: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def rows_dropped(self) -> int:
        """All rows removed, whatever the reason."""
        return (
            self.duplicate_rows_dropped
            + self.nonpositive_rows_dropped
            + self.nonfinite_rows_dropped
            + self.absurd_rows_dropped
            + self.missing_rows_dropped
            + self.invalid_ohlc_dropped
            + self.negative_volume_dropped
            + self.outliers_dropped
        )

    @property
    def rows_modified(self) -> int:
        """Rows kept but changed (filled, repaired, zeroed, clipped)."""
        return (
            self.missing_rows_filled
            + self.invalid_ohlc_repaired
            + self.negative_volume_zeroed
            + self.outliers_clipped
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rows_dropped"] = self.rows_dropped
        data["rows_modified"] = self.rows_modified
        return data

    def summary(self) -> str:
        """Human-readable lines, one per non-zero count."""
        lines = [
            f"rows in {self.rows_in}, rows out {self.rows_out} "
            f"(dropped {self.rows_dropped}, modified {self.rows_modified}, "
            f"inserted {self.gap_rows_inserted})"
        ]
        if self.freq is not None:
            lines.append(f"  bar interval {self.freq}, market calendar {self.calendar}")
        skip = {"rows_in", "rows_out", "freq", "largest_gap", "notes", "calendar"}
        for name, value in dataclasses.asdict(self).items():
            if name not in skip and value:
                lines.append(f"  {name.replace('_', ' ')}: {value}")
        if self.gaps:
            lines.append(f"  largest gap: {self.largest_gap}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def clean_ohlcv_data(
    df: pd.DataFrame, config: CleaningConfig | dict | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean raw candles and report every row touched.

    Parameters
    ----------
    df
        Candles as returned by :func:`trademl.data.load_ohlcv_data` (or any frame
        with the five OHLCV columns on a ``DatetimeIndex``).
    config
        A :class:`CleaningConfig`, a mapping of its fields, or ``None`` for defaults.

    Returns
    -------
    (cleaned, report)
        The cleaned frame (float64, strictly increasing UTC index) and a
        :class:`CleaningReport`. The input frame is not modified.
    """
    cfg = coerce_config(config, CleaningConfig, name="cleaning")
    source = df.attrs.get("source", "data") if isinstance(df, pd.DataFrame) else "data"
    _check_shape(df, source)
    report = CleaningReport(rows_in=len(df))
    out = pd.DataFrame(
        {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in OHLCV_COLUMNS},
        index=_utc_ns(df.index, source),
    )

    out = _sort(out, df, cfg, report, source)
    out = _dedupe(out, cfg, report, source)
    out = _nonpositive(out, cfg, report, source)
    out = _absurd(out, cfg, report, source)
    out = _missing(out, cfg, report, source)
    out = _invalid_ohlc(out, cfg, report, source)
    out = _negative_volume(out, cfg, report, source)
    out = _outliers(out, cfg, report, source)
    out = _gaps(out, cfg, report, source)

    report.rows_out = len(out)
    if report.rows_out != report.rows_in - report.rows_dropped + report.gap_rows_inserted:
        raise AssertionError(f"cleaning lost track of rows: {report.to_dict()}")  # pragma: no cover
    out.attrs = {"source": source}
    if report.rows_dropped or report.rows_modified or report.gap_rows_inserted:
        log.info("cleaned %s: %s", source, report.summary().replace("\n", ";"))
    return out, report


def _check_shape(df: Any, source: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{source}: index must be a DatetimeIndex, got {type(df.index).__name__}")
    for c in OHLCV_COLUMNS:
        count = int((df.columns == c).sum())
        if count > 1:
            raise DataError(f"{source}: column '{c}' appears {count} times; keep one")
        dtype = df[c].dtype
        if (
            not pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_complex_dtype(dtype)
        ):
            raise DataError(f"{source}: column '{c}' must be numeric, got dtype {dtype}")
    if df.index.hasnans:
        i = int(np.flatnonzero(df.index.isna())[0])
        raise DataError(f"{source}: missing timestamp at row {i}")


def _utc_ns(index: pd.DatetimeIndex, source: str) -> pd.DatetimeIndex:
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    i = out_of_ns_range(index)
    if i is not None:
        raise DataError(
            f"{source}: timestamp {index[i].tz_localize(None)} at row {i} is out of range "
            "(pandas datetimes span 1677-09-21 to 2262-04-11); fix or drop that row"
        )
    return index.as_unit("ns").rename("timestamp")


def _reject(source: str, what: str, out: pd.DataFrame, mask: np.ndarray, hint: str) -> DataError:
    i = int(np.flatnonzero(mask)[0])
    return DataError(
        f"{source}: {int(mask.sum())} row(s) with {what}, first at {out.index[i]} (row {i}); {hint}"
    )


def _sort(out, original, cfg, report, source):
    in_file = int(original.attrs.get("unsorted_rows", 0))
    here = count_out_of_order(out.index.asi8)
    report.unsorted_rows = in_file + here
    if report.unsorted_rows and cfg.unsorted == "error":
        raise DataError(
            f"{source}: {report.unsorted_rows} row(s) out of time order; "
            "set cleaning.unsorted=sort to sort them"
        )
    if here:
        out = out.iloc[np.argsort(out.index.asi8, kind="stable")]
    return out


def _dedupe(out, cfg, report, source):
    dup_any = out.index.duplicated(keep=False)
    if not dup_any.any():
        return out
    if cfg.duplicates == "error":
        raise _reject(
            source,
            "duplicate timestamps",
            out,
            dup_any,
            "set cleaning.duplicates to last, first or drop",
        )
    keep_mask = ~dup_any if cfg.duplicates == "drop" else ~out.index.duplicated(keep=cfg.duplicates)
    report.duplicate_rows_dropped = int((~keep_mask).sum())
    return out[keep_mask]


def _nonpositive(out, cfg, report, source):
    prices = out[list(PRICE_COLUMNS)].to_numpy()
    with np.errstate(invalid="ignore"):
        bad = (prices <= 0).any(axis=1)
    if bad.any():
        if cfg.nonpositive_price == "error":
            raise _reject(
                source, "a price <= 0", out, bad, "set cleaning.nonpositive_price=drop to drop them"
            )
        report.nonpositive_rows_dropped = int(bad.sum())
        out = out[~bad]
    return out


def _absurd(out, cfg, report, source):
    values = out.to_numpy()
    prices = values[:, :4]
    with np.errstate(invalid="ignore"):
        nonfinite = np.isinf(values).any(axis=1)
        hard = (np.abs(values) > MAX_VALUE).any(axis=1) | (prices < MIN_PRICE).any(axis=1)
    hard &= ~nonfinite
    close = pd.Series(np.where(nonfinite | hard, np.nan, values[:, 3]))
    ref = close.rolling(SPIKE_WINDOW, center=True, min_periods=3).median().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.abs(np.log(prices / ref[:, None]))
        spike = ~(nonfinite | hard) & (distance > np.log(SPIKE_FACTOR)).any(axis=1)
    bad = nonfinite | hard | spike
    if not bad.any():
        return out
    if cfg.absurd == "error":
        raise _reject(
            source,
            "non-finite or absurd values",
            out,
            bad,
            "fix them at the source, or set cleaning.absurd=drop to drop those rows",
        )
    report.nonfinite_rows_dropped = int(nonfinite.sum())
    report.absurd_rows_dropped = int((hard | spike).sum())
    return out[~bad]


def _missing(out, cfg, report, source):
    values = out.to_numpy(copy=True)
    nan_rows = np.isnan(values).any(axis=1)
    if not nan_rows.any():
        return out
    if cfg.missing == "error":
        raise _reject(source, "missing values", out, nan_rows, "set cleaning.missing=fill or drop")
    if cfg.missing == "drop":
        report.missing_rows_dropped = int(nan_rows.sum())
        return out[~nan_rows]
    o, h, lo, c, v = (values[:, k] for k in range(5))
    # A row's own prices first (close, then open), else the previous known close.
    own = np.where(np.isnan(c), o, c)
    prev_close = pd.Series(c).ffill().shift(1).to_numpy()
    ref = np.where(np.isnan(prev_close), own, prev_close)
    c_new = np.where(np.isnan(c), ref, c)
    o_new = np.where(np.isnan(o), ref, o)
    body_hi, body_lo = np.maximum(o_new, c_new), np.minimum(o_new, c_new)
    h_new = np.where(np.isnan(h), body_hi, h)
    l_new = np.where(np.isnan(lo), body_lo, lo)
    v_new = np.where(np.isnan(v), 0.0, v)
    filled = np.column_stack([o_new, h_new, l_new, c_new, v_new])
    unfillable = np.isnan(filled).any(axis=1)
    report.missing_rows_dropped = int(unfillable.sum())
    report.missing_rows_filled = int((nan_rows & ~unfillable).sum())
    result = pd.DataFrame(filled, index=out.index, columns=out.columns)
    return result[~unfillable]


def _invalid_ohlc(out, cfg, report, source):
    o, h, lo, c = (out[k].to_numpy() for k in PRICE_COLUMNS)
    bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo)
    if not bad.any():
        return out
    if cfg.invalid_ohlc == "error":
        raise _reject(
            source,
            "high < max(open, close) or low > min(open, close)",
            out,
            bad,
            "set cleaning.invalid_ohlc=repair or drop",
        )
    if cfg.invalid_ohlc == "drop":
        report.invalid_ohlc_dropped = int(bad.sum())
        return out[~bad]
    report.invalid_ohlc_repaired = int(bad.sum())
    stacked = np.column_stack([o, h, lo, c])
    out = out.copy()
    out["high"] = stacked.max(axis=1)
    out["low"] = stacked.min(axis=1)
    return out


def _negative_volume(out, cfg, report, source):
    bad = out["volume"].to_numpy() < 0
    if not bad.any():
        return out
    if cfg.negative_volume == "error":
        raise _reject(source, "negative volume", out, bad, "set cleaning.negative_volume=zero")
    if cfg.negative_volume == "drop":
        report.negative_volume_dropped = int(bad.sum())
        return out[~bad]
    report.negative_volume_zeroed = int(bad.sum())
    out = out.copy()
    out.loc[bad, "volume"] = 0.0
    return out


def _outliers(out, cfg, report, source):
    n = len(out)
    if n < 3:
        return out
    close = out["close"].to_numpy()
    r = np.empty(n)
    r[0] = np.nan
    r[1:] = np.log(close[1:] / close[:-1])
    past = pd.Series(r).shift(1)
    min_periods = min(cfg.outlier_window, 20)
    centre = past.rolling(cfg.outlier_window, min_periods=min_periods).median().to_numpy()
    scale = (
        _MAD_TO_SIGMA
        * (past - centre)
        .abs()
        .rolling(cfg.outlier_window, min_periods=min_periods)
        .median()
        .to_numpy()
    )
    thr = float(cfg.outlier_threshold)
    lo_band, hi_band = centre - thr * scale, centre + thr * scale
    checkable = np.isfinite(centre) & (scale > 0)
    with np.errstate(invalid="ignore"):
        flagged = checkable & ((r < lo_band) | (r > hi_band))
    if not flagged.any():
        return out
    if cfg.outliers == "error":
        raise _reject(
            source,
            f"return outliers (robust z > {thr:g})",
            out,
            flagged,
            "set cleaning.outliers to clip, drop or keep",
        )
    if cfg.outliers == "keep":
        report.outliers_kept = int(flagged.sum())
        return out
    # Sequential over the (few) candidates: after a bar is clipped or dropped the
    # next bar's return is measured from the cleaned previous close.
    values = out.to_numpy(copy=True)
    keep = np.ones(n, dtype=bool)
    candidates = sorted(np.flatnonzero(flagged).tolist())
    prev_of = np.arange(-1, n - 1)  # index of the previous kept row
    pending = set(candidates)
    i_iter = 0
    while i_iter < len(candidates):
        t = candidates[i_iter]
        i_iter += 1
        p = prev_of[t]
        if p < 0 or not checkable[t]:
            continue
        ret = np.log(values[t, 3] / values[p, 3])
        if lo_band[t] <= ret <= hi_band[t]:
            continue
        if cfg.outliers == "drop":
            keep[t] = False
            report.outliers_dropped += 1
            if t + 1 < n:
                prev_of[t + 1] = p
        else:
            lo_price = values[p, 3] * np.exp(lo_band[t])
            hi_price = values[p, 3] * np.exp(hi_band[t])
            values[t, :4] = np.clip(values[t, :4], lo_price, hi_price)
            values[t, 1] = values[t, :4].max()
            values[t, 2] = values[t, :4].min()
            report.outliers_clipped += 1
        if t + 1 < n and (t + 1) not in pending:
            pending.add(t + 1)
            candidates.insert(i_iter, t + 1)
    result = pd.DataFrame(values, index=out.index, columns=out.columns)
    return result[keep]


def _parse_freq(freq: str) -> pd.Timedelta:
    text = str(freq).strip()
    if text.endswith("m") and text[:-1].isdigit():  # "15m" as exchanges write it
        text = text[:-1] + "min"
    try:
        td = pd.Timedelta(pd.tseries.frequencies.to_offset(text))
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bar interval {freq!r} is not understood; use e.g. 1min, 5min, 1h, 1D"
        ) from exc
    if td <= pd.Timedelta(0):
        raise ConfigError(f"bar interval {freq!r} must be positive")
    return td


def _gaps(out, cfg, report, source):
    if len(out) < 2:
        return out
    # Subtracted as unsigned: exact for increasing times even when a step exceeds int64.
    steps = np.diff(out.index.asi8.view(np.uint64))
    if steps.max() > np.iinfo(np.int64).max:
        i = int(steps.argmax())
        raise DataError(
            f"{source}: rows {i} ({out.index[i]}) and {i + 1} ({out.index[i + 1]}) are more "
            "than 292 years apart, more than a pandas duration holds; drop the stray row"
        )
    steps = steps.astype(np.int64)
    step = _parse_freq(cfg.freq).value if cfg.freq is not None else int(np.median(steps))
    report.freq = str(pd.Timedelta(step, unit="ns"))
    calendar = cfg.calendar
    if calendar == "auto":
        calendar = infer_calendar(out.index, pd.Timedelta(step, unit="ns"))
    report.calendar = calendar
    gap_at, missing = missing_open_bars(out.index, step, calendar)
    if gap_at.size == 0:
        return out
    report.gaps = int(gap_at.size)
    report.missing_bars = int(missing.sum())
    report.largest_gap = str(pd.Timedelta(int(steps[gap_at].max()), unit="ns"))
    off_grid = int(np.count_nonzero(steps % step))
    if off_grid:
        report.notes.append(f"{off_grid} step(s) are not a multiple of the bar interval")
    if cfg.gaps == "error":
        i = int(gap_at[0])
        raise DataError(
            f"{source}: {report.gaps} gap(s) in the time grid ({report.missing_bars} "
            f"missing bars), first after {out.index[i]}; set cleaning.gaps=report "
            "or fill"
        )
    if cfg.gaps == "report":
        return out
    limit = max(_MAX_FILL_ROWS, 10 * len(out))
    if report.missing_bars > limit:
        raise DataError(
            f"{source}: filling the gaps would insert {report.missing_bars} rows (more than "
            f"{limit}; bar interval {report.freq}, largest gap {report.largest_gap}); set "
            "cleaning.freq to the real bar interval, or cleaning.gaps=report"
        )
    if calendar == "24/7":
        full = pd.date_range(out.index[0], out.index[-1], freq=pd.Timedelta(step, unit="ns"))
    else:  # only the bars of open hours are missing
        ts = out.index.asi8
        pieces = [open_times_between(ts[i], ts[i + 1], step, calendar) for i in gap_at]
        full = pieces[0].append(pieces[1:])
    full = full.union(out.index)
    filled = out.reindex(full)
    inserted = filled["close"].isna().to_numpy()
    close = filled["close"].ffill()
    for col in PRICE_COLUMNS:
        filled[col] = filled[col].fillna(close)
    filled["volume"] = filled["volume"].fillna(0.0)
    filled.index.name = "timestamp"
    report.gap_rows_inserted = int(inserted.sum())
    return filled
