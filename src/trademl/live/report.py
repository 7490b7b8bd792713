"""``trademl live report JOURNAL``: the divergence report's files, MLflow run and exit status.

Exit status: 0 when live and the backtest match (and, with ``--decisions``, every decision
re-runs the same), 1 when they diverge, 2 for a user error (no journal, a journal written
before traceability, a model version no longer in the registry...), as one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from trademl.errors import DataError, TrackingError
from trademl.live.divergence import DivergenceReport, divergence_report
from trademl.live.journal import Journal

__all__ = ["EXIT_DIVERGED", "add_report_parser", "log_report", "run_report", "write_report"]

log = logging.getLogger("trademl.live")

EXIT_DIVERGED = 1
ARTIFACT_PATH = "live/divergence"


def write_report(report: DivergenceReport, out: Path) -> list[Path]:
    """``divergence.csv`` (one row per trade) and ``divergence.json`` (everything) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv, js = out / "divergence.csv", out / "divergence.json"
    report.table().to_csv(csv, index=False)
    js.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    return [csv, js]


def log_report(report: DivergenceReport, recorder: Any) -> None:
    """The files under ``live/divergence/`` and the ``divergence_*`` metrics, in the session's
    run (``recorder``: a :class:`trademl.tracking.RunRecorder` on it)."""
    with recorder.artifact_dir(ARTIFACT_PATH) as tmp:
        write_report(report, tmp)
    recorder.log_metrics(report.metrics())
    recorder.set_tags({"divergence": "diverged" if report.diverged else "none"})


def _session_recorder(journal_path: Path, tracking_uri: str | None) -> Any:
    """A recorder on the session's run, from the journal's meta (its run id and store)."""
    from trademl.tracking import MlflowSettings, RunRecorder

    journal = Journal(journal_path, lock=False)
    try:
        run_id = journal.get_meta("mlflow_run_id")
        session = json.loads(journal.get_meta("session") or "{}")
    finally:
        journal.close()
    if not run_id:
        return None
    uri = tracking_uri or session.get("mlflow", {}).get("tracking_uri")
    if not uri or "***" in uri:
        raise DataError(
            f"{journal_path}: the session's tracking URI is not kept in the journal (it has a "
            "password); give it with --tracking-uri, or --no-mlflow"
        )
    settings = MlflowSettings(tracking_uri=uri)
    try:
        run = settings.client().get_run(run_id)
    except Exception as exc:  # the store is gone or the run was deleted
        raise TrackingError(
            f"{journal_path}: the session's MLflow run {run_id} is not in {uri} ({exc}); "
            "give the store with --tracking-uri, or --no-mlflow"
        ) from None
    return RunRecorder(settings, run_id, run.info.experiment_id)


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="live versus backtest, trade by trade, from a session's journal",
        description="Rebuild each symbol's candles from the journal, backtest the same "
        "strategy and model version with the session's fill settings, and compare trade by "
        "trade. Exit status: 0 they match, 1 they diverge, 2 usage or data error.",
    )
    p.add_argument("journal", help="the session's live.journal (read-only; may be running)")
    p.add_argument("--out", help="directory of divergence.csv/json (default: the journal's)")
    p.add_argument(
        "--decisions",
        action="store_true",
        help="also re-run every decision with its recorded model version",
    )
    p.add_argument(
        "--check-feed",
        action="store_true",
        help="re-read the feed files: a candle revised since it was received is a reason",
    )
    p.add_argument("--tracking-uri", help="the model store (default: the session's)")
    p.add_argument(
        "--no-mlflow", action="store_true", help="do not log the report to the session's run"
    )
    return p


def run_report(args: argparse.Namespace) -> int:
    """``trademl live report``: print, write, log; the exit status (see the module)."""
    path = Path(args.journal)
    report = divergence_report(
        path,
        tracking_uri=args.tracking_uri,
        decisions=args.decisions,
        check_feed=args.check_feed,
    )
    out = Path(args.out) if args.out else path.parent
    files = write_report(report, out)
    print(report.text())
    print(f"wrote {', '.join(str(f) for f in files)}")
    if not args.no_mlflow:
        recorder = _session_recorder(path, args.tracking_uri)
        if recorder is None:
            print("the session logged no MLflow run (log_to_mlflow=false): nothing logged")
        else:
            log_report(report, recorder)
            print(f"logged to MLflow run {recorder.run_id} under {ARTIFACT_PATH}/")
    return EXIT_DIVERGED if report.diverged else 0
