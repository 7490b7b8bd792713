"""One MLflow run, written through a client, and the lifecycle of every run trademl opens.

:class:`RunRecorder` owns a run: params, metrics, tags, artifacts, the dataset input and,
through :mod:`trademl.tracking.model_files`, the model. Used as a context manager it ends
the run as ``FINISHED``, as ``KILLED`` when a signal or ``KeyboardInterrupt`` unwinds it, and
as ``FAILED`` on any other exception (with the error as the ``error`` tag).

Runs that are open when a command is interrupted outside any ``with`` block (a sweep's parent
run, a run being created) are ended by :func:`end_open_runs`, called by the ``trademl``
command on its way out, and at interpreter exit as a last resort. :func:`signals_raise` turns
SIGTERM into :class:`~trademl.errors.Interrupted`, which unwinds like ``KeyboardInterrupt``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import InputTag, Metric, Param, RunTag
from mlflow.entities.dataset_input import DatasetInput
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

from trademl.errors import Interrupted
from trademl.tracking.settings import MlflowSettings

__all__ = [
    "RunRecorder",
    "end_open_runs",
    "ended_runs",
    "interrupt_seen",
    "run_status_for",
    "signals_ignored",
    "signals_raise",
]

log = logging.getLogger(__name__)

_OPEN: dict[str, RunRecorder] = {}
_ENDED: list[tuple[str, str, bool]] = []  # (run id, status, written to the store?)
_OPEN_LOCK = threading.Lock()
_MAX_PARAM_VALUE = 6000


def run_status_for(exc: BaseException | None) -> str:
    """The MLflow run status for how a block ended: FINISHED, KILLED or FAILED."""
    if exc is None:
        return "FINISHED"
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        if isinstance(exc, Interrupted):
            interrupt_seen()
        return "KILLED"
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "FINISHED"
    return "FAILED"


class RunRecorder:
    """Writes one MLflow run through an :class:`~mlflow.MlflowClient` (no global state)."""

    def __init__(self, settings: MlflowSettings, run_id: str, experiment_id: str) -> None:
        self.settings = settings
        self.client = settings.client()
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.status: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        settings: MlflowSettings,
        experiment_id: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
        start_time: float | None = None,
    ) -> RunRecorder:
        """Create a run (or resume ``resume_run_id``) and register it as open.

        ``start_time`` (seconds since the epoch, default now) is when the work it records
        began, e.g. the command's start (:func:`command_start_time`).

        Signals are held back while the run is created, so that an interruption at that
        moment still ends it as KILLED instead of leaving it RUNNING.
        """
        client = settings.client()
        all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        recorder = None
        try:
            with _signals_held():
                if resume_run_id:
                    run = client.get_run(resume_run_id)
                    client.update_run(resume_run_id, status="RUNNING")
                    if all_tags:
                        client.log_batch(
                            resume_run_id, tags=[RunTag(k, v) for k, v in all_tags.items()]
                        )
                else:
                    run = client.create_run(
                        experiment_id,
                        run_name=run_name,
                        tags=all_tags,
                        start_time=None if start_time is None else int(start_time * 1000),
                    )
                recorder = cls(settings, run.info.run_id, run.info.experiment_id)
                with _OPEN_LOCK:
                    _OPEN[recorder.run_id] = recorder
        except BaseException as exc:
            if recorder is not None:  # a signal arrived as soon as it was let through
                recorder.end(run_status_for(exc), error=exc)
            raise
        return recorder

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end(run_status_for(exc), error=exc)

    def end(self, status: str = "FINISHED", *, error: BaseException | None = None) -> None:
        """End the run with ``status`` (once).

        Signals are held back while the store is written (a second Ctrl-C cannot leave the
        run half-ended), there are no retries (if the server is gone, say so at once), and a
        failure to reach the store is logged; :func:`ended_runs` tells which runs really were
        marked.
        """
        with _OPEN_LOCK:
            if self.status is not None:
                return
            self.status = status
            _OPEN.pop(self.run_id, None)
        marked = False
        with _signals_held():
            try:
                client = self.settings.client(max_retries=0)
                if error is not None and status != "FINISHED":
                    message = " ".join(str(error).split()) or type(error).__name__
                    client.set_tag(self.run_id, "error", message[:_MAX_PARAM_VALUE])
                client.set_terminated(self.run_id, status)
                marked = True
            except Exception as exc:  # the store itself may be what failed
                log.error(
                    "could not mark MLflow run %s as %s in %s: %s",
                    self.run_id,
                    status,
                    self.settings.tracking_uri,
                    " ".join(str(exc).split())[:300],
                )
        with _OPEN_LOCK:
            _ENDED.append((self.run_id, status, marked))

    # -- contents -------------------------------------------------------------------------------
    def child(self, run_name: str, tags: Mapping[str, str] | None = None) -> RunRecorder:
        """A nested run (``mlflow.parentRunId`` = this run)."""
        return RunRecorder.start(
            self.settings,
            self.experiment_id,
            run_name=run_name,
            tags=tags,
            parent_run_id=self.run_id,
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Every (already flat) param, in batches under MLflow's limit of 100."""
        items = [Param(str(k), str(v)[:_MAX_PARAM_VALUE]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[i : i + 90])

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int = 0) -> None:
        """The finite numeric metrics (an infinite profit factor or a NaN is left out)."""
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in finite_metrics(metrics).items()]
        for i in range(0, len(items), 900):
            self.client.log_batch(self.run_id, metrics=items[i : i + 900])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=2, default=str), artifact_file)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    @contextlib.contextmanager
    def artifact_dir(self, artifact_path: str) -> Iterator[Path]:
        """A temporary directory whose files are logged under ``artifact_path`` on exit."""
        with tempfile.TemporaryDirectory(prefix="trademl-") as tmp:
            yield Path(tmp)
            self.log_artifacts(tmp, artifact_path)

    def log_dataset(self, candles: pd.DataFrame, *, context: str = "training") -> None:
        """The candles as an MLflow dataset input: source, digest, rows, first/last time."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source_name = str(candles.attrs.get("source", "data"))
        if Path(source_name).exists():
            source: Any = str(Path(source_name).resolve())
            name = Path(source_name).name
        else:
            source = CodeDatasetSource(tags={"generator": source_name})
            name = source_name.split("(")[0] or "candles"
        with warnings.catch_warnings():  # MLflow registers its local-file source class twice
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
            dataset = mlflow.data.from_pandas(candles.reset_index(), source=source, name=name)
        tags = {
            "rows": str(len(candles)),
            "first_timestamp": str(candles.index[0]),
            "last_timestamp": str(candles.index[-1]),
            "source": source_name,
        }
        input_tags = [InputTag(k, v) for k, v in tags.items()]
        input_tags.append(InputTag(MLFLOW_DATASET_CONTEXT, context))
        self.client.log_inputs(
            self.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), input_tags)]
        )
        self.set_tags({f"data.{k}": v for k, v in tags.items()} | {"data.digest": dataset.digest})


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics MLflow can store: numbers that are finite (no inf profit factor, no NaN)."""
    return {
        str(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def end_open_runs(status: str, error: BaseException | None = None) -> list[str]:
    """End every run this process opened and has not ended; returns their ids."""
    with _OPEN_LOCK:
        recorders = list(_OPEN.values())
    for recorder in recorders:
        recorder.end(status, error=error)
    return [r.run_id for r in recorders]


def ended_runs(status: str, *, marked: bool = True) -> list[str]:
    """The ids of the runs this process ended with ``status`` whose status was written to
    the store (``marked=False``: those whose store could not be reached)."""
    with _OPEN_LOCK:
        return [run_id for run_id, s, ok in _ENDED if s == status and ok == marked]


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT/SIGTERM ignored (main thread): for the last words of a command on its way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


@atexit.register
def _end_at_exit() -> None:  # pragma: no cover - exercised by the subprocess tests
    ended = end_open_runs("FAILED", RuntimeError("the process exited with the run still open"))
    if ended:
        log.warning("MLflow run(s) %s were still open at exit: marked FAILED", ", ".join(ended))


# -- signals ------------------------------------------------------------------------------------
# Python drops an exception raised where it cannot propagate: a signal handler that runs
# inside a weakref callback or a __del__ (SQLAlchemy's, during garbage collection) raises
# Interrupted into "Exception ignored in ...", and the training would go on to its end. So
# the handler also starts a watcher that delivers the signal again every second until the
# Interrupted is seen unwinding (run_status_for, or the end of signals_raise).
_PENDING: list[int] = []  # the signal whose Interrupted has not been seen unwinding
_WATCHERS: list[threading.Thread] = []  # the running watcher, if any
_REDELIVERY = threading.RLock()  # re-entrant: the handler may run while the main thread holds it


def _raise_interrupted(signum: int, frame: Any) -> None:
    with _REDELIVERY:
        _PENDING[:] = [signum]
        if not _WATCHERS:
            watcher = threading.Thread(target=_redeliver, daemon=True)
            _WATCHERS[:] = [watcher]
            watcher.start()
    raise Interrupted(signum)


def _redeliver(tries: int = 30) -> None:
    main = threading.main_thread().ident
    try:
        for _ in range(tries):
            time.sleep(1.0)
            with _REDELIVERY:  # never after signals_raise has put the previous handler back
                if not _PENDING:
                    _WATCHERS.clear()  # under the lock: a new signal starts a new watcher
                    return
                log.warning("the interruption was lost (raised where Python ignores it); again")
                signal.pthread_kill(main, _PENDING[0])
    finally:
        with _REDELIVERY:
            _WATCHERS.clear()


def interrupt_seen() -> None:
    """An Interrupted is being handled: stop delivering the signal again."""
    with _REDELIVERY:
        _PENDING.clear()


def _lost_signal() -> int | None:
    """The signal whose Interrupted has not been seen unwinding yet (``None``: none)."""
    with _REDELIVERY:
        return _PENDING[0] if _PENDING else None


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`~trademl.errors.Interrupted` (SIGINT already
    raises ``KeyboardInterrupt``), so ``with`` blocks unwind and runs end as KILLED.

    Only in the main thread, and only if SIGTERM still has Python's default action: a handler
    the application installed itself is left alone. The previous handler is restored after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, _raise_interrupted):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_interrupted)
    nested = previous is _raise_interrupted  # an outer block goes on handling SIGTERM
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Interrupted) or not nested:
            interrupt_seen()  # handled, or the default action is about to come back
        signal.signal(signal.SIGTERM, previous)
        raise
    lost = None if nested else _lost_signal()
    if not nested:
        interrupt_seen()  # stops a redelivery before the previous handler is back
    signal.signal(signal.SIGTERM, previous)
    if lost is not None:  # dropped inside the block and not delivered again yet
        raise Interrupted(lost)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back (main thread) until the block is done, then act on them.

    The handlers are swapped at the Python level rather than masked: the kernel may deliver
    a process signal to any thread, but Python runs its handlers in the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            handler = previous[signal.Signals(pending[0])]
            if callable(handler):
                handler(pending[0], None)  # raises Interrupted or KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(pending[0])
