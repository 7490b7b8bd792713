"""``check_lookahead`` / ``trademl check lookahead``: planted leaks are found with their first
offending bar, the 49 built-in features and their causal twins are not flagged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from trademl.cli import main
from trademl.data import validate_ohlcv
from trademl.errors import ConfigError, DataError, TradeMLError
from trademl.features import build_feature_matrix, feature_names
from trademl.lookahead import _perturbed, check_lookahead
from trademl.strategies import ScalpingEMARSI
from trademl.synthetic import generate_ohlcv


def _log_return(df: pd.DataFrame) -> pd.Series:
    return np.log(df["close"]).diff()


def _gappy(df: pd.DataFrame) -> pd.Series:
    """Log returns, NaN where volume is below its trailing median: a causal NaN pattern."""
    volume = df["volume"]
    return _log_return(df).fillna(0.0).where(volume >= volume.rolling(10, min_periods=1).median())


# name -> (leaky feature, its causal twin, first offending bar at or after `start`)
LEAKS = {
    "next_return": (
        lambda df: df["close"].shift(-1) / df["close"] - 1,
        lambda df: df["close"] / df["close"].shift(1) - 1,
        lambda df, start: start,  # every bar but the last reads the next close
    ),
    "centred_mean": (
        lambda df: df["close"].rolling(5, center=True).mean() / df["close"],
        lambda df: df["close"].rolling(5).mean() / df["close"],
        lambda df, start: max(start, 2),  # first value: bars 0..4 around bar 2
    ),
    "zscore": (
        lambda df: (_log_return(df) - _log_return(df).mean()) / _log_return(df).std(),
        lambda df: (
            (_log_return(df) - _log_return(df).expanding().mean())
            / _log_return(df).expanding().std()
        ),
        lambda df, start: max(start, 1),  # first log return is at bar 1
    ),
    "bfilled": (
        lambda df: _gappy(df).bfill(),
        lambda df: _gappy(df).ffill(),
        lambda df, start: next(  # first gap with a later value to fill it from
            t
            for t, (gap, later) in enumerate(
                zip(
                    _gappy(df).isna(),
                    _gappy(df)[::-1].notna().cummax()[::-1].shift(-1, fill_value=False),
                    strict=True,
                )
            )
            if t >= start and gap and later
        ),
    ),
    "resampled_4h": (
        lambda df: (
            df["close"]
            .resample("4h", label="left", closed="left")
            .last()
            .reindex(df.index, method="ffill")
            / df["close"]
        ),
        lambda df: (
            df["close"]
            .resample("4h", label="right", closed="right")
            .last()
            .reindex(df.index, method="ffill")
            / df["close"]
        ),
        lambda df, start: next(  # first bar that is not the last hour of its 4h bucket
            t for t in range(start, len(df)) if df.index[t].hour % 4 != 3
        ),
    ),
    "label_3_bars": (  # next-3-bar return joined 2 bars back instead of 3
        lambda df: (df["close"].shift(-3) / df["close"] - 1).shift(2),
        lambda df: (df["close"].shift(-3) / df["close"] - 1).shift(3),
        lambda df, start: max(start, 2),  # bar 2: close[3] / close[0]
    ),
}


@pytest.fixture(scope="module")
def offset_candles() -> pd.DataFrame:
    """Starting at 03:00, so the 4h bucket's first bar is not the first bar."""
    return generate_ohlcv(300, seed=5, start="2024-01-01 03:00")


@pytest.mark.parametrize("seed", [3, 11])
def test_the_49_builtin_features_are_clean(seed):
    report = check_lookahead(build_feature_matrix, generate_ohlcv(1500, seed=seed), seed=seed)
    assert report.clean, report.summary()
    assert report.checked == feature_names() and len(report.checked) == 49
    assert report.warmup == 51  # 50 warm-up bars plus one: found by trying
    assert len(report.cuts) >= 40 and report.cuts[0] == 51 and report.cuts[-1] == 1499


@pytest.mark.parametrize("name", list(LEAKS))
def test_each_planted_leak_is_flagged_at_its_first_offending_bar(name, offset_candles):
    leaky, causal, first = LEAKS[name]

    def features(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({name: leaky(df), f"{name}_causal": causal(df)})

    report = check_lookahead(features, offset_candles, cuts=20)
    assert not report.clean
    assert [f.column for f in report.columns] == [name], report.summary()
    finding = report.columns[0]
    expected = first(offset_candles, 0)
    assert finding.position == expected
    assert finding.timestamp == offset_candles.index[expected]
    assert finding.exact and finding.cut > expected
    assert "prefix" in finding.evidence


def test_only_the_leaky_columns_of_a_mixed_frame_are_flagged():
    candles = generate_ohlcv(1000, seed=2)

    def features(df: pd.DataFrame) -> pd.DataFrame:
        X = build_feature_matrix(df)
        for name, (leaky, causal, _) in LEAKS.items():
            X[name], X[f"{name}_causal"] = leaky(df), causal(df)
        return X

    report = check_lookahead(features, candles, cuts=20)
    assert len(report.checked) == 49 + 2 * len(LEAKS)
    found = {f.column: f for f in report.columns}
    assert set(found) == set(LEAKS), report.summary()
    for name, (_, _, first) in LEAKS.items():
        assert found[name].position == first(candles, 50), name  # rows start after warm-up
    assert found["bfilled"].position > 50  # the gaps, not the warm-up edge
    assert {"prefix", "walk", "mirror"} <= set(found["next_return"].evidence)
    assert "LOOK-AHEAD in 6 column(s)" in report.summary()
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["clean"] is False
    assert as_json["columns"][0]["timestamp"] == str(found["next_return"].timestamp)


def test_rows_and_columns_that_depend_on_the_future_are_reported(offset_candles):
    def dropped(df: pd.DataFrame) -> pd.Series:  # shift(-1) then dropna: the last row vanishes
        return (df["close"].shift(-1) / df["close"]).dropna().rename("next_ratio")

    report = check_lookahead(dropped, offset_candles)
    found = {f.column: f for f in report.columns}
    assert found["<rows>"].position == 0 and found["next_ratio"].position == 0
    assert "missing from the output with the future removed" in found["<rows>"].detail

    def grows(df: pd.DataFrame) -> pd.DataFrame:  # a column only once enough data is seen
        out = pd.DataFrame({"ret": _log_return(df)})
        if len(df) > 200:
            out["late"] = 1.0
        return out

    report = check_lookahead(grows, offset_candles)
    assert [(f.column, f.position, f.evidence) for f in report.columns] == [
        ("late", None, ["columns"])
    ]
    assert "column set changed" in report.summary()


def test_one_row_per_candle_without_timestamps_is_placed_by_position(offset_candles):
    def positional(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"next": df["close"].shift(-1).to_numpy(), "now": df["close"].values})

    report = check_lookahead(positional, offset_candles)
    assert [(f.column, f.position) for f in report.columns] == [("next", 0)]

    def unplaceable(df: pd.DataFrame) -> pd.Series:
        return df["close"].reset_index(drop=True).iloc[1:]

    with pytest.raises(ConfigError, match="neither the candles' timestamps nor one row per"):
        check_lookahead(unplaceable, offset_candles)


@pytest.mark.parametrize("kind", ["walk", "mirror"])
def test_perturbed_futures_are_valid_candles_that_differ_from_bar_c_on(kind, offset_candles):
    c = 150
    df = _perturbed(offset_candles, c, kind, np.random.default_rng(0))
    validate_ohlcv(df)
    pd.testing.assert_frame_equal(df.iloc[:c], offset_candles.iloc[:c])
    assert (df.iloc[c:].to_numpy() != offset_candles.iloc[c:].to_numpy()).all()


def test_tolerance_and_seeding(offset_candles):
    def noisy(df: pd.DataFrame) -> pd.Series:  # rounding noise that depends on the length
        return df["close"] * (1 + 1e-13 * len(df))

    assert check_lookahead(noisy, offset_candles, cuts=20).clean
    assert not check_lookahead(noisy, offset_candles, cuts=20, tol=0).clean

    def unseeded(df: pd.DataFrame) -> pd.Series:
        return df["close"] + np.random.default_rng().normal(size=len(df))

    assert check_lookahead(unseeded, offset_candles, cuts=5).columns[0].position == 0


def test_bad_targets_and_failures_are_one_clear_error(offset_candles):
    def fails_late(df: pd.DataFrame) -> pd.Series:
        if 100 < len(df) < len(offset_candles):
            raise ValueError("boom\nsecond line")
        return df["close"]

    with pytest.raises(TradeMLError, match=r"fails_late raised on the first \d+ bars .*: "
                       r"ValueError: boom second line"):  # fmt: skip
        check_lookahead(fails_late, offset_candles)
    with pytest.raises(TradeMLError, match="raised on all bars: KeyError"):
        check_lookahead(lambda df: df["nope"], offset_candles)
    with pytest.raises(ConfigError, match="returned ndarray; return a pandas DataFrame"):
        check_lookahead(lambda df: df["close"].to_numpy(), offset_candles)
    with pytest.raises(ConfigError, match="is a class"):
        check_lookahead(ScalpingEMARSI, offset_candles)
    with pytest.raises(ConfigError, match="not callable"):
        check_lookahead(42, offset_candles)
    with pytest.raises(ConfigError, match="unknown perturbation"):
        check_lookahead(_log_return, offset_candles, perturbations=("shuffle",))
    with pytest.raises(DataError, match="missing column"):
        check_lookahead(_log_return, offset_candles.drop(columns="volume"))
    with pytest.raises(ConfigError, match="need cuts >= 1"):
        check_lookahead(_log_return, offset_candles, cuts=0)

    def whole_only(df: pd.DataFrame) -> pd.Series:
        if len(df) < len(offset_candles):
            raise ValueError("give me everything")
        return df["close"]

    with pytest.raises(TradeMLError, match=r"no shorter prefix \(on the first 299 bars: "):
        check_lookahead(whole_only, offset_candles)


def test_progress_is_reported_per_cut(offset_candles):
    seen: list[tuple[int, int]] = []
    report = check_lookahead(
        LEAKS["next_return"][1], offset_candles, cuts=10, progress=lambda *a: seen.append(a)
    )
    assert [d for d, _ in seen] == list(range(1, len(report.cuts) + 1))
    assert seen[-1] == (len(report.cuts), len(report.cuts))


class _Peeking(ScalpingEMARSI):
    """Goes long when the next close is higher."""

    def _signals(self, df: pd.DataFrame) -> pd.DataFrame:
        out = super()._signals(df)
        out["side"] = np.sign(df["close"].shift(-1) - df["close"]).fillna(0).to_numpy()
        return out


class _FirstFit(ScalpingEMARSI):
    """Scales its confidence by the mean ATR of the first frame it is given (in a backtest:
    the whole history), and keeps that scale."""

    scale: float | None = None

    def _signals(self, df: pd.DataFrame) -> pd.DataFrame:
        out = super()._signals(df)
        if self.scale is None:
            self.scale = float(out["atr"].mean())
        out["confidence"] = out["atr"] / self.scale
        return out


class _LiveDiffers(ScalpingEMARSI):
    """Its live signal is not the backtest's."""

    def _latest(self, df: pd.DataFrame) -> pd.Series:
        row = super()._latest(df).copy()
        row["side"] = 1
        return row


def test_strategies_batch_and_live_signal():
    candles = generate_ohlcv(300, seed=4)
    clean = check_lookahead(ScalpingEMARSI(), candles)
    assert clean.clean and clean.checked[0] == "side"

    found = {f.column: f for f in check_lookahead(_Peeking(), candles).columns}
    assert set(found) == {"side", "generate_signal"}
    assert found["side"].position == ScalpingEMARSI().min_bars - 1  # the first bar it accepts

    found = {f.column: f for f in check_lookahead(_FirstFit(), candles).columns}
    assert set(found) == {"confidence", "generate_signal"}  # fresh copies: scale differs
    assert found["confidence"].evidence[0] == "prefix"

    found = {f.column: f for f in check_lookahead(_LiveDiffers(), candles).columns}
    assert [(c, f.evidence) for c, f in found.items()] == [("generate_signal", ["signal"])]


def test_cli_import_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "feats_bad.py").write_text("VALUE = 1\ndef build(df):\n    return df\n")
    monkeypatch.delitem(sys.modules, "feats_bad", raising=False)
    cases = {
        "no_such_module:f": "no module named 'no_such_module'",
        "feats_bad:nope": "feats_bad has no attribute 'nope' (it has build)",
        "feats_bad:VALUE": "feats_bad:VALUE is a int, not a function",
        "feats_bad": "expected module:function",
        "feats_bad:build --strategy": "is not a strategy",
    }
    for args, message in cases.items():
        assert main(["check", "lookahead", *args.split(), "--rows", "60"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    # a strategy class is instantiated without arguments and checked
    assert main(["check", "lookahead", "trademl.strategies:ScalpingEMARSI", "--rows", "200"]) == 0
    out = capsys.readouterr().out
    assert "of trademl.strategies:ScalpingEMARSI: 6 column(s) on 200 bars" in out


def _cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trademl.cli", "check", "lookahead", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_end_to_end(tmp_path):
    (tmp_path / "myfeatures.py").write_text(
        textwrap.dedent(
            """
            import pandas as pd

            def leaky(df):
                ret = df["close"].pct_change()
                return pd.DataFrame({"ret": ret, "ret_next": ret.shift(-1)})

            def clean(df):
                return df["close"].pct_change().rename("ret").to_frame()
            """
        )
    )
    generate_ohlcv(300, seed=1).to_csv(tmp_path / "candles.csv", index_label="timestamp")
    proc = _cli(tmp_path, "myfeatures:leaky", "--data", "candles.csv")
    assert proc.returncode == 1, proc.stderr
    assert "LOOK-AHEAD in 1 column(s)" in proc.stdout
    assert "ret_next: first offending bar 0 " in proc.stdout  # bar 0 holds the return of bar 1

    proc = _cli(tmp_path, "myfeatures:clean", "--data", "candles.csv", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["clean"] is True and report["checked"] == ["ret"]
    assert report["data"] == "candles.csv" and report["bars"] == 300

    proc = _cli(tmp_path, "myfeatures:missing")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "has no attribute 'missing'" in proc.stderr
