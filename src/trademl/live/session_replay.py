"""A session's journal as data to re-run: its settings, the candles each symbol received
(the decision rows), the strategy pinned to a recorded model version, and every decision
re-run with that version (``trademl live report --decisions``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import DataError, InsufficientDataError
from trademl.live.journal import Journal

__all__ = [
    "PROBA",
    "SIDE_NAME",
    "DecisionMismatch",
    "check_complete",
    "load_session",
    "ohlcv",
    "pinned_strategy",
    "recheck_decisions",
    "session_candles",
    "signals_on",
    "versions",
]

PROBA = ("p_SHORT", "p_FLAT", "p_LONG")
SIDE_NAME = {1: "LONG", -1: "SHORT", 0: "FLAT"}


@dataclass
class DecisionMismatch:
    """A recorded decision that re-runs differently (its signal or a probability)."""

    symbol: str
    bar: pd.Timestamp
    model_version: str
    what: str  # "signal" or a probability column
    live: Any
    recomputed: Any


def load_session(journal: Journal) -> dict[str, Any]:
    """The settings a session stored at its start, or a :class:`DataError` saying why the
    journal cannot be compared (written by a trademl before traceability)."""
    text = journal.get_meta("session")
    if text is None or not len(journal.decisions(limit=1)):
        missing = "session settings" if text is None else "decision rows"
        raise DataError(
            f"{journal.path}: the journal has no {missing}: it was written by a trademl "
            "before traceability (or no candle was processed yet), so the candles the session "
            "received and the model versions that decided are unknown and no backtest can be "
            "compared with it; run the session again with this trademl to get a report"
        )
    return json.loads(text)


def session_candles(journal: Journal) -> dict[str, pd.DataFrame]:
    """Each symbol's decision rows on their bar times: the candles it received (``open`` ..
    ``volume``), its signals, probabilities and the model versions that decided."""
    rows = journal.decisions()
    out = {}
    for symbol, frame in rows.groupby("symbol", sort=False):
        frame = frame.drop(columns="symbol")
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("bar_ts"), utc=True))
        frame.index.name = "timestamp"
        if not frame.index.is_unique:  # a candle committed twice cannot happen: say so
            dup = frame.index[frame.index.duplicated()][0]
            raise DataError(
                f"{journal.path}: {symbol} has two decision rows for bar {dup}; the journal "
                "was edited or written by two sessions at once"
            )
        frame = frame.astype({"signal": object, "model_version": object})
        out[str(symbol)] = frame.sort_index()
    return out


def pinned_strategy(session: dict[str, Any], frame: pd.DataFrame, version: str | None, uri) -> Any:
    """The session's strategy; an MLStrategy pinned to ``models:/NAME/VERSION``."""
    from trademl.live.app import build_strategy
    from trademl.strategies import MLStrategy

    strategy = build_strategy(session["strategy"], uri)
    if isinstance(strategy, MLStrategy):
        names = frame["model"].dropna() if "model" in frame else pd.Series(dtype=object)
        if version is None or not len(names):
            raise DataError(
                "the session traded an ML strategy but its decision rows name no model version"
            )
        strategy.model_uri = f"models:/{names.iloc[0]}/{version}"
        strategy.name = f"ml_strategy[{strategy.uri}]"
    return strategy


def check_complete(path, symbol, frame, trades, events) -> None:
    """Decision rows from the session's first candle on: a journal an older trademl started
    (and this one resumed) has orders and trades before them, on candles nobody recorded."""
    traded = events[events["kind"].isin(["order", "fill", "exit"])]["bar_ts"]
    times = pd.to_datetime(pd.concat([traded, trades["entry_time"].astype(str)]), utc=True)
    if len(times) and times.min() < frame.index[0]:
        raise DataError(
            f"{path}: {symbol} traded from {times.min()} but its decision rows start at "
            f"{frame.index[0]}: the session was started by a trademl before traceability, so "
            "the candles before are unknown and no backtest can be compared with it; start a "
            "new journal to get reports"
        )


def ohlcv(frame: pd.DataFrame) -> pd.DataFrame:
    candles = frame[["open", "high", "low", "close", "volume"]].astype(np.float64)
    candles.attrs["source"] = "the journal's decision rows"
    return candles


def versions(frame: pd.DataFrame) -> list[str]:
    if "model_version" not in frame:
        return []
    return [str(v) for v in pd.unique(frame["model_version"].dropna())]


def signals_on(strategy: Any, candles: pd.DataFrame) -> pd.DataFrame:
    try:
        return strategy.generate_signals(candles)
    except InsufficientDataError:  # fewer candles than the strategy needs: no signal at all
        return pd.DataFrame(
            {"side": np.zeros(len(candles), np.int8), "sl_distance": np.nan, "tp_distance": 0.0},
            index=candles.index,
        )


def recheck_decisions(symbol, session, frame, uri) -> tuple[int, list[DecisionMismatch]]:
    """Every decision recomputed with its recorded model version on the candles received up
    to its bar, the way the session decided: the strategy's stream, candle by candle (the
    version's fast predictor; a strategy without a stream: its causal batch). Signals equal,
    probabilities within 1e-9."""
    from trademl.live.runtime import _stream

    candles = ohlcv(frame)
    decided = frame["signal"].notna().to_numpy()
    checked, bad = 0, []
    groups = [(v, (frame["model_version"].astype(str) == v).to_numpy()) for v in versions(frame)]
    for version, rows in groups or [(None, np.ones(len(frame), bool))]:
        strategy = pinned_strategy(session, frame, version, uri)
        again = _rerun(strategy, _stream(strategy, symbol, session.get("window")), candles)
        at = np.flatnonzero(rows & decided)
        checked += len(at)
        found: list[tuple[int, str, Any, Any]] = []
        for i in at:
            live, out = frame.iloc[i], again[i]
            name = None if out is None else out["signal"]
            if live["signal"] != name:
                found.append((i, "signal", live["signal"], name))
            for col in PROBA:
                value = None if out is None else out.get(col)
                if value is None or col not in frame or pd.isna(live[col]):
                    continue  # a strategy without probabilities
                if not abs(float(live[col]) - float(value)) <= 1e-9:
                    found.append((i, col, float(live[col]), float(value)))
        bad += [
            DecisionMismatch(symbol, frame.index[i], str(version), what, a, b)
            for i, what, a, b in found
        ]
    return checked, bad


def _rerun(strategy: Any, stream: Any, candles: pd.DataFrame) -> list[dict[str, Any] | None]:
    """Each candle's decision: ``{signal, p_*}``, or ``None`` while warming up."""
    if stream is None:
        signals = signals_on(strategy, candles)
        return [
            {"signal": SIDE_NAME[int(r["side"])], **{c: r.get(c) for c in PROBA if c in r}}
            for _, r in signals.iterrows()
        ]
    out: list[dict[str, Any] | None] = []
    for ts, row in zip(candles.index, candles.itertuples(index=False), strict=True):
        decision = stream.update({"timestamp": ts, **row._asdict()})
        out.append(None if decision is None else {"signal": decision["signal"], **stream.details})
    return out
