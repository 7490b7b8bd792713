"""Typed configs: every bad value is one error naming the key and what is allowed, raised
before MLflow or any data is touched; misspelt keys get a suggestion, moved keys say where."""

from __future__ import annotations

import pytest

from trademl import ConfigError, DataError
from trademl._hydra import compose_config
from trademl.backtest_run import run_backtest
from trademl.live.app import build_runtime
from trademl.schemas import validate_config
from trademl.train import train
from trademl.walkforward import walk_forward

ENTRIES = {"train": train, "backtest": run_backtest, "walkforward": walk_forward}


@pytest.fixture
def untouched(tmp_path, monkeypatch):
    """A working directory and a data file that must stay untouched: a CSV that fails to load
    (so reading it would raise a DataError instead of the ConfigError expected), no store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bad = tmp_path / "unreadable.csv"
    bad.write_text("timestamp,open,high,low,close,volume\nnot a time,x,x,x,x,x\n")
    yield bad
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()
    assert not (tmp_path / "live_journal.db").exists()


@pytest.mark.parametrize(
    ("entry", "overrides", "message"),
    [
        ("train", ["model.n_estimators=abc"], r"model.n_estimators='abc' must be an int in the"),
        ("train", ["model.max_depth=-1"], r"model.max_depth=-1 must be an int in the range \[1"),
        ("train", ["model=lightgbm", "model.num_leaves=many"], r"model.num_leaves='many' must"),
        ("train", ["features.ema_periods=[9,5]"], r"features.ema_periods=\[9, 5\] must be strict"),
        ("train", ["+model.n_estimator=5"], r"model.n_estimator .*did you mean 'n_estimators'"),
        ("train", ["+sed=3"], r"sed is not a key .*did you mean 'seed'"),
        ("train", ["evaluation.permutation_repeats=-1"], r"permutation_repeats=-1 must be >= 0"),
        ("train", ["promote=Prod"], r"promote='Prod' must be one of Production"),
        ("train", ["labels.horizon=0"], r"labels.horizon=0 must be an integer >= 1"),
        ("train", ["split.train_ratio=abc"], r"split.train_ratio='abc' must be a number"),
        ("train", ["cleaning.outliers=clamp"], r"cleaning.outliers='clamp' is not valid; choose"),
        ("train", ["mlflow.http_timeout=abc"], r"mlflow.http_timeout='abc' must be an integer"),
        ("train", ["+data.return_regime=true"], r"data.return_regime is not a key of data"),
        ("backtest", ["backtest.on_opposite=flip"], r"on_opposite='flip' must be one of reverse"),
        ("backtest", ["backtest.fees_bps=-50"], r"backtest.fees_bps=-50 must be in \[0, 1000\)"),
        ("backtest", ["backtest.start=someday"], r"backtest.start='someday' is not a timestamp"),
        ("backtest", ["+strategy.base_sl_atr_mult=2"], r"was renamed strategy.sl_atr_mult"),
        ("backtest", ["+risk.fee_bps=5"], r"risk.fee_bps was removed: the one fee is backtest"),
        ("walkforward", ["signal.min_confidence=0"], r"signal.min_confidence=0 must be in \(0"),
        ("train", ["optimized_metric=val_balanced_acc"], r"did you mean 'val_balanced_accur"),
        ("train", ["optimized_metric=test_ic"], r"selecting on the test period .*=val_ic"),
        ("train", ["labels.horizon=${nope}"], r"labels.horizon: Interpolation key 'nope' not"),
        ("train", ["model=lightgbm", "+model.n_estimatorz=5"], r"did you mean 'n_estimators'"),
        ("train", ["model=lightgbm", "model.learning_rate=-1"], r"\(learning_rate\) > \(0.0\)"),
        ("train", ["model=lightgbm", "model.subsample=5.0"], r"refuses its parameters"),
        (
            "train",
            ["model=logistic_regression", "model.estimator=sklearn.naive_bayes.GaussianNB"],
            r"GaussianNB' has no reviewed skops trusted types",
        ),
    ],
)
def test_bad_values_fail_before_anything_runs(untouched, entry, overrides, message):
    on_file = not any(o.startswith("+data.") for o in overrides)
    data = ["data=csv", f"data.path={untouched}"] if on_file else []
    cfg = compose_config([*overrides, *data], config_name=entry)
    with pytest.raises(ConfigError, match=message):
        ENTRIES[entry](cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["live.window=-5"], r"live.window=-5 must be an integer >= 2"),
        (["backtest.fees_bps=-50"], r"backtest.fees_bps=-50 must be in \[0, 1000\)"),
        (["backtest.cash=-1000"], r"backtest.cash=-1000 must be > 0"),
        (["strategy.type=scalp"], r"strategy.type='scalp' is not valid; choose one of ml_strat"),
        (["+strategy.params.min_confidenc=0.5"], r"did you mean 'min_confidence'"),
        (["+feeds.0.speeed=2"], r"feeds.0.speeed is not a key .*did you mean 'speed'"),
        (["strategy.params.min_confidence=2"], r"min_confidence=2 must be in \(0, 1\]"),
        (["feeds.0.type=bogus"], r"feeds.0.type='bogus' is neither replay, follow"),
    ],
)
def test_live_settings_are_checked_before_the_journal_and_mlflow(untouched, overrides, message):
    cfg = compose_config([f"feeds.0.path={untouched}", *overrides], config_name="live")
    with pytest.raises(ConfigError, match=message):
        build_runtime(cfg)


def test_missing_values_and_files_are_named(untouched, tmp_path):
    with pytest.raises(ConfigError, match=r"feeds.0.path is required: .* feeds.0.path=candles"):
        build_runtime(compose_config([], config_name="live"))
    with pytest.raises(DataError, match=r"feeds.0.path=nope.csv: file not found"):
        build_runtime(compose_config(["feeds.0.path=nope.csv"], config_name="live"))
    with pytest.raises(DataError, match=r"data.path=nope.csv: file not found"):
        train(compose_config(["data=csv", "data.path=nope.csv"]))
    with pytest.raises(ConfigError, match=r"data.path is required"):
        train(compose_config(["data=csv"]))


def test_a_missing_store_is_named_and_not_created_by_a_backtest(untouched, tmp_path):
    """`trademl backtest model=...` in a directory without a store: the model lookup comes
    first and says there is no store, instead of creating an empty one to search."""
    from trademl import TrackingError

    cfg = compose_config(
        ["strategy.model_uri=models:/baseline_rf/Production", "data=csv", f"data.path={untouched}"],
        config_name="backtest",
    )
    with pytest.raises(TrackingError, match=rf"no MLflow store at {tmp_path}/mlflow.db"):
        run_backtest(cfg)


def test_the_quick_experiment_works_with_file_data(untouched):
    """`experiment=quick data=csv` was a TypeError (the preset set data.n, a synthetic key)."""
    cfg = compose_config(["experiment=quick", "data=csv", f"data.path={untouched}"])
    validate_config(cfg, "train")
    assert cfg.model.n_estimators == 30 and "n" not in cfg.data


def test_stop_and_target_names_come_from_the_labels(untouched):
    """One set of names, one place: walk-forward signals use the labels' stops and target."""
    cfg = compose_config(
        ["labels=triple_barrier", "labels.sl_atr_mult=2", "labels.tp_atr_mult=4"],
        config_name="walkforward",
    )
    signal = validate_config(cfg, "walkforward")["signal"]
    assert (signal.sl_atr_mult, signal.tp_atr_mult) == (2, 4)
    strategy = compose_config([], config_name="backtest").strategy
    assert {"sl_atr_mult", "tp_atr_mult"} <= set(strategy)
    scalping = compose_config(["strategy=scalping_ema_rsi"], config_name="backtest").strategy
    assert {"sl_atr_mult", "tp_atr_mult"} <= set(scalping)


def test_misspelt_override_on_the_command_line_is_one_line_with_a_suggestion(
    tmp_path, monkeypatch, capsys
):
    from trademl.cli import main as cli

    monkeypatch.chdir(tmp_path)
    for args, expected in [
        (["train", "model.n_estimator=5"], "did you mean 'model.n_estimators'?"),
        (["backtest", "risk.fee_bps=5"], "risk.fee_bps was removed: the one fee is backtest"),
        (["live", "feeds.0.path=x.csv", "live.windw=5"], "did you mean 'live.window'?"),
        (["train", "model.max_depth=-1"], "model.max_depth=-1 must be an int in the range"),
    ]:
        assert cli(args) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("trademl: error:") and expected in lines[0], lines[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_the_default_feed_becomes_a_ccxt_feed_on_the_command_line():
    # no network: the exchange's markets are checked when the feed is built, not here
    overrides = [
        "feeds.0.type=ccxt",
        "feeds.0.symbol=BTC/USDT",
        "+feeds.0.exchange=binance",
        "+feeds.0.timeframe=1h",
    ]
    (feed,) = validate_config(compose_config(overrides, config_name="live"), "live")["feeds"]
    assert (feed.type, feed.symbol, feed.path) == ("ccxt", "BTC/USDT", None)
