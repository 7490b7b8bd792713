"""trademl: from OHLCV candles to tracked, registered, backtested trading models."""

from trademl.errors import (
    ConfigError,
    DataError,
    InsufficientDataError,
    JournalLockedError,
    ModelError,
    TrackingError,
    TradeMLError,
)

__version__ = "0.1.0"

# Every name but the errors loads on first use, so that `import trademl` and `trademl --help`
# import neither pandas nor (for training, registry, strategies, risk and backtests) MLflow,
# scikit-learn, matplotlib or numba.
_LAZY = {
    "CleaningConfig": "trademl.cleaning",
    "CleaningReport": "trademl.cleaning",
    "clean_ohlcv_data": "trademl.cleaning",
    "OHLCV_COLUMNS": "trademl.data",
    "load_ohlcv_data": "trademl.data",
    "validate_ohlcv": "trademl.data",
    "FeatureConfig": "trademl.features",
    "build_feature_matrix": "trademl.features",
    "feature_catalogue": "trademl.features",
    "feature_names": "trademl.features",
    "LABEL_TO_INT": "trademl.labels",
    "LABELS": "trademl.labels",
    "LabelConfig": "trademl.labels",
    "align_data_for_training": "trademl.labels",
    "PreparedData": "trademl.prepare",
    "prepare_data_for_ml": "trademl.prepare",
    "SplitConfig": "trademl.splits",
    "purged_cv_splits": "trademl.splits",
    "split_train_test": "trademl.splits",
    "walk_forward_folds": "trademl.splits",
    "generate_ohlcv": "trademl.synthetic",
    "train": "trademl.train",
    "train_pipeline": "trademl.train",
    "compose_config": "trademl._hydra",
    "load_model": "trademl.registry",
    "promote_model": "trademl.registry",
    "list_models": "trademl.registry",
    "predict_signal": "trademl.inference",
    "calculate_signal_strength": "trademl.inference",
    "MLStrategy": "trademl.strategies",
    "ScalpingEMARSI": "trademl.strategies",
    "RiskEngine": "trademl.risk",
    "RiskConfig": "trademl.risk",
    "Backtest": "trademl.backtest",
    "PortfolioBacktest": "trademl.portfolio",
    "check_lookahead": "trademl.lookahead",
    "LookaheadReport": "trademl.lookahead",
    "compute_safeguards": "trademl.safeguards",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trademl' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "DataError",
    "InsufficientDataError",
    "JournalLockedError",
    "ModelError",
    "TrackingError",
    "TradeMLError",
    "__version__",
    *_LAZY,
]
