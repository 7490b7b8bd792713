"""The live journal: SQLite in WAL mode, one transaction per processed candle.

For every candle a symbol processes, its decision row (table ``decisions``: the candle, the
signal, its probabilities and the model version that made it), the orders placed, fills,
closed trades and the new position state are written in **one** transaction before the
runtime adopts the new state.
A crash (even ``kill -9``) loses at most the candle being processed, which is processed again
on restart from the last committed state: no order is lost and none is duplicated.

One process at a time: opening a journal takes an exclusive OS lock on ``<journal>.lock``
(``flock``), which the OS releases when the holder exits, crashes or is killed, so a second
``trademl live`` on the same journal is refused at once and a crashed one never blocks a
restart. A file that is not a trademl journal (empty, another database) is refused, never
silently started over.

The session's settings (meta ``session``, secrets masked) and its decision rows let
``trademl live report`` re-run it (:mod:`trademl.live.divergence`); journals written before
them stay readable and resumable, and the report says it cannot compare them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trademl.errors import DataError, JournalLockedError

__all__ = ["DECISION_COLUMNS", "Journal"]

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
CREATE TABLE IF NOT EXISTS orders (
    client_id TEXT PRIMARY KEY, symbol TEXT NOT NULL, bar_ts TEXT NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, side INTEGER NOT NULL, amount REAL NOT NULL, price REAL,
    reason TEXT, status TEXT NOT NULL, exchange_id TEXT, filled REAL, avg_price REAL,
    fee REAL, detail TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    symbol TEXT NOT NULL, bar_ts TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL,
    low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL, signal TEXT,
    confidence REAL, p_SHORT REAL, p_FLAT REAL, p_LONG REAL, sl_distance REAL,
    tp_distance REAL, strategy TEXT NOT NULL, model TEXT, model_version TEXT);
"""
# one row per candle a symbol processed, written in the candle's transaction (typed columns,
# not a JSON event: a third of the cost per candle): the candle, the signal (NULL while the
# strategy warms up), its probabilities, stop and target distances, and who decided
DECISION_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "signal",
    "confidence",
    "p_SHORT",
    "p_FLAT",
    "p_LONG",
    "sl_distance",
    "tp_distance",
    "strategy",
    "model",
    "model_version",
)
# the order statuses that need nothing more from the exchange
FINAL_ORDER_STATUSES = (
    "filled", "partial", "rejected", "canceled", "expired", "unsent", "crossed", "dropped",
)  # fmt: skip
_INSERT_DECISION = (
    f"INSERT INTO decisions (symbol, bar_ts, {', '.join(DECISION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * (len(DECISION_COLUMNS) + 2))})"
)
_FORMAT = "trademl-live-journal/1"


class Journal:
    """Durable record of a live session (see the module docstring).

    ``lock=False`` opens it read-only and without the session lock, to read a journal that a
    running session may be writing (``trademl live report``); the journal must exist.

    ``durable=True`` (the default) makes every commit survive a power cut (SQLite
    ``synchronous=FULL``: an fsync per candle, about 1-3 ms). ``False`` keeps every commit
    atomic and safe from a crash of the process (kill -9 loses nothing committed) but lets a
    power cut or OS crash roll back the last commits (``synchronous=NORMAL`` in WAL mode, tens
    of microseconds): right for replaying a file, whose candles are simply traded again.
    """

    def __init__(self, path: str | Path, *, lock: bool = True, durable: bool = True) -> None:
        self.path, self.durable, self.read_only = Path(path), durable, not lock
        if self.read_only and not self.path.is_file():
            raise DataError(
                f"{self.path}: no such live journal; give the live.journal file of a session"
            )
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire(self.path) if lock else None
        try:
            self._db = self._open_read_only() if self.read_only else self._open()
        except BaseException:
            self._release()
            raise

    def _open(self) -> sqlite3.Connection:
        existed = self.path.exists()
        if existed and self.path.stat().st_size == 0:
            raise DataError(
                f"{self.path}: the live journal is empty (0 bytes), so it holds no session to "
                "resume; a journal is never empty once created. Restore it from a backup, or "
                "delete it (or choose another live.journal) to start a new session"
            )
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            if existed:
                tables = {
                    r[0]
                    for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                    if not r[0].startswith("sqlite_")
                }
                fmt = (
                    db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                    if "meta" in tables
                    else None
                )
                # journals written before the format row existed have exactly these tables
                legacy = fmt is None and tables == {"meta", "books", "events", "trades"}
                if not legacy and (fmt is None or fmt[0] != _FORMAT):
                    db.close()
                    raise DataError(
                        f"{self.path}: not a trademl live journal (found tables "
                        f"{', '.join(sorted(tables)) or 'none'}); choose another live.journal"
                    )
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?)", (_FORMAT,))
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable journal database ({exc})") from exc
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the live journal is empty (0 bytes)")
        try:  # waits (up to 10 s) for a running session's checkpoint instead of failing
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                timeout=10,
            )
            tables = {
                r[0]
                for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")
            }
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a usable journal database ({exc})") from exc
        if not {"meta", "books", "events", "trades"} <= tables:
            db.close()
            raise DataError(
                f"{self.path}: not a trademl live journal (found tables "
                f"{', '.join(sorted(tables)) or 'none'})"
            )
        return db

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                os.close(self._lock)
            self._lock = None

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
        orders: list[dict[str, Any]] = (),
        decision: tuple | None = None,
    ) -> None:
        """Write one candle's decision (the values of :data:`DECISION_COLUMNS`), events,
        trades, orders (new rows or updates of a row, keyed by ``client_id``) and the new
        state atomically."""
        now = time.time()
        ts = str(bar_ts)
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if decision is not None:
                cur.execute(_INSERT_DECISION, (symbol, ts, *decision))
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
            for order in orders:
                _write_order(cur, symbol, ts, order, now)
            cur.execute(
                "INSERT OR REPLACE INTO books (symbol, bar_ts, state, entry_ts, updated) "
                "VALUES (?,?,?,?,?)",
                (symbol, ts, json.dumps([float(x) for x in state]), entry_ts, now),
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def note(self, symbol: str, bar_ts: pd.Timestamp | None, kind: str, payload: dict) -> None:
        """One event outside a candle's transaction (e.g. ``resumed`` at a restart)."""
        self._db.execute(
            "INSERT INTO events (symbol, bar_ts, kind, payload, created) VALUES (?,?,?,?,?)",
            (symbol, str(bar_ts), kind, json.dumps(payload, default=str), time.time()),
        )

    # -- reading --------------------------------------------------------------------------------
    def last_event(self, symbol: str, kind: str) -> dict[str, Any] | None:
        """The payload of ``symbol``'s latest ``kind`` event, or ``None``."""
        row = self._db.execute(
            "SELECT payload FROM events WHERE symbol = ? AND kind = ? ORDER BY seq DESC LIMIT 1",
            (symbol, kind),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def trades(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM trades ORDER BY id", self._db)
        for col in ("entry_time", "exit_time"):
            df[col] = pd.to_datetime(df[col], utc=True)
        return df

    def events(self, kind: str | None = None) -> pd.DataFrame:
        query = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY seq"
        return pd.read_sql_query(query, self._db, params=(kind,) if kind else ())

    def orders(self, symbol: str | None = None, *, open_only: bool = False) -> list[dict]:
        """The exchange orders of the session (oldest first), as dicts; ``open_only``: those
        whose outcome is not known yet (sent or about to be, or resting on the exchange)."""
        query, args = "SELECT * FROM orders WHERE 1", []
        if symbol is not None:
            query, args = query + " AND symbol = ?", [symbol]
        if open_only:
            marks = ",".join("?" * len(FINAL_ORDER_STATUSES))
            query += f" AND status NOT IN ({marks})"
            args += list(FINAL_ORDER_STATUSES)
        cur = self._db.execute(query + " ORDER BY created, seq", args)
        names = [c[0] for c in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for row in rows:
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        return rows

    def order_ids(self, prefix: str) -> set[str]:
        """The client ids of the orders whose id starts with ``prefix``."""
        rows = self._db.execute(
            "SELECT client_id FROM orders WHERE substr(client_id, 1, ?) = ?", (len(prefix), prefix)
        )
        return {r[0] for r in rows}

    def decisions(self, limit: int | None = None) -> pd.DataFrame:
        """The decision rows in order, the first ``limit`` only if given (none, with the
        columns, for a journal written before decision rows existed)."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if "decisions" not in tables:  # an old journal opened read-only
            return pd.DataFrame(columns=["symbol", "bar_ts", *DECISION_COLUMNS])
        query = "SELECT * FROM decisions ORDER BY rowid" + (" LIMIT ?" if limit else "")
        return pd.read_sql_query(query, self._db, params=(limit,) if limit else ())

    def books(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT symbol, bar_ts, state, entry_ts FROM books", self._db)

    def close(self) -> None:
        """Checkpoint the WAL into the database file, close it and release the lock."""
        try:
            if not self.read_only:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._db.close()
            self._release()


_ORDER_FIELDS = (
    "kind", "side", "amount", "price", "reason", "status", "exchange_id", "filled",
    "avg_price", "fee", "detail",
)  # fmt: skip


def _write_order(cur: sqlite3.Cursor, symbol: str, ts: str, order: dict, now: float) -> None:
    """Insert an order row, or update the given fields of an existing one."""
    values = {k: order[k] for k in _ORDER_FIELDS if k in order}
    if "detail" in values:
        values["detail"] = json.dumps(values["detail"], default=str)
    cid = order["client_id"]
    if cur.execute("SELECT 1 FROM orders WHERE client_id = ?", (cid,)).fetchone() is None:
        cur.execute(
            "INSERT INTO orders (client_id, symbol, bar_ts, seq, created, updated, "
            + ", ".join(values)
            + ") VALUES (?, ?, ?, ?, ?, ?"
            + ", ?" * len(values)
            + ")",
            (cid, symbol, order.get("bar_ts", ts), order.get("seq", 0), now, now, *values.values()),
        )
    else:
        if "detail" in values:  # merged into what is there: a result keeps the plan's fields
            old = cur.execute("SELECT detail FROM orders WHERE client_id = ?", (cid,)).fetchone()
            merged = {**(json.loads(old[0]) if old and old[0] else {}), **order["detail"]}
            values["detail"] = json.dumps(merged, default=str)
        sets = ", ".join(f"{k} = ?" for k in values)
        cur.execute(
            f"UPDATE orders SET {sets}, updated = ? WHERE client_id = ?",
            (*values.values(), now, cid),
        )


def _acquire(path: Path) -> int:
    """Take the exclusive session lock beside ``path`` (released by the OS on exit/crash)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise JournalLockedError(
            f"{path} is in use by another trademl live session ({holder}); stop that one "
            "first, or give this one its own live.journal"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    return fd
