"""Does a feature function or a strategy use the future? Checked on your own candles.

:func:`check_lookahead` computes ``full = func(candles)`` once, then at many cut points ``c``
(bars ``[0, c)`` are the past, bars from ``c`` on the future) compares the rows of ``full`` up
to bar ``c - 1`` with the same rows of

* ``prefix``: ``func(candles.iloc[:c])``, the future removed;
* ``walk``: ``func`` of a copy whose future is a fresh random walk from the close of bar
  ``c - 1`` (valid OHLC, positive volumes, the data's volatility);
* ``mirror``: ``func`` of a copy whose future prices are reflected about that close (ups
  become downs), with three times the volume.

A value at a bar ``t < c`` that changes was computed from bars after ``t``. The cut points are
spread over the data (seeded jitter, plus both edges); once a column is flagged, every cut
before its earliest offending row is tested too, so the first offending bar reported is exact
unless ``max_refine`` extra cuts were not enough (``Finding.exact``).

A strategy (an object with ``generate_signals(df)``, as every :mod:`trademl.strategies` one)
cannot see the future through its input, only through state, so it is checked twice: its batch
``generate_signals`` (what the backtester uses) as above, each call on a fresh deep copy of the
strategy (a strategy that calibrates itself on the first frame it is given is caught there),
and ``generate_signal(candles.iloc[:c])`` (the live path) on the instance itself, called right
after the instance computed a batch on a perturbed future: it must equal the batch row of bar
``c - 1`` (else evidence ``signal``: state carried the future across calls, or live and
backtest disagree).

Limits: a perturbation reveals only the dependence it changes, and a function with randomness
must be seeded (else every column differs).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import ConfigError, DataError, InsufficientDataError, TradeMLError

__all__ = ["PERTURBATIONS", "Finding", "LookaheadReport", "check_lookahead"]

PERTURBATIONS: tuple[str, ...] = ("walk", "mirror")
_OHLCV = ["open", "high", "low", "close", "volume"]
_ROWS = "<rows>"  # pseudo-column: which rows the output has
_SIGNAL = "generate_signal"  # pseudo-column: the live signal of a strategy
_SIDES = {"SHORT": -1, "FLAT": 0, "LONG": 1}
_SIGNAL_KEYS = ("entry_price", "confidence", "sl_distance", "tp_distance", "atr")
_WHAT = {
    "prefix": "with the future removed",
    "walk": "with a random-walk future",
    "mirror": "with a mirrored future",
}


@dataclass
class Finding:
    """A column (or ``<rows>``, ``generate_signal``) that used the future.

    ``position``/``timestamp``: the first offending bar, ``None`` when only the column set
    changed. ``evidence``: the tests that saw it (``prefix``, ``walk``, ``mirror``, ``signal``,
    ``columns``); ``cut``: bars kept when that bar was seen; ``max_diff``: the largest absolute
    difference (NaN if only NaN-versus-value or non-numeric differences).
    """

    column: str
    position: int | None
    timestamp: Any
    cut: int
    evidence: list[str]
    max_diff: float
    detail: str
    exact: bool = True


@dataclass
class LookaheadReport:
    """What :func:`check_lookahead` found; ``clean`` when no column used the future."""

    target: str
    bars: int
    warmup: int
    cuts: list[int]
    perturbations: tuple[str, ...]
    checked: list[str]
    columns: list[Finding] = field(default_factory=list)
    calls: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.columns

    def summary(self) -> str:
        """Human-readable lines: what was checked, then one line per offending column."""
        kinds = ", ".join(["prefix", *self.perturbations])
        lines = [
            f"look-ahead check of {self.target}: {len(self.checked)} column(s) on {self.bars} "
            f"bars, {len(self.cuts)} cut points from bar {self.warmup} ({kinds}), "
            f"{self.calls} calls in {self.seconds:.1f} s",
            "clean: no value changed when the future was removed or perturbed"
            if self.clean
            else f"LOOK-AHEAD in {len(self.columns)} column(s):",
        ]
        for f in self.columns:
            where = "no bar (the column set changed)"
            if f.position is not None:
                first = "first offending bar" if f.exact else "earliest offending bar found"
                where = f"{first} {f.position} ({f.timestamp})"
            diff = "" if np.isnan(f.max_diff) else f", max |diff| {f.max_diff:.3g}"
            seen = "/".join(f.evidence)
            lines.append(f"  {f.column}: {where}, seen by {seen} at cut {f.cut}{diff}: {f.detail}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able mapping (timestamps as strings, NaN as None)."""
        out = {**asdict(self), "clean": self.clean, "perturbations": list(self.perturbations)}
        for f in out["columns"]:
            f["timestamp"] = None if f["timestamp"] is None else str(f["timestamp"])
            f["max_diff"] = None if np.isnan(f["max_diff"]) else f["max_diff"]
        return out


def check_lookahead(
    target: Callable[[pd.DataFrame], pd.DataFrame | pd.Series] | Any,
    candles: pd.DataFrame,
    *,
    cuts: int = 40,
    perturbations: tuple[str, ...] = PERTURBATIONS,
    tol: float = 1e-9,
    seed: int = 0,
    warmup: int | None = None,
    max_refine: int = 300,
    name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LookaheadReport:
    """Report every output column of ``target`` whose values depend on later bars.

    Parameters
    ----------
    target
        A function ``candles -> DataFrame | Series`` (rows on the candles' timestamps, or one
        row per candle), or a strategy instance with ``generate_signals(df)``.
    candles
        OHLCV (``open, high, low, close, volume``, positive prices), at least three bars;
        other numeric columns are shuffled in the perturbed futures.
    cuts
        Cut points spread over the data (both edges are added); ``len(candles)`` tests all.
    perturbations
        Perturbed futures tried besides removing it: any of ``walk``, ``mirror``.
    tol
        Relative and absolute tolerance of a difference; NaN equals NaN.
    seed
        Seeds the cut jitter and the perturbed futures.
    warmup
        Fewest bars ``target`` accepts (found by trying when ``None``).
    max_refine
        Most extra cuts tried to pin the first offending bar of flagged columns.
    name
        How messages call ``target`` (default: its qualified name).
    progress
        Called with ``(cuts done, cuts planned)`` after each cut (refining adds to both).

    Raises
    ------
    ConfigError
        ``target`` is a class or not callable, returns no DataFrame/Series, or rows that
        cannot be placed on the candles; an unknown perturbation.
    TradeMLError
        ``target`` raised: the message names the bars it was given and the exception.
    """
    if cuts < 1 or tol < 0 or max_refine < 0:
        raise ConfigError(
            f"need cuts >= 1, tol >= 0, max_refine >= 0; got {cuts}, {tol}, {max_refine}"
        )
    if isinstance(target, type):
        raise ConfigError(f"{target.__name__} is a class; pass a function or a strategy instance")
    run = _Run(target, candles, tol, seed, perturbations, name)
    start, n = time.perf_counter(), len(candles)
    try:
        run.full = run.frame(run.call(candles, "all bars"), n)
    except _Unaligned as exc:
        raise ConfigError(f"{run.name} on all bars: {exc}; its rows cannot be compared") from None
    if warmup is not None and not 1 <= warmup < n:
        raise ConfigError(f"warmup={warmup} must be in [1, {n - 1}] for {n} candles")
    low = run.find_warmup() if warmup is None else int(warmup)
    if low >= n:
        raise InsufficientDataError(
            f"{run.name} accepts all {n} candles but no shorter prefix "
            f"({' '.join(run.refused.split())[:300]}), so no future can be removed",
            needed=n + 1,
            got=n,
        )
    planned = _cut_points(low, n - 1, cuts, np.random.default_rng([seed, n]))
    for i, c in enumerate(planned, start=1):
        run.test(c)
        if progress is not None:
            progress(i, len(planned))
    for c in range(low, n):  # pin first offending bars: test every cut up to them
        todo = [f.position + 1 for f in run.found.values() if f.position is not None]
        if c > max(todo, default=-1) or max_refine <= 0:
            break
        if c not in run.tested:
            run.test(c)
            max_refine -= 1
            if progress is not None:  # refining adds cuts: done == planned from here on
                progress(len(run.tested), len(run.tested))
    for f in run.found.values():
        if f.position is not None:
            f.exact = all(c in run.tested for c in range(low, min(f.position + 1, n - 1) + 1))
    order = {str(col): i for i, col in enumerate([*run.full[0].columns, _SIGNAL, _ROWS])}
    return LookaheadReport(
        target=run.name,
        bars=n,
        warmup=low,
        cuts=planned,
        perturbations=run.perturbations,
        checked=[str(c) for c in run.full[0].columns],
        columns=sorted(run.found.values(), key=lambda f: order.get(f.column, -1)),
        calls=run.calls,
        seconds=time.perf_counter() - start,
    )


def _cut_points(low: int, high: int, k: int, rng: np.random.Generator) -> list[int]:
    """About ``k`` cuts in ``[low, high]``: jittered around an even grid, plus both edges."""
    if k >= high - low + 1:
        return list(range(low, high + 1))
    k = max(k, 2)
    half = int((high - low) / k / 2)
    grid = np.round(np.linspace(low, high, k)).astype(int) + rng.integers(-half, half + 1, k)
    return sorted({low, low + 1, high, *map(int, np.clip(grid, low, high))})


class _Unaligned(Exception):
    """An output whose rows cannot be placed on the candles."""


class _Run:
    """One check: the target, the full output, the cuts tested and what was found."""

    def __init__(
        self,
        target: Any,
        candles: pd.DataFrame,
        tol: float,
        seed: int,
        perturbations: tuple[str, ...],
        name: str | None,
    ) -> None:
        self.strategy = target if hasattr(target, "generate_signals") else None
        self.func = target.generate_signals if self.strategy is not None else target
        if self.strategy is not None:  # batches on fresh copies: no state from other calls
            try:
                pristine = copy.deepcopy(target)
            except Exception:  # not copyable: the instance itself computes the batches
                pristine = None
            else:
                getattr(pristine, "min_bars", None)  # lets a strategy load its model once
                self.func = lambda df: copy.deepcopy(pristine).generate_signals(df)
        if not callable(self.func):
            raise ConfigError(f"{target!r} is not callable: give a function or a strategy")
        self.name = name or getattr(target, "__qualname__", None) or type(target).__name__
        if not isinstance(candles, pd.DataFrame):
            raise DataError(f"candles: expected a pandas DataFrame, got {type(candles).__name__}")
        missing = [c for c in _OHLCV if c not in candles.columns]
        if missing:
            raise DataError(f"candles: missing column(s) {', '.join(missing)}")
        if len(candles) < 3:
            raise InsufficientDataError("candles: need 3 bars", needed=3, got=len(candles))
        if not (candles.index.is_monotonic_increasing and candles.index.is_unique):
            raise DataError("candles: the index must be increasing timestamps without repeats")
        unknown = [p for p in perturbations if p not in PERTURBATIONS]
        if unknown:
            raise ConfigError(f"unknown perturbation(s) {unknown}; choose from {PERTURBATIONS}")
        self.candles, self.index = candles, candles.index
        self.tol, self.seed, self.perturbations = float(tol), int(seed), tuple(perturbations)
        self.full: tuple[pd.DataFrame, np.ndarray] = (pd.DataFrame(), np.empty(0, dtype=int))
        self.found: dict[str, Finding] = {}
        self.tested: set[int] = set()
        self.calls, self.refused = 0, ""

    def call(self, df: pd.DataFrame, what: str, fn: Callable | None = None) -> Any:
        self.calls += 1
        try:
            return (fn or self.func)(df.copy())
        except Exception as exc:
            msg = " ".join(str(exc).split())[:300]
            raise TradeMLError(
                f"{self.name} raised on {what}: {type(exc).__name__}: {msg}"
            ) from exc

    def frame(self, out: Any, n_in: int) -> tuple[pd.DataFrame, np.ndarray]:
        """``out`` as a frame on candle timestamps, and the bar position of each row."""
        if isinstance(out, pd.Series):
            out = out.to_frame(out.name if out.name is not None else "value")
        if not isinstance(out, pd.DataFrame):
            raise ConfigError(
                f"{self.name} returned {type(out).__name__}; return a pandas DataFrame or Series"
            )
        if out.columns.has_duplicates:
            raise ConfigError(f"{self.name} returned duplicate column names")
        index = out.index
        if isinstance(index, pd.DatetimeIndex) and isinstance(self.index, pd.DatetimeIndex):
            tz = self.index.tz
            index = index.tz_localize(tz) if index.tz is None else index.tz_convert(tz)
        elif len(out) == n_in:
            index = self.index[:n_in]  # one row per candle: placed by position
        elif not index.isin(self.index).all():
            raise _Unaligned(
                f"{len(out)} rows on a {type(index).__name__} that is neither the candles' "
                f"timestamps nor one row per candle ({n_in})"
            )
        if index.has_duplicates:
            raise _Unaligned(f"duplicate row label {index[index.duplicated()][0]}")
        return out.set_axis(index), self.index.searchsorted(index, side="right") - 1

    def find_warmup(self) -> int:
        """Fewest bars the target accepts (doubling, then bisection)."""

        def ok(m: int) -> bool:
            self.calls += 1
            try:
                out = self.func(self.candles.iloc[:m].copy())
            except Exception as exc:
                self.refused = f"on the first {m} bars: {type(exc).__name__}: {exc}"
                return False
            return isinstance(out, pd.DataFrame | pd.Series)

        hi = 1
        while hi < len(self.candles) and not ok(hi):
            hi = min(2 * hi, len(self.candles))
        lo = hi // 2  # failed (or 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return hi

    def test(self, c: int) -> None:
        """Prefix and perturbation tests at cut ``c`` (and the signal test of a strategy)."""
        self.tested.add(c)
        prefix = f"the first {c} bars (up to {self.index[c - 1]})"
        self._compare(c, "prefix", self.call(self.candles.iloc[:c], prefix), c, prefix)
        df = self.candles
        for k, kind in enumerate(self.perturbations):
            what = f"the candles with bars from {c} ({self.index[c]}) on replaced ({kind})"
            df = _perturbed(self.candles, c, kind, np.random.default_rng([self.seed, c, k]))
            self._compare(c, kind, self.call(df, what), len(df), what)
        if self.strategy is not None:  # the instance sees a future, then gives a live signal
            self.call(df, f"bars from {c} on replaced", self.strategy.generate_signals)
            self._signal(c, self.call(self.candles.iloc[:c], prefix, self.strategy.generate_signal))

    def _compare(self, c: int, kind: str, out: Any, n_in: int, what: str) -> None:
        try:
            other, opos = self.frame(out, n_in)
        except _Unaligned as exc:
            self._record(_ROWS, kind, c, None, np.nan, f"output on {what}: {exc}")
            return
        full, mine = self.full[0][self.full[1] <= c - 1], other[opos <= c - 1]
        if not full.columns.equals(mine.columns):
            for col in full.columns.difference(mine.columns):
                self._record(
                    str(col), "columns", c, None, np.nan, f"missing from the output on {what}"
                )
            for col in mine.columns.difference(full.columns):
                self._record(str(col), "columns", c, None, np.nan, f"only in the output on {what}")
            cols = full.columns.intersection(mine.columns, sort=False)
            full, mine = full[cols], mine[cols]
        if not full.index.equals(mine.index):
            lost, added = full.index.difference(mine.index), mine.index.difference(full.index)
            for rows, text in ((lost, "missing from"), (added, "only in")):
                if len(rows):
                    pos = int(self.index.searchsorted(rows[0], side="right") - 1)
                    detail = f"{len(rows)} row(s) {text} the output {_WHAT[kind]} from bar {c}"
                    self._record(_ROWS, kind, c, pos, np.nan, f"{detail} (first {rows[0]})")
            common = full.index.intersection(mine.index)
            full, mine = full.loc[common], mine.loc[common]
        pos = self.index.searchsorted(full.index, side="right") - 1
        for j, i, diff in _differences(full, mine, self.tol):
            a, b = _show(full.iat[i, j]), _show(mine.iat[i, j])
            detail = f"{a} with all bars, {b} {_WHAT[kind]} from bar {c}"
            self._record(str(full.columns[j]), kind, c, int(pos[i]), diff, detail)

    def _signal(self, c: int, sig: Any) -> None:
        """``generate_signal`` on the first ``c`` bars must give the batch row of bar c - 1."""
        full, ts = self.full[0], self.index[c - 1]
        if ts not in full.index or "side" not in full.columns:
            return
        sig = sig if isinstance(sig, dict) else {}
        meta = sig.get("metadata") or {}
        got = {"side": _SIDES.get(sig.get("signal"), np.nan)}
        got.update({k: meta.get(k, np.nan) for k in _SIGNAL_KEYS if k in full.columns})
        want = full.loc[[ts], list(got)]
        mine = pd.DataFrame([got], index=want.index)
        for j, _, _ in _differences(want, mine, self.tol)[:1]:
            key = want.columns[j]
            detail = f"{key} {_show(got[key])} from generate_signal, {_show(want.iat[0, j])} in "
            self._record(_SIGNAL, "signal", c, c - 1, np.nan, detail + "generate_signals")

    def _record(self, col: str, kind: str, c: int, pos: int | None, diff: float, text: str) -> None:
        f = self.found.get(col)
        if f is None:
            ts = None if pos is None else self.index[pos]
            self.found[col] = Finding(col, pos, ts, c, [kind], float(diff), text)
            return
        if kind not in f.evidence:
            f.evidence.append(kind)
        if not np.isnan(diff):
            f.max_diff = diff if np.isnan(f.max_diff) else max(f.max_diff, diff)
        if pos is not None and (f.position is None or pos < f.position):
            f.position, f.timestamp, f.cut, f.detail = pos, self.index[pos], c, text


def _differences(a: pd.DataFrame, b: pd.DataFrame, tol: float) -> list[tuple[int, int, float]]:
    """``(column, first differing row, largest finite |difference|)`` of each column of two
    frames of equal shape that differs beyond ``tol`` (NaN equals NaN)."""
    try:
        x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            same = np.isclose(x, y, rtol=tol, atol=tol, equal_nan=True) | (x == y)
    except (TypeError, ValueError):  # a non-numeric column: compare as objects
        x = y = None
        u, v = a.to_numpy(dtype=object), b.to_numpy(dtype=object)
        same = np.frompyfunc(lambda p, q: bool(p == q) or bool(pd.isna(p) and pd.isna(q)), 2, 1)
        same = same(u, v).astype(bool)
    out = []
    for j in np.flatnonzero(~same.all(axis=0)):
        d = np.abs(x[:, j] - y[:, j])[~same[:, j]] if x is not None else np.empty(0)
        d = d[np.isfinite(d)]
        out.append((int(j), int(np.argmin(same[:, j])), float(d.max()) if d.size else np.nan))
    return out


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float | np.floating) else repr(value)


def _perturbed(candles: pd.DataFrame, c: int, kind: str, rng: np.random.Generator) -> pd.DataFrame:
    """A copy of ``candles`` whose bars from ``c`` on are other valid candles."""
    values = candles[_OHLCV].to_numpy(dtype=np.float64, copy=True)
    m, log_close = len(values) - c, np.log(values[:, 3])
    anchor = log_close[c - 1]
    if kind == "walk":
        sigma = float(np.nanstd(np.diff(log_close))) or 0.01
        close = anchor + np.cumsum(rng.normal(0.0, sigma, m))
        open_ = np.concatenate(([anchor], close[:-1]))
        wicks = np.abs(rng.normal(0.0, sigma / 2, (2, m)))
        high, low = np.maximum(open_, close) + wicks[0], np.minimum(open_, close) - wicks[1]
        volume = values[:, 4]
        level = float(np.median(volume[volume > 0])) if (volume > 0).any() else 1.0
        values[c:, :4] = np.exp(np.column_stack([open_, high, low, close]))
        values[c:, 4] = level * np.exp(rng.normal(0.0, 0.5, m))
    else:  # mirror: log prices reflected about the last past close, so high and low swap
        values[c:, :4] = np.exp(2 * anchor - np.log(values[c:, [0, 2, 1, 3]]))
        values[c:, 4] = 3.0 * values[c:, 4] + 1.0
    df = pd.DataFrame(values, index=candles.index, columns=_OHLCV)
    if len(candles.columns) > len(_OHLCV):  # other numeric columns: the future shuffled
        for k in candles.columns.difference(_OHLCV):
            df[k] = candles[k].to_numpy(copy=True)
            if pd.api.types.is_numeric_dtype(candles[k]):
                df.iloc[c:, df.columns.get_loc(k)] = rng.permutation(df[k].to_numpy()[c:])
        df = df[candles.columns]
    df.attrs = dict(candles.attrs)
    return df
