"""The live journal: SQLite in WAL mode, one transaction per processed candle.

For every candle a symbol processes, the orders placed, fills, closed trades and the new
position state are written in **one** transaction before the runtime adopts the new state.
A crash (even ``kill -9``) loses at most the candle being processed, which is processed again
on restart from the last committed state: no order is lost and none is duplicated.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import DataError

__all__ = ["Journal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS books (
    symbol TEXT PRIMARY KEY, bar_ts TEXT NOT NULL, state TEXT NOT NULL, entry_ts TEXT,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT NOT NULL, bar_ts TEXT NOT NULL,
    kind TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT, symbol TEXT NOT NULL, entry_time TEXT NOT NULL,
    exit_time TEXT NOT NULL, side TEXT NOT NULL, size REAL NOT NULL, entry_price REAL NOT NULL,
    exit_price REAL NOT NULL, fees REAL NOT NULL, pnl REAL NOT NULL, exit_reason TEXT NOT NULL);
"""


class Journal:
    """Durable record of a live session (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable journal database ({exc})") from exc

    # -- session metadata -----------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- books ----------------------------------------------------------------------------------
    def load_book(self, symbol: str) -> tuple[np.ndarray, pd.Timestamp, str | None] | None:
        """The last committed state of ``symbol``: (state, last bar time, entry time)."""
        row = self._db.execute(
            "SELECT state, bar_ts, entry_ts FROM books WHERE symbol = ?", (symbol,)
        ).fetchone()
        if row is None:
            return None
        return np.asarray(json.loads(row[0]), dtype=np.float64), pd.Timestamp(row[1]), row[2]

    def commit(
        self,
        symbol: str,
        bar_ts: pd.Timestamp,
        state: np.ndarray,
        entry_ts: str | None,
        events: list[tuple[str, dict[str, Any]]],
        trades: list[dict[str, Any]],
    ) -> None:
        """Write one candle's events, trades and the new state atomically."""
        now = time.time()
        ts = str(bar_ts)
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany(
                "INSERT INTO events (symbol, bar_ts, kind, payload, created) VALUES (?,?,?,?,?)",
                [
                    (symbol, ts, kind, json.dumps(payload, default=str), now)
                    for kind, payload in events
                ],
            )
            cur.executemany(
                "INSERT INTO trades (symbol, entry_time, exit_time, side, size, entry_price, "
                "exit_price, fees, pnl, exit_reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        symbol,
                        str(t["entry_time"]),
                        str(t["exit_time"]),
                        t["side"],
                        t["size"],
                        t["entry_price"],
                        t["exit_price"],
                        t["fees"],
                        t["pnl"],
                        t["exit_reason"],
                    )
                    for t in trades
                ],
            )
            cur.execute(
                "INSERT OR REPLACE INTO books (symbol, bar_ts, state, entry_ts, updated) "
                "VALUES (?,?,?,?,?)",
                (symbol, ts, json.dumps([float(x) for x in state]), entry_ts, now),
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # -- reading --------------------------------------------------------------------------------
    def trades(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM trades ORDER BY id", self._db)
        for col in ("entry_time", "exit_time"):
            df[col] = pd.to_datetime(df[col], utc=True)
        return df

    def events(self, kind: str | None = None) -> pd.DataFrame:
        query = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
        return pd.read_sql_query(query, self._db, params=(kind,) if kind else ())

    def books(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT symbol, bar_ts, state, entry_ts FROM books", self._db)

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
