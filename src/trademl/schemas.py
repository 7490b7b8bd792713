"""Typed schemas of every config group, checked right after composition.

:func:`validate_config` runs first in every entrypoint (``train``, ``backtest``,
``walkforward``, ``live``), before MLflow or any data is touched. Each group is checked
against a typed schema: the dataclass it instantiates (``CleaningConfig``, ``FeatureConfig``,
``LabelConfig``, ``SplitConfig``, ``RiskConfig``, ``MlflowSettings``), the signature of the
function or class it calls (the data loaders, the strategies, the model's estimator), or one
of the settings dataclasses below for the groups that are plain values (``evaluation``,
``backtest``, ``live``, ``feeds``, ``signal`` and the top-level keys). Then the objects are
built, which checks the ranges.

A problem is one :class:`~trademl.errors.ConfigError` naming the key and the allowed values;
a misspelt key gets a "did you mean" suggestion, a renamed or removed key says where it went.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trademl._config import MOVED_KEYS, check_mapping, did_you_mean, unknown_key_error
from trademl.errors import ConfigError, DataError
from trademl.tuning.settings import TuneSettings

__all__ = [
    "MOVED_KEYS",
    "BacktestSettings",
    "EvaluationSettings",
    "FeedSettings",
    "LiveSettings",
    "SafeguardSettings",
    "SignalSettings",
    "check_mapping",
    "did_you_mean",
    "validate_config",
]


# -- settings of the plain-value groups -----------------------------------------------------------
def _positive(label: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{label}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True)
class EvaluationSettings:
    """``evaluation``: permutation importance, the importance plot, and the validation
    backtest (the model's trade on the validation segment, for the sweep's deflated Sharpe)."""

    permutation_repeats: int = 3
    permutation_max_rows: int = 2000
    top_features_plot: int = 20
    validation_backtest: bool = True
    min_confidence: float = 0.55
    fees_bps: float = 10.0
    slippage_bps: float = 2.0

    def __post_init__(self) -> None:
        _positive("evaluation.permutation_repeats", self.permutation_repeats, allow_zero=True)
        _positive("evaluation.permutation_max_rows", self.permutation_max_rows)
        _positive("evaluation.top_features_plot", self.top_features_plot)
        if not 0 < self.min_confidence <= 1:
            raise ConfigError(
                f"evaluation.min_confidence={self.min_confidence!r} must be in (0, 1]"
            )
        for key in ("fees_bps", "slippage_bps"):
            if not 0 <= getattr(self, key) < 1000:
                raise ConfigError(f"evaluation.{key}={getattr(self, key)!r} must be in [0, 1000)")


@dataclass(frozen=True)
class SafeguardSettings:
    """``backtest.safeguards``: the statistical safeguards beside a backtest's metrics."""

    enabled: bool = True
    random_runs: int = 200
    bootstrap: int = 1000
    block: int | None = None
    cost_multipliers: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0])
    seed: int = 0
    sides: Literal["strategy", "random"] = "strategy"

    def __post_init__(self) -> None:
        for key in ("random_runs", "bootstrap", "block"):
            _positive(f"backtest.safeguards.{key}", getattr(self, key))
        _positive("backtest.safeguards.seed", self.seed, allow_zero=True)
        if not self.cost_multipliers or min(self.cost_multipliers) < 0:
            raise ConfigError(
                f"backtest.safeguards.cost_multipliers={list(self.cost_multipliers)!r} must be "
                "a non-empty list of numbers >= 0 (multiples of the fees and slippage)"
            )


@dataclass(frozen=True)
class BacktestSettings:
    """``backtest``: the fill settings shared by the backtester and the live paper broker."""

    cash: float = 10_000.0
    fees_bps: float = 10.0
    slippage_bps: float = 2.0
    on_opposite: Literal["reverse", "ignore"] = "reverse"
    max_holding_bars: int | None = None
    start: str | None = "auto"
    end: str | None = None
    periods_per_year: float | None = None
    allow_in_sample: bool = False
    safeguards: Any = field(default_factory=dict)  # a mapping of SafeguardSettings' keys
    symbols: Any = None  # {SYMBOL: candle file}: a portfolio backtest of several symbols
    portfolio: str = "per_symbol"  # with symbols: per_symbol | shared

    def __post_init__(self) -> None:
        modes = ["per_symbol", "shared"]
        if self.portfolio not in modes:
            raise ConfigError(
                f"backtest.portfolio={self.portfolio!r} is not valid: choose per_symbol or "
                f"shared{did_you_mean(str(self.portfolio), modes)}"
            )
        if self.symbols is not None:
            if not isinstance(self.symbols, Mapping) or not self.symbols:
                raise ConfigError(
                    f"backtest.symbols={self.symbols!r} must map each symbol to its candle "
                    "file, e.g. 'backtest.symbols={BTCUSDT: btc.csv, ETHUSDT: eth.csv}'"
                )
            for symbol, path in self.symbols.items():
                if not isinstance(path, str) or not path.strip():
                    raise ConfigError(f"backtest.symbols.{symbol}={path!r} must be a file path")
                if not Path(path).exists():
                    raise DataError(f"backtest.symbols.{symbol}={path}: file not found")
        if isinstance(self.safeguards, Mapping):
            check_mapping("backtest.safeguards", self.safeguards, SafeguardSettings)
            object.__setattr__(self, "safeguards", SafeguardSettings(**self.safeguards))
        elif not isinstance(self.safeguards, SafeguardSettings):
            raise ConfigError(
                f"backtest.safeguards={self.safeguards!r} must be a mapping of "
                f"{', '.join(_field_names(SafeguardSettings))}"
            )
        _positive("backtest.cash", self.cash)
        if not 0 <= self.fees_bps < 1000:
            raise ConfigError(f"backtest.fees_bps={self.fees_bps!r} must be in [0, 1000)")
        if not 0 <= self.slippage_bps < 1000:
            raise ConfigError(f"backtest.slippage_bps={self.slippage_bps!r} must be in [0, 1000)")
        _positive("backtest.max_holding_bars", self.max_holding_bars)
        _positive("backtest.periods_per_year", self.periods_per_year)
        for key in ("start", "end"):
            value = getattr(self, key)
            if value is not None and not (key == "start" and value == "auto"):
                _timestamp(f"backtest.{key}", value)


def _timestamp(label: str, value: Any) -> None:
    import pandas as pd

    try:
        pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{label}={value!r} is not a timestamp; use e.g. 2024-03-01 or 2024-03-01T12:00:00Z"
        ) from None


@dataclass(frozen=True)
class LiveSettings:
    """``live``: the runtime of ``trademl live``."""

    window: int | None = 1000
    journal: str = "live_journal.db"
    reload_interval: float = 60.0
    metrics_every: int = 50
    metrics_interval: float = 1.0
    close_at_end: bool = True
    allow_in_sample: bool = False
    durable: str | bool = "auto"
    mode: Literal["paper", "real"] = "paper"
    confirm_real: bool = False
    portfolio: str = "per_symbol"

    def __post_init__(self) -> None:
        modes = ["per_symbol", "shared"]
        if self.portfolio not in modes:
            hint = did_you_mean(str(self.portfolio), modes)
            raise ConfigError(
                f"live.portfolio={self.portfolio!r} is not valid: choose per_symbol (each "
                "symbol trades backtest.cash / N on its own) or shared (one cash pool for all "
                f"symbols, as PortfolioBacktest(portfolio='shared')){hint}"
            )
        if self.window is not None and self.window < 2:
            raise ConfigError(
                f"live.window={self.window!r} must be an integer >= 2 (bars of history the "
                "strategy sees) or null for all"
            )
        if not self.journal.strip():
            raise ConfigError("live.journal must be a file path")
        _positive("live.reload_interval", self.reload_interval, allow_zero=True)
        _positive("live.metrics_every", self.metrics_every)
        _positive("live.metrics_interval", self.metrics_interval, allow_zero=True)
        if self.durable not in (True, False, "auto"):
            raise ConfigError(
                f"live.durable={self.durable!r} must be true (fsync every candle), false, or "
                "auto (false for files replayed as fast as possible, true otherwise)"
            )


@dataclass(frozen=True)
class BrokerSettings:
    """``broker``: where the live runtime's orders go (``paper``: simulated, as the backtester
    fills them; ``ccxt``: an exchange account, see :mod:`trademl.live.ccxt_broker`)."""

    type: Literal["paper", "ccxt"] = "paper"
    exchange: str | None = None
    ccxt_options: Any = None
    api_key_env: str = "TRADEML_EXCHANGE_API_KEY"
    secret_env: str = "TRADEML_EXCHANGE_SECRET"
    password_env: str | None = None
    stops: Literal["auto", "exchange", "runtime"] = "auto"
    resend_grace: float = 12.0

    def __post_init__(self) -> None:
        if self.ccxt_options is not None and not isinstance(self.ccxt_options, Mapping):
            raise ConfigError(
                f"broker.ccxt_options={self.ccxt_options!r} must be a mapping (passed to the "
                "ccxt exchange as-is)"
            )
        _positive("broker.resend_grace", self.resend_grace, allow_zero=True)
        if self.type == "ccxt" and not self.exchange:
            raise ConfigError(
                "broker.type=ccxt needs broker.exchange, a ccxt exchange id (e.g. binanceusdm)"
            )
        if self.type == "ccxt":
            from trademl.live.ccxt_broker import credentials

            credentials(self.ccxt_options, self.api_key_env, self.secret_env, self.password_env)


@dataclass(frozen=True)
class FeedSettings:
    """One entry of ``feeds``."""

    symbol: str
    type: str = "replay"
    path: str | None = None
    speed: float | None = None
    delay: float = 0.0
    poll_interval: float = 1.0
    idle_timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.symbol.strip():
            raise ConfigError("feeds: every feed needs a symbol")
        _positive(f"feed {self.symbol} speed", self.speed)
        _positive(f"feed {self.symbol} delay", self.delay, allow_zero=True)
        _positive(f"feed {self.symbol} poll_interval", self.poll_interval)
        _positive(f"feed {self.symbol} idle_timeout", self.idle_timeout, allow_zero=True)


@dataclass(frozen=True)
class SignalSettings:
    """``signal`` (walk-forward): how fold models trade; stops follow ``labels`` by default."""

    min_confidence: float = 0.55
    sl_atr_mult: float = 1.5
    tp_atr_mult: float = 3.0
    confidence_sl_adjustment: float = 0.3
    atr_period: int = 14

    def __post_init__(self) -> None:
        if not 0 < self.min_confidence <= 1:
            raise ConfigError(f"signal.min_confidence={self.min_confidence!r} must be in (0, 1]")
        _positive("signal.sl_atr_mult", self.sl_atr_mult)
        _positive("signal.tp_atr_mult", self.tp_atr_mult)
        if not 0 <= self.confidence_sl_adjustment < 1:
            raise ConfigError(
                f"signal.confidence_sl_adjustment={self.confidence_sl_adjustment!r} must be in "
                "[0, 1)"
            )
        if self.atr_period < 2:
            raise ConfigError(f"signal.atr_period={self.atr_period!r} must be >= 2")


@dataclass(frozen=True)
class _TrainKeys:
    seed: int = 42
    register: bool | Literal["best", "all", "none"] = "best"
    promote: Literal["Production", "Staging", "Archived", "None"] | None = None
    optimized_metric: str = "val_balanced_accuracy"
    optimized_direction: Literal["maximize", "minimize"] = "maximize"
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("seed", self.seed, allow_zero=True)
        from trademl.validation import selection_metrics

        names = selection_metrics()
        if str(self.optimized_metric).startswith("test_"):
            raise ConfigError(
                f"optimized_metric={self.optimized_metric!r}: selecting on the test period makes "
                "its score look better than it is; select on validation with "
                f"optimized_metric={self.optimized_metric.replace('test_', 'val_', 1)} (the test "
                "period is scored once, for the selected model)"
            )
        if self.optimized_metric not in names:
            raise ConfigError(
                f"optimized_metric={self.optimized_metric!r} is not a metric of the training"
                f"{did_you_mean(self.optimized_metric, names)} (metrics: {', '.join(names)})"
            )
        lower_is_better = str(self.optimized_metric).endswith("log_loss")
        wanted = "minimize" if lower_is_better else "maximize"
        if self.optimized_direction != wanted:
            raise ConfigError(
                f"optimized_direction={self.optimized_direction} with optimized_metric="
                f"{self.optimized_metric}: {'lower' if lower_is_better else 'higher'} is "
                f"better, so a sweep would select (and register) the worst model; use "
                f"optimized_direction={wanted}"
            )


@dataclass(frozen=True)
class _RunKeys:
    seed: int = 42
    log_to_mlflow: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        _positive("seed", self.seed, allow_zero=True)


# -- the entrypoints ------------------------------------------------------------------------------
_TRAINING = ("data", "cleaning", "features", "labels", "split", "model", "evaluation", "mlflow")
_GROUPS = {
    "train": (*_TRAINING, "tune"),
    "walkforward": (*_TRAINING, "risk", "backtest", "signal"),
    "backtest": ("data", "cleaning", "strategy", "risk", "backtest", "mlflow"),
    "live": ("risk", "backtest", "mlflow", "live_strategy", "feeds", "live", "broker"),
    "server": ("mlflow", "server"),
}
_PLAIN = {
    "evaluation": EvaluationSettings,
    "backtest": BacktestSettings,
    "live": LiveSettings,
    "broker": BrokerSettings,
    "signal": SignalSettings,
    "tune": TuneSettings,
}
_BLOCKED = {"trademl.synthetic.generate_ohlcv": ("return_regime",)}


def validate_config(cfg: DictConfig, entry: str) -> dict[str, Any]:
    """Check every group of a composed config; return the built objects by group name.

    Raises
    ------
    ConfigError
        One line naming the key and the allowed values (nothing has run yet).
    DataError
        A data or feed file that does not exist (checked, not read).
    """
    if entry not in _GROUPS:
        raise ValueError(f"unknown entrypoint {entry!r}")
    try:
        return _validate(cfg, entry)
    except OmegaConfBaseException as exc:  # an interpolation that does not resolve, ...
        key = getattr(exc, "full_key", "") or "the config"
        text = " ".join(str(exc).split("\n")[0].split())
        raise ConfigError(f"{key}: {text}") from None


def _validate(cfg: DictConfig, entry: str) -> dict[str, Any]:
    _check_missing(cfg)
    built: dict[str, Any] = {}
    top_cls = _TrainKeys if entry in ("train", "walkforward") else _RunKeys
    groups = {"strategy" if g == "live_strategy" else g for g in _GROUPS[entry]}
    allowed = {*groups, *_field_names(top_cls), "hydra"}
    if entry == "walkforward":
        allowed.add("tune")  # composed from train.yaml; walk-forward does not tune
    for key in cfg:
        if key not in allowed:
            raise unknown_key_error("", str(key), sorted(allowed - {"hydra"}))
    _build_plain("", {k: cfg[k] for k in _field_names(top_cls) if k in cfg}, top_cls)
    for group in _GROUPS[entry]:
        if group == "live_strategy":
            built["strategy"] = _live_strategy(cfg.strategy, built["mlflow"].tracking_uri)
        elif group == "feeds":
            built["feeds"] = _feeds(cfg.feeds)
        elif group == "server":  # trademl.tracking imports MLflow: only for this entrypoint
            from trademl.tracking.server import ServerSettings

            built[group] = _build_plain(group, _container(cfg[group]), ServerSettings)
        elif group in _PLAIN:
            built[group] = _build_plain(group, _container(cfg[group]), _PLAIN[group])
        elif group == "model":
            built[group] = _model(cfg[group])
        else:
            built[group] = _target_node(group, cfg[group])
    _cross_checks(cfg, entry, built)
    return built


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _container(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _check_missing(cfg: DictConfig, prefix: str = "") -> None:
    """A mandatory value (``???``) left unset is named with an example of how to set it."""
    for key in cfg if isinstance(cfg, DictConfig) else range(len(cfg)):
        full = f"{prefix}{key}"
        if key == "hydra":
            continue
        if OmegaConf.is_missing(cfg, key):
            raise ConfigError(
                f"{full} is required: give it on the command line, e.g. {full}=candles.csv"
            )
        child = cfg._get_node(key)
        if isinstance(child, DictConfig | ListConfig):
            _check_missing(child, f"{full}.")


def _build_plain(group: str, values: Any, cls: type) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{group}={values!r} must be a mapping of keys")
    values = {k: _container(v) for k, v in values.items()}
    check_mapping(group, values, cls)
    return cls(**values)


def _target_node(group: str, node: DictConfig) -> Any:
    """A ``_target_`` group: keys and types from the target's signature, then built."""
    from trademl._hydra import instantiate_node

    values = _container(node)
    target_path = values.pop("_target_", None)
    if group == "data" and target_path is None and values == {"from_model": True}:
        return None  # data=model: the model's own data, resolved once the model is loaded
    if target_path is None:
        raise ConfigError(f"{group} has no _target_; choose an option of the {group} group")
    target = _import(group, target_path)
    check_mapping(group, values, target, blocked=_BLOCKED.get(target_path, ()))
    if target_path == "trademl.data.load_ohlcv_data":
        path = Path(str(values["path"]))
        if not path.exists():
            raise DataError(f"data.path={values['path']}: file not found")
        return None  # the data is loaded by the entrypoint, after MLflow is set up
    if target_path == "trademl.synthetic.generate_ohlcv":
        return None
    return instantiate_node(node, group)


def _import(group: str, path: str) -> Any:
    import importlib

    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{group}._target_={path!r} cannot be imported ({exc})") from None


def _model(node: DictConfig) -> Any:
    """The model spec; its estimator's parameters are checked as scikit-learn would at fit
    time (and against the defaults' types for other libraries), without fitting."""
    from trademl._hydra import instantiate_node

    values = _container(node)
    values.pop("_target_", None)
    for key in ("name", "estimator", "registered_name"):
        if not isinstance(values.get(key), str):
            raise ConfigError(f"model.{key} must be a string")
    spec = instantiate_node(node, "model")
    spec.validate_params()
    return spec


def _live_strategy(node: DictConfig, tracking_uri: str | None) -> Any:
    from trademl.live.app import STRATEGY_TYPES, build_strategy

    values = _container(node)
    if "_target_" not in values:
        check_mapping("strategy", values, lambda type, params=None: None)
        kind = values.get("type")
        if kind not in STRATEGY_TYPES:
            raise ConfigError(
                f"strategy.type={kind!r} is not valid; choose one of {', '.join(STRATEGY_TYPES)}"
                f"{did_you_mean(str(kind), list(STRATEGY_TYPES))}"
            )
        params = values.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"strategy.params={params!r} must be a mapping or null")
        check_mapping("strategy.params", params, STRATEGY_TYPES[kind])
    return build_strategy(node, tracking_uri)


def _feeds(node: ListConfig) -> list[FeedSettings]:
    from trademl.live.app import FEED_TYPES

    values = _container(node)
    if not isinstance(values, list) or not values:
        raise ConfigError("feeds must be a list of at least one {symbol, type, path}")
    feeds = []
    for i, feed in enumerate(values):
        if not isinstance(feed, Mapping):
            raise ConfigError(f"feeds.{i} must be a mapping {{symbol, type, path, ...}}")
        if feed.get("type") == "ccxt":  # its own keys; markets are checked when it is built
            feeds.append(_ccxt_feed(i, feed))
            continue
        check_mapping(f"feeds.{i}", feed, FeedSettings)
        settings = FeedSettings(**feed)
        if settings.type not in FEED_TYPES and "." not in settings.type:
            raise ConfigError(
                f"feeds.{i}.type={settings.type!r} is neither "
                f"{', '.join(FEED_TYPES)} nor the import path of a Feed class"
                f"{did_you_mean(settings.type, list(FEED_TYPES))}"
            )
        if settings.type in FEED_TYPES:
            if settings.path is None:
                raise ConfigError(f"feeds.{i}.path is required: e.g. feeds.{i}.path=candles.csv")
            if not Path(settings.path).exists():
                raise DataError(f"feeds.{i}.path={settings.path}: file not found")
        feeds.append(settings)
    symbols = [f.symbol for f in feeds]
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"feeds: symbols must be unique, got {symbols}")
    return feeds


def _ccxt_feed(i: int, feed: Mapping[str, Any]) -> FeedSettings:
    """``feeds.N.type: ccxt``: the keys of :class:`~trademl.live.ccxt_feed.CcxtFeed`, a known
    exchange id and a parseable timeframe (no network: the markets are checked on building)."""
    from trademl.live.ccxt_feed import CcxtFeed, check_settings

    keys = {k: v for k, v in feed.items() if k != "type" and (k != "path" or v is not None)}
    check_mapping(f"feeds.{i}", keys, CcxtFeed)
    names = ("poll_interval", "warmup", "backoff", "max_backoff", "since", "stream")
    check_settings(
        keys["symbol"],
        keys["exchange"],
        keys.get("timeframe", "1h"),
        **{k: keys[k] for k in names if k in keys},
    )
    return FeedSettings(symbol=keys["symbol"], type="ccxt")


def _cross_checks(cfg: DictConfig, entry: str, built: dict[str, Any]) -> None:
    """Rules between groups."""
    if entry == "live":
        _real_money(built["live"], built["broker"], built["feeds"])
    if "split" in built and "labels" in built:
        built["split"].purge_for(built["labels"].horizon)
    bt = built.get("backtest")
    if bt is not None and bt.start not in (None, "auto") and bt.end is not None:
        import pandas as pd

        if pd.Timestamp(bt.start) >= pd.Timestamp(bt.end):
            raise ConfigError(f"backtest.start={bt.start} must be before backtest.end={bt.end}")
    if bt is not None and entry != "backtest" and bt.symbols is not None:
        raise ConfigError(
            f"backtest.symbols is for trademl backtest; trademl {entry} does not read it "
            + ("(it trades its feeds)" if entry == "live" else "(it trades its data)")
        )
    if bt is not None and entry == "walkforward" and bt.portfolio != "per_symbol":
        raise ConfigError(
            "backtest.portfolio is for trademl backtest; walkforward trades one symbol"
        )
    if entry == "live" and bt.portfolio != "per_symbol" and bt.portfolio != cfg.live.portfolio:
        raise ConfigError(
            f"backtest.portfolio={bt.portfolio} is the backtest's key; trademl live reads "
            f"live.portfolio (now {cfg.live.portfolio}): set live.portfolio={bt.portfolio}"
        )
    if entry == "backtest" and bt.symbols is not None and not cfg.data.get("from_model"):
        raise ConfigError(
            "give the candles either as data (data.path=...) or as backtest.symbols, not both"
        )


def _real_money(live: LiveSettings, broker: BrokerSettings, feeds: list[FeedSettings]) -> None:
    """Orders on an exchange only when asked for twice: ``live.mode=real`` and
    ``live.confirm_real=true``; and only on the exchange's own candles."""
    if broker.type == "paper":
        if live.mode == "real":
            raise ConfigError(
                "live.mode=real with broker.type=paper: the paper broker sends no order; set "
                "broker.type=ccxt (and its exchange) to trade, or live.mode=paper"
            )
        return
    if live.mode != "real" or not live.confirm_real:
        raise ConfigError(
            f"broker.type=ccxt sends real orders to {broker.exchange}: set live.mode=real and "
            "live.confirm_real=true to trade with this account's money (or broker.type=paper "
            "to trade on paper)"
        )
    if live.portfolio != "per_symbol":
        raise ConfigError(
            f"live.portfolio={live.portfolio} with broker.type=ccxt: the exchange broker trades "
            "each symbol's own book (live.portfolio=per_symbol); a shared cash pool is paper "
            "only for now"
        )
    wrong = [f.symbol for f in feeds if f.type != "ccxt"]
    if wrong:
        raise ConfigError(
            f"broker.type=ccxt: feed(s) {', '.join(wrong)} are not ccxt feeds; orders fill at "
            "the exchange's prices, so decisions must be made on its candles (feeds.N.type=ccxt "
            f"on {broker.exchange})"
        )
