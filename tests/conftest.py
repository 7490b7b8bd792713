"""Shared fixtures: small synthetic candles and helpers to write candle files."""

from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trademl import generate_ohlcv

settings.register_profile(
    "trademl",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("trademl")


@pytest.fixture
def candles() -> pd.DataFrame:
    """1,500 hourly synthetic candles with the planted momentum effect."""
    return generate_ohlcv(1500, seed=7, momentum=0.3)


def write_csv(df: pd.DataFrame, path, **kwargs) -> str:
    df.to_csv(path, index_label="timestamp", **kwargs)
    return str(path)


_step = st.one_of(st.just(0.0), st.floats(1e-4, 0.05), st.floats(-0.05, -1e-4))


@st.composite
def ohlcv_frames(draw, min_rows: int = 52, max_rows: int = 140) -> pd.DataFrame:
    """Valid random candles, including flat stretches and zero volume."""
    n = draw(st.integers(min_rows, max_rows))
    rets = draw(arrays(np.float64, n, elements=_step))
    wick_up = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-4, 0.03))))
    wick_dn = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-4, 0.03))))
    gaps = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(-0.01, 0.01))))
    volume = draw(arrays(np.float64, n, elements=st.one_of(st.just(0.0), st.floats(1e-3, 1e6))))
    start = draw(st.floats(1e-2, 1e5))
    close = start * np.exp(np.cumsum(rets))
    open_ = np.concatenate(([start], close[:-1])) * np.exp(gaps)
    high = np.maximum(open_, close) * np.exp(wick_up)
    low = np.minimum(open_, close) * np.exp(-wick_dn)
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@pytest.fixture(autouse=True)
def _restore_mlflow_environment():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI; undo it."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _restore_logging():
    """A test that runs a Hydra app or the trademl command in this process may configure
    logging: a root handler on the stream pytest captured for that test (closed afterwards:
    later log records fail with "I/O operation on closed file"), a root level, or disabled
    loggers. Put back what was there."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = logging.Logger.manager.loggerDict
    disabled = {n: lg.disabled for n, lg in loggers.items() if isinstance(lg, logging.Logger)}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lg in list(loggers.items()):
        if isinstance(lg, logging.Logger):
            lg.disabled = disabled.get(name, False)


def client_for(store):
    """An MLflow client on the test store for both tracking and registry."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"])


@pytest.fixture
def store(tmp_path):
    """A private MLflow store (sqlite + artifact directory) under tmp_path."""
    return {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifacts": str(tmp_path / "mlruns")}


def fast_overrides(store, *extra: str) -> list[str]:
    """Overrides for small, fast, private trainings."""
    return [
        f"mlflow.tracking_uri={store['uri']}",
        f"mlflow.artifact_root={store['artifacts']}",
        "data.n=1200",
        "model.n_estimators=25",
        "evaluation.permutation_repeats=1",
        "progress=false",
        *extra,
    ]


@pytest.fixture
def compose():
    """Compose conf/train.yaml with overrides; Hydra's global state is cleared afterwards."""
    from hydra.core.global_hydra import GlobalHydra

    from trademl.train import compose_config

    GlobalHydra.instance().clear()
    yield compose_config
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def _trained_registry(tmp_path_factory):
    """The store of :func:`production_model`, trained once per test process (15 s)."""
    from hydra.core.global_hydra import GlobalHydra

    from trademl.train import compose_config, train

    tmp = tmp_path_factory.mktemp("registry-template")
    store = {"uri": f"sqlite:///{tmp}/mlflow.db", "artifacts": str(tmp / "mlruns")}
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    GlobalHydra.instance().clear()
    result = train(compose_config(fast_overrides(store, "data.n=2000", "promote=Production")))
    GlobalHydra.instance().clear()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return {"store": store, "result": result, "dir": tmp}


@pytest.fixture(scope="module")
def production_model(_trained_registry, tmp_path_factory):
    """A random forest trained on synthetic data, registered and promoted to Production: a
    copy per test module of a store trained once (a module may promote, alias or tamper
    with its copy freely), its paths moved to the copy's folder."""
    src = _trained_registry["dir"]
    tmp = tmp_path_factory.mktemp("registry")
    shutil.copytree(src / "mlruns", tmp / "mlruns")
    with sqlite3.connect(src / "mlflow.db") as source, sqlite3.connect(tmp / "mlflow.db") as db:
        source.backup(db)
        old, new = str(src), str(tmp)
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in db.execute(f'PRAGMA table_info("{table}")').fetchall():
                if "CHAR" in col[2].upper() or "TEXT" in col[2].upper():
                    db.execute(
                        f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                        f'WHERE instr("{col[1]}", ?) > 0',
                        (old, new, old),
                    )
    source.close()
    db.close()
    for path in (tmp / "mlruns").rglob("*"):  # MLmodel and config.yaml name the store too
        if path.is_file() and (path.name == "MLmodel" or path.suffix in (".yaml", ".json")):
            text = path.read_text()
            if old in text:
                path.write_text(text.replace(old, new))
    store = {"uri": f"sqlite:///{tmp}/mlflow.db", "artifacts": str(tmp / "mlruns")}
    return {"store": store, "result": _trained_registry["result"]}
