"""trademl: from OHLCV candles to tracked, registered, backtested trading models."""

from trademl.cleaning import CleaningConfig, CleaningReport, clean_ohlcv_data
from trademl.data import OHLCV_COLUMNS, load_ohlcv_data, validate_ohlcv
from trademl.errors import (
    ConfigError,
    DataError,
    InsufficientDataError,
    ModelError,
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
from trademl.splits import SplitConfig, split_train_test, walk_forward_folds
from trademl.synthetic import generate_ohlcv

__version__ = "0.1.0"

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
    "LabelConfig",
    "ModelError",
    "PreparedData",
    "SplitConfig",
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
    "split_train_test",
    "validate_ohlcv",
    "walk_forward_folds",
]
