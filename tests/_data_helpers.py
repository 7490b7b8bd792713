"""Helpers for the data-loading tests: candle CSV text and files in every container format."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

HEADER = "timestamp,open,high,low,close,volume"
SUFFIXES = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz", ".parquet")


def candle_rows(n: int, start: str = "2024-01-01", freq: str = "h") -> list[str]:
    """``n`` valid CSV data rows (ISO timestamps), prices around 100."""
    index = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    rng = np.random.default_rng(n)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    volume = rng.uniform(1, 100, n)
    columns = zip(index, open_, high, low, close, volume, strict=True)
    return [
        f"{t.isoformat()},{o:.6f},{h:.6f},{lo:.6f},{c:.6f},{v:.1f}" for t, o, h, lo, c, v in columns
    ]


def compress(data: bytes, suffix: str) -> bytes:
    """``data`` inside the container that ``suffix`` names (``.csv`` leaves it as it is)."""
    if suffix.endswith(".gz"):
        return gzip.compress(data)
    if suffix.endswith(".bz2"):
        return bz2.compress(data)
    if suffix.endswith(".xz"):
        return lzma.compress(data)
    if suffix.endswith(".zip"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("candles.csv", data)
        return buffer.getvalue()
    return data


def write_file(path: Path, data: bytes) -> Path:
    """Write ``data`` (CSV bytes) to ``path``, compressed as its suffix says."""
    path.write_bytes(compress(data, path.name))
    return path
