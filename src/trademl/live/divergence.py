"""Live versus backtest, trade by trade, from a session's journal (``trademl live report``).

The journal holds every candle a symbol received (its ``decision`` rows), the signal and the
model version that decided on it, and the session's settings (meta ``session``). The report
rebuilds each symbol's candles, backtests the same strategy with the same model version
(pinned ``models:/NAME/VERSION``, the version of the session's first decision) and the
session's fill settings on them, and pairs the trades: a live and a backtest trade are the
same trade when they hold the same side over overlapping bars (each paired once, in time
order). Then for each symbol: matched trades (with their differences in entry and exit bar,
price, i.e. slippage per trade, fees and P&L), trades only live, trades only in the
backtest, and the first bar where the two part, with the reason where the journal knows it:
a model version switch, a rejected order, a partial fill, a resumed session, a candle the
feed revised (``check_feed``), else "unknown" with the first bar where the signals differ.

``decisions=True`` (``--decisions``) re-runs every recorded decision with its recorded model
version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import DataError
from trademl.live.journal import Journal
from trademl.live.session_replay import (
    SIDE_NAME,
    DecisionMismatch,
    check_complete,
    load_session,
    ohlcv,
    pinned_strategy,
    recheck_decisions,
    session_candles,
    signals_on,
    versions,
)

__all__ = ["DivergenceReport", "SymbolDivergence", "divergence_report"]

_REL = 1e-9  # prices, sizes, fees and P&L equal to this relative tolerance count as equal
_CAUSES = ("model_reloaded", "rejected", "partial_fill", "resumed")
_SIDE = {"LONG": 1, "SHORT": -1, "FLAT": 0}


@dataclass
class SymbolDivergence:
    """One symbol's comparison; ``trades`` has one row per live and/or backtest trade."""

    symbol: str
    trades: pd.DataFrame
    first_bar: pd.Timestamp | None
    reason: str
    bars: int
    model: str

    def count(self, status: str) -> int:
        return int((self.trades["status"] == status).sum()) if len(self.trades) else 0

    @property
    def matched(self) -> int:
        return self.count("matched") + self.count("differs")

    @property
    def diverged(self) -> bool:
        return self.first_bar is not None

    def summary(self) -> str:
        differ = self.count("differs")
        text = (
            f"{self.symbol}: {self.matched} matched"
            + (f" ({differ} with differences)" if differ else "")
            + f", {self.count('only_live')} only live, {self.count('only_backtest')} only "
            f"backtest"
        )
        if self.count("open_live"):
            text += f", {self.count('open_live')} still open live"
        if not self.bars:
            return f"{self.symbol}: no candle received yet, nothing to compare"
        if self.first_bar is None:
            return text + f"; no divergence over {self.bars} bars ({self.model})"
        return text + f", first divergence at {self.first_bar} ({self.reason})"


@dataclass
class DivergenceReport:
    """The whole report: one :class:`SymbolDivergence` per symbol, and the decision re-run
    (``decisions_checked`` is 0 when it was not asked for)."""

    journal: Path
    symbols: list[SymbolDivergence]
    decisions_checked: int = 0
    decision_mismatches: list[DecisionMismatch] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return any(s.diverged for s in self.symbols) or bool(self.decision_mismatches)

    def table(self) -> pd.DataFrame:
        frames = [s.trades for s in self.symbols if len(s.trades)]
        return pd.concat(frames, ignore_index=True) if frames else _empty_table()

    def metrics(self) -> dict[str, float]:
        table = self.table()
        matched = table[table["status"].isin(["matched", "differs"])]

        def worst(col: str) -> float:
            values = pd.to_numeric(matched[col]).abs() if len(matched) else pd.Series()
            return float(values.max()) if len(values) else 0.0

        out = {
            "divergence_matched": float(sum(s.matched for s in self.symbols)),
            "divergence_differs": float(sum(s.count("differs") for s in self.symbols)),
            "divergence_only_live": float(sum(s.count("only_live") for s in self.symbols)),
            "divergence_only_backtest": float(sum(s.count("only_backtest") for s in self.symbols)),
            "divergence_symbols": float(sum(s.diverged for s in self.symbols)),
            "divergence_max_entry_slippage_bps": worst("entry_slippage_bps"),
            "divergence_max_exit_slippage_bps": worst("exit_slippage_bps"),
            "divergence_total_fee_difference": float(pd.to_numeric(matched["fees_diff"]).sum())
            if len(matched)
            else 0.0,
            "divergence_total_pnl_difference": float(pd.to_numeric(matched["pnl_diff"]).sum())
            if len(matched)
            else 0.0,
        }
        if self.decisions_checked:
            out["divergence_decisions_checked"] = float(self.decisions_checked)
            out["divergence_decision_mismatches"] = float(len(self.decision_mismatches))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "journal": str(self.journal),
            "diverged": self.diverged,
            "metrics": self.metrics(),
            "symbols": [
                {
                    "symbol": s.symbol,
                    "model": s.model,
                    "bars": s.bars,
                    "matched": s.matched,
                    "differs": s.count("differs"),
                    "only_live": s.count("only_live"),
                    "only_backtest": s.count("only_backtest"),
                    "open_live": s.count("open_live"),
                    "first_divergence": None if s.first_bar is None else str(s.first_bar),
                    "reason": s.reason or None,
                    "trades": json.loads(s.trades.to_json(orient="records", date_format="iso")),
                }
                for s in self.symbols
            ],
            "decisions_checked": self.decisions_checked,
            "decision_mismatches": [
                {**m.__dict__, "bar": str(m.bar)} for m in self.decision_mismatches
            ],
        }

    def text(self) -> str:
        """Summary lines (one per symbol) first, then the trades that differ."""
        lines = [s.summary() for s in self.symbols]
        if self.decisions_checked:
            lines.append(
                f"decisions: {self.decisions_checked} re-run with their model version, "
                f"{len(self.decision_mismatches)} mismatch(es)"
            )
            for m in self.decision_mismatches[:20]:
                lines.append(
                    f"  {m.symbol} {m.bar} (version {m.model_version}): {m.what} live "
                    f"{m.live!r}, recomputed {m.recomputed!r}"
                )
        table = self.table()
        bad = table[table["status"] != "matched"]
        if len(bad):
            cols = [
                "symbol",
                "status",
                "side",
                "live_entry",
                "bt_entry",
                "entry_bar_diff",
                "exit_bar_diff",
                "entry_slippage_bps",
                "exit_slippage_bps",
                "fees_diff",
                "pnl_diff",
                "live_exit_reason",
                "bt_exit_reason",
            ]
            with pd.option_context("display.width", 250, "display.max_columns", 20):
                lines += ["", bad[cols].head(50).to_string(index=False, float_format="%.4g")]
            if len(bad) > 50:
                lines.append(f"... {len(bad) - 50} more in divergence.csv")
        return "\n".join(lines)


def divergence_report(
    path: str | Path,
    *,
    tracking_uri: str | None = None,
    decisions: bool = False,
    check_feed: bool = False,
) -> DivergenceReport:
    """Compare a session's journal with a backtest (see the module docstring).

    ``tracking_uri`` is the store of the models (default: the session's, from the journal).
    """
    journal = Journal(path, lock=False)
    try:
        session = load_session(journal)
        uri = tracking_uri or session.get("mlflow", {}).get("tracking_uri")
        if uri and "***" in uri:
            raise DataError(
                f"{journal.path}: the session's tracking URI has a password, which the journal "
                "does not keep; give the store with --tracking-uri"
            )
        candles = session_candles(journal)
        # an exchange session trades from its first fresh candle (the catch-up only warms up)
        starts = {s: journal.get_meta(f"trading_from:{s}") for s in session["symbols"]}
        trades = journal.trades()
        events = journal.events()
        books = journal.books()
    finally:
        journal.close()
    out = DivergenceReport(Path(path), [])
    for symbol in dict.fromkeys([*session["symbols"], *candles]):
        if symbol not in candles:  # no candle received yet: nothing traded
            out.symbols.append(SymbolDivergence(symbol, _empty_table(), None, "", 0, ""))
            continue
        frame = candles[symbol]
        sym_events = events[events["symbol"] == symbol]
        check_complete(path, symbol, frame, trades[trades["symbol"] == symbol], sym_events)
        revised = _revised_candles(session, symbol, frame) if check_feed else None
        out.symbols.append(
            _compare(
                symbol,
                session,
                frame,
                trades[trades["symbol"] == symbol],
                sym_events,
                books[books["symbol"] == symbol],
                uri,
                revised,
                starts.get(symbol),
            )
        )
        if decisions:
            n, bad = recheck_decisions(symbol, session, frame, uri)
            out.decisions_checked += n
            out.decision_mismatches += bad
    return out


def _compare(
    symbol, session, frame, live, events, book, uri, revised, start=None
) -> SymbolDivergence:
    from trademl.backtest import Backtest

    recorded = versions(frame)
    pinned = recorded[0] if recorded else None
    strategy = pinned_strategy(session, frame, pinned, uri)
    candles = ohlcv(frame)
    signals = signals_on(strategy, candles)
    ex = session["execution"]
    result = Backtest(
        candles,
        signals,
        cash=session["cash_per_symbol"],
        risk=session["risk"],
        fees_bps=ex["fees_bps"],
        slippage_bps=ex["slippage_bps"],
        on_opposite=ex["on_opposite"],
        max_holding_bars=ex["max_holding_bars"] or getattr(strategy, "max_holding_bars", None),
        start=pd.Timestamp(start) if start and pd.Timestamp(start) < candles.index[-1] else None,
    ).run()
    open_entry = _open_entry(book)
    table = _pair(symbol, live, result.trades, candles.index, open_entry)
    first = _first_divergence(table)
    model = (
        f"models:/{frame['model'].dropna().iloc[0]}/{pinned}"
        if pinned and "model" in frame
        else str(session["strategy"].get("type", "strategy"))
    )
    reason = ""
    if first is not None:
        reason = _reason(first, frame, signals, events, pinned, revised)
    return SymbolDivergence(symbol, table, first, reason, len(candles), model)


def _open_entry(book: pd.DataFrame) -> pd.Timestamp | None:
    """The entry time of the live book's open position (a session stopped, not finished)."""
    if not len(book) or book["entry_ts"].iloc[0] is None:
        return None
    state = json.loads(book["state"].iloc[0])
    return pd.Timestamp(book["entry_ts"].iloc[0]) if state[1] != 0 else None


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=_TABLE_COLUMNS)


_TABLE_COLUMNS = [
    "symbol",
    "status",
    "side",
    "live_entry",
    "bt_entry",
    "live_exit",
    "bt_exit",
    "entry_bar_diff",
    "exit_bar_diff",
    "live_entry_price",
    "bt_entry_price",
    "entry_slippage",
    "entry_slippage_bps",
    "live_exit_price",
    "bt_exit_price",
    "exit_slippage",
    "exit_slippage_bps",
    "live_size",
    "bt_size",
    "live_fees",
    "bt_fees",
    "fees_diff",
    "live_pnl",
    "bt_pnl",
    "pnl_diff",
    "live_exit_reason",
    "bt_exit_reason",
]


def _pair(symbol, live, bt, index, open_entry) -> pd.DataFrame:
    """One row per trade: live and backtest trades holding the same side over overlapping
    bars are the same trade (paired once each, in time order)."""
    live = live.sort_values("entry_time", kind="stable").reset_index(drop=True)
    bt = bt.sort_values("entry_time", kind="stable").reset_index(drop=True)
    b_entry = pd.DatetimeIndex(bt["entry_time"]).as_unit("ns").asi8  # UTC nanoseconds
    b_exit = pd.DatetimeIndex(bt["exit_time"]).as_unit("ns").asi8
    b_side = bt["side"].to_numpy()
    used = np.zeros(len(bt), bool)
    rows, start = [], 0
    for lt in live.to_dict("records"):
        entry, exit_ = lt["entry_time"].value, lt["exit_time"].value
        while start < len(bt) and (used[start] or b_exit[start] < entry):
            start += 1  # trades over before this one began overlap no later live trade
        match = None
        for j in range(start, len(bt)):
            if b_entry[j] > exit_:
                break
            if not used[j] and b_side[j] == lt["side"] and b_exit[j] >= entry:
                match = j
                break
        if match is None:
            rows.append(_row(symbol, lt, None, index, "only_live"))
            continue
        used[match] = True
        rows.append(_row(symbol, lt, bt.iloc[match], index, None))
    for j in np.flatnonzero(~used):
        b = bt.iloc[j]
        # the live position is still open (a session stopped, not finished): the backtest
        # closed it at the last close; the same trade if it entered at the same bar
        status = (
            "open_live"
            if open_entry is not None
            and b["entry_time"] == open_entry
            and b["exit_reason"] == "end"
            else "only_backtest"
        )
        rows.append(_row(symbol, None, b, index, status))
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    order = table["live_entry"].fillna(table["bt_entry"]) if len(table) else table["live_entry"]
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def _row(symbol, lt, b, index, status) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(_TABLE_COLUMNS)
    row["symbol"] = symbol
    src = lt if lt is not None else b
    row["side"] = src["side"]
    for prefix, t in (("live", lt), ("bt", b)):
        if t is None:
            continue
        row[f"{prefix}_entry"] = pd.Timestamp(t["entry_time"])
        row[f"{prefix}_exit"] = pd.Timestamp(t["exit_time"])
        row[f"{prefix}_entry_price"] = float(t["entry_price"])
        row[f"{prefix}_exit_price"] = float(t["exit_price"])
        row[f"{prefix}_size"] = float(t["size"])
        row[f"{prefix}_fees"] = float(t["fees"])
        row[f"{prefix}_pnl"] = float(t["pnl"])
        row[f"{prefix}_exit_reason"] = t["exit_reason"]
    if lt is not None and b is not None:
        sign = 1.0 if src["side"] == "LONG" else -1.0
        bars = index.get_indexer(
            [row["live_entry"], row["bt_entry"], row["live_exit"], row["bt_exit"]]
        )
        row["entry_bar_diff"] = int(bars[0] - bars[1])
        row["exit_bar_diff"] = int(bars[2] - bars[3])
        # slippage: what live paid more than the backtest, in price and in bps (> 0 = worse;
        # + 0.0 writes no -0.0)
        row["entry_slippage"] = row["live_entry_price"] - row["bt_entry_price"]
        row["entry_slippage_bps"] = sign * 1e4 * row["entry_slippage"] / row["bt_entry_price"] + 0.0
        row["exit_slippage"] = row["live_exit_price"] - row["bt_exit_price"]
        row["exit_slippage_bps"] = -sign * 1e4 * row["exit_slippage"] / row["bt_exit_price"] + 0.0
        row["fees_diff"] = row["live_fees"] - row["bt_fees"]
        row["pnl_diff"] = row["live_pnl"] - row["bt_pnl"]
        same = (
            row["entry_bar_diff"] == 0
            and row["exit_bar_diff"] == 0
            and row["live_exit_reason"] == row["bt_exit_reason"]
            and all(
                np.isclose(row[f"live_{k}"], row[f"bt_{k}"], rtol=_REL, atol=0.0)
                for k in ("entry_price", "exit_price", "size", "fees")
            )
            and np.isclose(row["live_pnl"], row["bt_pnl"], rtol=_REL, atol=1e-9)
        )
        status = "matched" if same else "differs"
    row["status"] = status
    return row


def _first_divergence(table: pd.DataFrame) -> pd.Timestamp | None:
    """The first bar where live and backtest part: an unpaired trade's entry, a paired
    trade's entry if its entry differs, else its exit."""
    firsts = []
    for _, r in table.iterrows():
        if r["status"] in ("matched", "open_live"):
            continue
        if r["status"] == "only_live":
            firsts.append(r["live_entry"])
        elif r["status"] == "only_backtest":
            firsts.append(r["bt_entry"])
        elif (
            r["entry_bar_diff"] != 0
            or not np.isclose(r["live_entry_price"], r["bt_entry_price"], rtol=_REL, atol=0.0)
            or not np.isclose(r["live_size"], r["bt_size"], rtol=_REL, atol=0.0)
        ):
            firsts.append(min(r["live_entry"], r["bt_entry"]))
        else:
            firsts.append(min(r["live_exit"], r["bt_exit"]))
    return min(firsts) if firsts else None


def _reason(first, frame, signals, events, pinned, revised) -> str:
    """The latest known cause at or before ``first``, else "unknown" (with the first bar
    where the live and backtest signals differ, if they do)."""
    causes: list[tuple[pd.Timestamp, str]] = []
    for _, ev in events[events["kind"].isin(_CAUSES)].iterrows():
        ts = pd.Timestamp(ev["bar_ts"]) if ev["bar_ts"] not in (None, "None") else None
        if ts is None:
            continue
        ts = ts.tz_localize("UTC") if ts.tz is None else ts
        payload = json.loads(ev["payload"])
        causes.append((ts, _describe(ev["kind"], ts, payload)))
    if pinned is not None and "model_version" in frame:
        other = frame["model_version"].notna() & (frame["model_version"].astype(str) != pinned)
        if other.any():
            ts = frame.index[other.to_numpy()][0]
            version = frame.loc[ts, "model_version"]
            causes.append(
                (ts, f"model version {pinned} -> {version}: decisions by {version} from {ts}")
            )
    if revised is not None:
        causes.append(revised)
    known = [c for c in causes if c[0] <= first]
    if known:
        return max(known, key=lambda c: c[0])[1]
    live_side = frame["signal"].map(_SIDE).fillna(0).astype(int)
    differ = live_side.to_numpy() != signals["side"].reindex(frame.index).fillna(0).to_numpy()
    if differ.any():
        ts = frame.index[np.flatnonzero(differ)[0]]
        return (
            f"unknown; the signals first differ at {ts}: live {frame.loc[ts, 'signal']}, "
            f"backtest {SIDE_NAME[int(signals.loc[ts, 'side'])]}"
        )
    return "unknown; the signals agree on every bar: the fills differ"


def _describe(kind: str, ts: pd.Timestamp, payload: dict[str, Any]) -> str:
    if kind == "model_reloaded":
        return f"model version switch {payload.get('from')} -> {payload.get('to')} at {ts}"
    if kind == "resumed":
        return f"session resumed after a stop or crash at {ts}"
    what = "rejected order" if kind == "rejected" else "partial fill"
    detail = payload.get("reason") or payload.get("message")
    if kind == "partial_fill" and "filled" in payload:
        detail = f"filled {payload['filled']} of {payload.get('size', '?')}"
    return f"{what} at {ts}" + (f": {detail}" if detail else "")


def _revised_candles(session, symbol, frame) -> tuple[pd.Timestamp, str] | None:
    """The first candle the feed now gives differently from what the session received."""
    from trademl.live.app import _feed

    spec = next((f for f in session.get("feeds", []) if f.get("symbol") == symbol), None)
    if spec is None or "***" in json.dumps(spec):
        raise DataError(
            f"--check-feed: the feed of {symbol} cannot be opened again from the journal "
            "(it needs credentials, which are not kept)"
        )
    now = _feed(spec).history(None)
    got = ohlcv(frame)
    now = now.reindex(got.index)[got.columns]
    diff = ~np.isclose(now.to_numpy(), got.to_numpy(), rtol=0.0, atol=0.0, equal_nan=False)
    bad = diff.any(axis=1)
    if not bad.any():
        return None
    ts = got.index[np.flatnonzero(bad)[0]]
    if now.loc[ts].isna().all():
        return ts, f"the feed no longer has the candle at {ts}"
    return ts, (
        f"a candle the feed revised at {ts} (close received {got.loc[ts, 'close']}, "
        f"now {now.loc[ts, 'close']})"
    )
