"""``trademl live``: build the runtime from ``conf/live.yaml`` and run it as an MLflow session.

The strategy is given the spec's way (``strategy: {type: ml_strategy, params: {...}}``) or as
a ``_target_`` node; feeds are a list of ``{symbol, type: replay|follow|<class path>, ...}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import re
import time
import uuid
from typing import Any

import hydra
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from trademl._config import check_choice
from trademl._hydra import CONFIG_DIR, instantiate_node
from trademl.backtest import S_BAR, S_CASH, S_EQUITY, S_POS
from trademl.errors import ConfigError, exit_on_user_error
from trademl.live.ccxt_feed import CcxtFeed
from trademl.live.feeds import Feed, FollowFeed, ReplayFeed
from trademl.live.journal import Journal
from trademl.live.portfolio import SharedCash, check_journal_portfolio
from trademl.live.runtime import Execution, LiveRuntime, LiveSummary, SymbolTrader
from trademl.periods import check_window
from trademl.strategies import MLStrategy, ScalpingEMARSI
from trademl.tracking import (
    MlflowSettings,
    RunRecorder,
    config_params,
    run_status_for,
    setup_tracking,
)

__all__ = ["SessionTracker", "build_runtime", "build_strategy", "main", "run_live"]

log = logging.getLogger("trademl.live")

STRATEGY_TYPES = {"ml_strategy": MLStrategy, "scalping_ema_rsi": ScalpingEMARSI}
FEED_TYPES: dict[str, type[Feed]] = {"replay": ReplayFeed, "follow": FollowFeed, "ccxt": CcxtFeed}


def build_strategy(node: Any, tracking_uri: str | None = None) -> Any:
    """A strategy from ``{type, params}`` (the spec's live.yaml) or a ``_target_`` node."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if "_target_" in spec:
        return instantiate_node(OmegaConf.create(spec), "strategy")
    kind = spec.get("type")
    check_choice("strategy.type", kind, tuple(STRATEGY_TYPES))
    params = dict(spec.get("params") or {})
    if kind == "ml_strategy":
        params.setdefault("tracking_uri", tracking_uri)
    try:
        return STRATEGY_TYPES[kind](**params)
    except TypeError as exc:
        raise ConfigError(f"strategy.params for {kind}: {exc}") from exc


def _feed(spec: dict[str, Any]) -> Feed:
    spec = dict(spec)
    symbol = spec.pop("symbol", None)
    kind = spec.pop("type", "replay")
    if not symbol:
        raise ConfigError(f"feed {spec}: give a symbol")
    if kind in FEED_TYPES:
        cls = FEED_TYPES[kind]
    else:
        module, _, name = str(kind).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"feed {symbol}: type {kind!r} is neither replay, follow, ccxt nor an "
                "importable Feed class"
            ) from exc
    path = spec.pop("path", None)
    if path is None and cls in (ReplayFeed, FollowFeed):
        raise ConfigError(f"feed {symbol}: give a path")
    try:
        return cls(path, symbol, **spec) if path is not None else cls(symbol=symbol, **spec)
    except TypeError as exc:
        raise ConfigError(f"feed {symbol}: {exc}") from exc


class SessionTracker:
    """The live session's MLflow run (resumed after a restart): params, step metrics,
    latency percentiles and the trades. Ends FINISHED when the feeds end, KILLED when the
    session is stopped by a signal (a restart resumes it), FAILED on an error."""

    def __init__(
        self,
        settings: MlflowSettings,
        experiment_id: str,
        journal: Journal,
        params: dict[str, str],
        tags: dict[str, str],
        metrics_every: int = 50,
        metrics_interval: float = 1.0,
    ) -> None:
        self.metrics_every = max(1, int(metrics_every))
        self.metrics_interval = float(metrics_interval)
        self.buffer: list[Metric] = []
        self._last_point: dict[str, float] = {}  # symbol: wall time of its last logged point
        self._pending: dict[str, list[Metric]] = {}  # symbol: its newest unlogged point
        run_id = journal.get_meta("mlflow_run_id")
        if run_id:
            self.rec = RunRecorder.start(
                settings,
                experiment_id,
                resume_run_id=run_id,
                tags={"resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
            )
        else:
            run_tags = {k: v for k, v in tags.items() if k != "run_name"}
            self.rec = RunRecorder.start(
                settings, experiment_id, run_name=tags.get("run_name"), tags=run_tags
            )
            journal.set_meta("mlflow_run_id", self.rec.run_id)
            self.rec.log_params(params)
        self.client, self.run_id = self.rec.client, self.rec.run_id
        self.journal_path = journal.path

    def candle(self, trader: SymbolTrader) -> None:
        """The symbol's equity, position and realised P&L at this candle, as step metrics: at
        most one point per ``metrics_interval`` seconds (every candle of a real-time feed,
        about one per second of a fast replay), and always the last one."""
        wall = time.time()
        bar = int(trader.state[S_BAR])
        s = trader.symbol
        now = int(wall * 1000)
        point = [
            Metric(f"equity_{s}", float(trader.state[S_EQUITY]), now, bar),
            Metric(f"position_{s}", float(trader.state[S_POS]), now, bar),
            Metric(f"realised_pnl_{s}", float(trader.state[S_CASH] - trader.cash0), now, bar),
        ]
        if wall - self._last_point.get(s, float("-inf")) < self.metrics_interval:
            self._pending[s] = point  # logged if it turns out to be the last one
            return
        self._last_point[s] = wall
        self._pending.pop(s, None)
        self.buffer += point
        if len(self.buffer) >= 3 * self.metrics_every:
            self.flush()

    def model_switched(self, version: str) -> None:
        self.rec.set_tags({"model_version": str(version)})
        self.rec.log_metrics({"model_version": float(version)})

    def flush(self) -> None:
        for i in range(0, len(self.buffer), 900):
            self.client.log_batch(self.run_id, metrics=self.buffer[i : i + 900])
        self.buffer = []

    def finish(self, summary: LiveSummary) -> None:
        for point in self._pending.values():  # each symbol's last candle
            self.buffer += point
        self._pending = {}
        self.flush()
        metrics = {f"decision_latency_{k}_ms": v for k, v in summary.latency_ms.items()}
        metrics.update({f"final_equity_{k}": v for k, v in summary.equity.items()})
        metrics["trades"] = float(len(summary.trades))
        self.rec.log_metrics(metrics)
        with self.rec.artifact_dir("live") as tmp:
            summary.trades.to_csv(tmp / "trades.csv", index=False)
        self.log_divergence()
        self.rec.end("KILLED" if summary.stopped_by_signal else "FINISHED")

    def log_divergence(self) -> Any:
        """The divergence report (live versus a backtest of the same model version on the
        candles received) in the run: ``live/divergence/`` and ``divergence_*`` metrics. A
        report that cannot be made is logged as an error and a ``divergence`` tag, and the
        session still ends as it would have."""
        from trademl.errors import TradeMLError
        from trademl.live.divergence import divergence_report
        from trademl.live.report import log_report

        try:
            report = divergence_report(
                self.journal_path, tracking_uri=self.rec.settings.tracking_uri
            )
            log_report(report, self.rec)
        except Exception as exc:  # the session's own outcome stands: the report is about it
            if isinstance(exc, TradeMLError):
                log.error("no divergence report for %s: %s", self.journal_path, exc)
            else:
                log.exception("the divergence report of %s failed", self.journal_path)
            self.rec.set_tags({"divergence": f"not computed: {exc}"[:5000]})
            return None
        for item in report.symbols:
            (log.warning if item.diverged else log.info)("divergence: %s", item.summary())
        return report


def build_runtime(cfg: DictConfig) -> tuple[LiveRuntime, SessionTracker | None]:
    """Everything ``trademl live`` runs, built and validated from the config.

    Order: the settings and the feeds (cheap checks), then the journal's session lock,
    then MLflow and the model; if a later step fails, the journal is closed again.
    """
    from trademl.schemas import validate_config

    checked = validate_config(cfg, "live")  # before the journal, MLflow or data are touched
    live = OmegaConf.to_container(cfg.live, resolve=True)
    feeds_cfg = OmegaConf.to_container(cfg.feeds, resolve=True)
    symbols = [f["symbol"] for f in feeds_cfg]
    bt = checked["backtest"]
    execution = Execution(
        cash=bt.cash,
        fees_bps=bt.fees_bps,
        slippage_bps=bt.slippage_bps,
        on_opposite=bt.on_opposite,
        max_holding_bars=bt.max_holding_bars,
    )
    risk, mlflow_settings = checked["risk"], checked["mlflow"]
    feeds = [_feed(f) for f in feeds_cfg]
    broker = _broker(checked["broker"], feeds, risk)  # before the journal: cheap refusals first
    session = session_settings(cfg, execution, risk, mlflow_settings, feeds_cfg)
    durable = live.get("durable", "auto")
    if durable == "auto":
        durable = not all(f.replayable for f in feeds)
    journal = Journal(live["journal"], durable=bool(durable))
    try:
        _store_session(journal, session)
        return _assemble(
            cfg,
            live,
            symbols,
            feeds,
            journal,
            execution,
            risk,
            mlflow_settings,
            checked["strategy"],
            checked["broker"],
            broker,
        )
    except BaseException:
        journal.close()
        raise


def _assemble(
    cfg,
    live,
    symbols,
    feeds,
    journal,
    execution,
    risk,
    mlflow_settings,
    strategy,
    broker_cfg,
    broker,
):
    holding_from_model = isinstance(strategy, MLStrategy) and execution.max_holding_bars is None
    if isinstance(strategy, MLStrategy):  # first: a missing model (or store) fails fast
        model = strategy.load()
        clf = model.model[-1]
        if "n_jobs" in clf.get_params():
            clf.set_params(n_jobs=1)  # one row per decision: threads only add latency
        _check_out_of_sample(model, feeds, journal, bool(live.get("allow_in_sample")))
        if holding_from_model:  # the model's label horizon, as in a backtest
            execution = dataclasses.replace(execution, max_holding_bars=strategy.max_holding_bars)
    mode = live.get("portfolio", "per_symbol")
    check_journal_portfolio(journal, mode, symbols, execution.cash)
    pool = SharedCash(execution.cash, risk.max_gross_exposure) if mode == "shared" else None
    log_run = bool(cfg.get("log_to_mlflow", True))
    settings, experiment_id = setup_tracking(mlflow_settings) if log_run else (None, None)
    common = {
        "risk": risk,
        "execution": execution,
        "cash": execution.cash / len(feeds) if pool is None else 0.0,  # shared: its P&L
        "window": live.get("window"),
    }
    if broker is not None:
        from trademl.live.exchange_trader import ExchangeTrader

        session = journal.get_meta("session_id")
        if session is None:
            session = uuid.uuid4().hex[:6]
            journal.set_meta("session_id", session)
        log.warning("live.mode=real: orders go to %s", broker_cfg.exchange)
        traders = [
            ExchangeTrader(
                f.symbol,
                f,
                strategy,
                journal,
                broker=broker,
                session=session,
                stops=broker_cfg.stops,
                **common,
            )
            for f in feeds
        ]
        # a restart: every symbol's journal squared with the exchange before any order goes
        for phase in ("reconcile", "check_position", "resume"):
            for trader in traders:
                getattr(trader, phase)()
    else:
        traders = [SymbolTrader(f.symbol, f, strategy, journal, pool=pool, **common) for f in feeds]
    if pool is not None:
        pool.attach(traders)
    tracker = None
    if log_run:
        params = config_params(cfg)
        tags = {
            "run_type": "live",
            "run_name": f"live-{'-'.join(symbols)}",
            "symbols": ",".join(symbols),
            "strategy_type": getattr(strategy, "strategy_type", "unknown"),
        }
        if isinstance(strategy, MLStrategy):
            tags.update(model_uri=strategy.uri, model_version=str(strategy.load().version))
        tracker = SessionTracker(
            settings,
            experiment_id,
            journal,
            params,
            tags,
            live.get("metrics_every", 50),
            float(live.get("metrics_interval", 1.0)),
        )
    runtime = LiveRuntime(
        traders,
        journal,
        strategy=strategy,
        tracker=tracker,
        reload_interval=float(live.get("reload_interval", 60.0)),
        close_at_end=bool(live.get("close_at_end", True)),
        allow_in_sample=bool(live.get("allow_in_sample")),
        holding_from_model=holding_from_model,
        pool=pool,
    )
    return runtime, tracker


def _broker(settings: Any, feeds: list[Feed], risk: Any) -> Any:
    """The exchange account of ``broker.type: ccxt`` (``None`` for paper), its markets
    checked against the feeds' symbols and the risk limits' sizes."""
    if settings.type != "ccxt":
        return None
    from trademl.live.ccxt_broker import CcxtBroker

    broker = CcxtBroker(
        settings.exchange,
        ccxt_options=dict(settings.ccxt_options or {}),
        api_key_env=settings.api_key_env,
        secret_env=settings.secret_env,
        password_env=settings.password_env,
        resend_grace=settings.resend_grace,
    )
    for feed in feeds:
        broker.check_market(feed.symbol, risk.size_step, float(risk.min_size))
    return broker


_SECRET_KEY = re.compile(r"key|secret|password|passwd|passphrase|token|pass$|uid|login", re.I)


def _masked(value: Any, key: str = "") -> Any:
    """``value`` with every secret-looking entry (api keys, secrets, passwords, tokens,
    passwords in URLs) replaced by ``***``."""
    from trademl.tracking.server_store import mask_secrets

    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    if value is not None and _SECRET_KEY.search(key):
        return "***"
    return mask_secrets(value) if isinstance(value, str) else value


def session_settings(cfg, execution, risk, mlflow_settings, feeds_cfg) -> dict[str, Any]:
    """What ``trademl live report`` needs to re-run the session (no secrets): the strategy
    spec, risk, fill settings, the feeds and where the session's run is logged."""
    from trademl import __version__

    strategy = OmegaConf.to_container(cfg.strategy, resolve=True)
    return {
        "trademl": __version__,
        "strategy": _masked(strategy),
        "risk": dataclasses.asdict(risk),
        "execution": dataclasses.asdict(execution),
        "cash_per_symbol": execution.cash / len(feeds_cfg),
        "symbols": [f["symbol"] for f in feeds_cfg],
        "feeds": _masked(feeds_cfg),
        "window": cfg.live.get("window"),
        "mlflow": {
            "tracking_uri": _masked(mlflow_settings.tracking_uri),
            "experiment_name": mlflow_settings.experiment_name,
        },
    }


def _store_session(journal: Journal, session: dict[str, Any]) -> None:
    """The settings, once, at the journal's first session; a resumed session with other
    settings is told so (the report re-runs the first session's)."""
    text = json.dumps(session, sort_keys=True, default=str)
    stored = journal.get_meta("session")
    if stored is None:
        journal.set_meta("session", text)
        return
    before = {k: v for k, v in json.loads(stored).items() if k != "trademl"}
    now = {k: v for k, v in json.loads(text).items() if k != "trademl"}
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        log.warning(
            "%s: resumed with other settings (%s) than the session started with; "
            "`trademl live report` re-runs the session's first settings",
            journal.path,
            ", ".join(changed),
        )


def _check_out_of_sample(model, feeds, journal: Journal, allow: bool) -> None:
    """Each feed's first candle to trade (after a resumed book's last one) must come after the
    last bar the model learned from, by date; else refused unless live.allow_in_sample."""
    for feed in feeds:
        book = journal.load_book(feed.symbol)
        history = feed.history(None)
        if not len(history):
            continue
        after = history.loc[history.index > book[1]] if book is not None else history
        if len(after):
            check_window(
                history, model.trademl, after.index[0], allow=allow, key="live.allow_in_sample"
            )


def run_live(cfg: DictConfig) -> LiveSummary:
    """Build and run the live session to its end (finite feeds) or a stop signal.

    The session's MLflow run ends FINISHED, KILLED (stopped by a signal) or FAILED (any
    error, project or not); the journal is closed and its lock released in every case.
    """
    runtime, tracker = build_runtime(cfg)
    try:
        summary = asyncio.run(runtime.run())
        if tracker is not None:
            tracker.finish(summary)
    except BaseException as exc:
        if tracker is not None:
            tracker.rec.end(run_status_for(exc), error=exc)
        raise
    finally:
        runtime.journal.close()
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="live")
def main(cfg: DictConfig) -> None:
    """Hydra entrypoint of ``trademl live``."""
    with exit_on_user_error():
        summary = run_live(cfg)
    lat = summary.latency_ms
    equity = dict(summary.equity)
    pool = equity.pop("portfolio", None)  # live.portfolio=shared: the books hold P&L
    print(
        f"{summary.candles} candles, {len(summary.trades)} trades; "
        + ("equity " if pool is None else f"portfolio equity {pool:.2f}, P&L ")
        + ", ".join(f"{k} {v:.2f}" for k, v in equity.items())
        + (
            f"; decision latency p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms, p99 "
            f"{lat['p99']:.2f} ms"
            if lat
            else ""
        )
        + ("; stopped by signal" if summary.stopped_by_signal else "")
    )
    for note in summary.model_switches:
        print(f"model switched: {note}")


if __name__ == "__main__":  # pragma: no cover
    main()
