"""Exceptions that users can cause and fix.

Every error raised on bad input derives from :class:`TradeMLError`. The message
names what is wrong (file, column, row, value, config key) and, where there is
one, how to fix it. The ``trademl`` command prints the message on one line and
exits with status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "ModelError",
    "TradeMLError",
    "exit_on_user_error",
    "report",
]

EXIT_USER_ERROR = 2


class TradeMLError(Exception):
    """Base class of every error a user can cause and fix."""


class DataError(TradeMLError, ValueError):
    """Input data is missing, unreadable or invalid (names file, column and row)."""


class InsufficientDataError(DataError):
    """Fewer rows than a computation needs; ``needed`` and ``got`` say how many."""

    def __init__(self, message: str, *, needed: int, got: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.got = got


class ConfigError(TradeMLError, ValueError):
    """A configuration value is unknown, missing or out of range."""


class ModelError(TradeMLError):
    """A model, registry entry or model version is missing or unusable."""


def report(exc: BaseException) -> None:
    """Print a user error as the one line the command line shows: ``trademl: error: ...``."""
    print(f"trademl: error: {' '.join(str(exc).split())}", file=sys.stderr)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`TradeMLError` into that one line and exit status 2 (entrypoints)."""
    try:
        yield
    except TradeMLError as exc:
        report(exc)
        sys.exit(EXIT_USER_ERROR)
