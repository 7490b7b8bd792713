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
from trademl.synthetic import generate_ohlcv

__version__ = "0.1.0"

__all__ = [
    "OHLCV_COLUMNS",
    "CleaningConfig",
    "CleaningReport",
    "ConfigError",
    "DataError",
    "FeatureConfig",
    "InsufficientDataError",
    "ModelError",
    "TradeMLError",
    "__version__",
    "build_feature_matrix",
    "clean_ohlcv_data",
    "feature_catalogue",
    "feature_names",
    "generate_ohlcv",
    "load_ohlcv_data",
    "validate_ohlcv",
]
