"""trademl: from OHLCV candles to tracked, registered, backtested trading models."""

from trademl.cleaning import CleaningConfig, CleaningReport, clean_ohlcv_data
from trademl.data import OHLCV_COLUMNS, load_ohlcv_data, validate_ohlcv
from trademl.errors import (
    ConfigError,
    DataError,
    InsufficientDataError,
    JournalLockedError,
    ModelError,
    TrackingError,
    TradeMLError,
)
from trademl.features import (
    FeatureConfig,
    build_feature_matrix,
    feature_catalogue,
    feature_names,
)
from trademl.labels import LABEL_TO_INT, LABELS, LabelConfig, align_data_for_training
from trademl.prepare import PreparedData, prepare_data_for_ml
from trademl.splits import SplitConfig, purged_cv_splits, split_train_test, walk_forward_folds
from trademl.synthetic import generate_ohlcv

__version__ = "0.1.0"

# Training, registry, strategies, risk and backtests import MLflow, scikit-learn and numba:
# they load on first use so that `import trademl` (and the CLI) stays fast.
_LAZY = {
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
    "LABELS",
    "LABEL_TO_INT",
    "OHLCV_COLUMNS",
    "CleaningConfig",
    "CleaningReport",
    "ConfigError",
    "DataError",
    "FeatureConfig",
    "InsufficientDataError",
    "JournalLockedError",
    "LabelConfig",
    "ModelError",
    "PreparedData",
    "SplitConfig",
    "TrackingError",
    "TradeMLError",
    "__version__",
    "align_data_for_training",
    "build_feature_matrix",
    "clean_ohlcv_data",
    "feature_catalogue",
    "feature_names",
    "generate_ohlcv",
    "load_ohlcv_data",
    "prepare_data_for_ml",
    "purged_cv_splits",
    "split_train_test",
    "validate_ohlcv",
    "walk_forward_folds",
    *_LAZY,
]
