"""When the ``trademl`` command started, for the runs it creates (no heavy imports here:
``trademl --help`` loads this)."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["command_start_time", "mark_command_start"]

_COMMAND_STARTED: list[float] = []


def mark_command_start() -> None:
    """Called by the ``trademl`` command: its runs start when the process did (imports and
    opening the store included), not when the run was created."""
    _COMMAND_STARTED[:] = [_process_start() or time.time()]


def command_start_time(default: float) -> float:
    """When the ``trademl`` command started (``default`` elsewhere, e.g. in a notebook)."""
    return _COMMAND_STARTED[0] if _COMMAND_STARTED else default


def _process_start() -> float | None:
    """This process's start time from /proc (Linux); ``None`` where it cannot be read. The
    age is taken against /proc/uptime (10 ms), not /proc/stat's whole-second boot time."""
    try:
        now = time.time()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime, after comm
        started = now - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    return started if 0 <= now - started < 86400 else None
