"""Exceptions that users can cause and fix.

Every error raised on bad input derives from :class:`TradeMLError`. The message
names what is wrong (file, column, row, value, config key) and, where there is
one, how to fix it. The ``trademl`` command prints the message on one line and
exits with status 2.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "Interrupted",
    "JournalLockedError",
    "ModelError",
    "TrackingError",
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


class JournalLockedError(TradeMLError):
    """Another process holds the live journal (one live session per journal)."""


class TrackingError(TradeMLError):
    """The MLflow store is missing, unreachable or failed during a command."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: unwinds like ``KeyboardInterrupt`` so that open MLflow runs
    are ended as KILLED and files are closed (see :func:`trademl.tracking.signals_raise`)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")


def report(exc: BaseException) -> None:
    """Print a user error as the one line the command line shows: ``trademl: error: ...``."""
    print(f"trademl: error: {' '.join(str(exc).split())}", file=sys.stderr)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """How every entrypoint ends (``trademl train``, ``backtest``, ``walkforward``, ``live``).

    Inside, SIGTERM unwinds like Ctrl-C. A :class:`TradeMLError` is printed as one line and
    exits with status 2; SIGINT/SIGTERM exit with 128 + the signal number; MLflow runs still
    open are ended first (FAILED, or KILLED on a signal). Any other exception ends them
    FAILED and propagates.
    """
    from trademl.tracking.runs import end_open_runs, ended_runs, signals_ignored, signals_raise

    try:
        with signals_raise():
            yield
    except TradeMLError as exc:
        with signals_ignored():
            end_open_runs("FAILED", exc)
            report(exc)
        sys.exit(EXIT_USER_ERROR)
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = getattr(exc, "signum", int(signal.SIGINT))
        with signals_ignored():  # a second Ctrl-C must not cut the last words short
            end_open_runs("KILLED", exc)
            marked, unmarked = ended_runs("KILLED"), ended_runs("KILLED", marked=False)
            runs = f"; MLflow run(s) {', '.join(marked)} marked KILLED" if marked else ""
            if unmarked:
                runs += f"; run(s) {', '.join(unmarked)} could not be marked (store unreachable)"
            print(f"trademl: interrupted by {signal.Signals(signum).name}{runs}", file=sys.stderr)
        sys.exit(128 + signum)
    except BaseException as exc:
        with signals_ignored():
            if not (isinstance(exc, SystemExit) and exc.code in (0, None)):
                end_open_runs("FAILED", exc)
            if _store_failure(exc):
                report(TrackingError(f"the MLflow store failed: {exc}"))
                sys.exit(EXIT_USER_ERROR)
        raise


def _store_failure(exc: BaseException) -> bool:
    """An error of MLflow's client or of HTTP, i.e. the tracking store went away."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    return isinstance(exc, MlflowException | RequestException)
