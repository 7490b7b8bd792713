"""Statistical safeguards beside every backtest: is the result better than luck and costs?

* **Random-signal baseline** (:func:`~trademl.safeguards_baselines.random_signal_baseline`):
  the strategy's trades, same number and lengths, at random times through the same engine;
  the p-value of the strategy's total return among them.
* **Always-FLAT** (return 0, Sharpe not defined) and **buy-and-hold** (``bh_*``) beside it.
* **Block-bootstrap confidence intervals** of the annualised Sharpe ratio and the total return
  (:func:`trademl.safeguards_stats.bootstrap_ci` on the strategy's per-bar returns, annualised
  with the report's own periods per year), and the probabilistic Sharpe ratio (PSR > 0).
* **Cost sensitivity** (:func:`~trademl.safeguards_baselines.cost_sensitivity`): the same
  signals at multiples of the configured fees and slippage.

Without trades there is nothing to compare: the baseline, intervals, PSR and cost table are
not available (NaN, ``n/a``), never 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from trademl.backtest import BacktestResult
from trademl.errors import ConfigError
from trademl.safeguards_baselines import (
    COST_MULTIPLIERS,
    RandomBaseline,
    cost_sensitivity,
    random_signal_baseline,
)
from trademl.safeguards_stats import (
    Interval,
    annualised_sharpe,
    bootstrap_ci,
    probabilistic_sharpe_ratio,
    return_moments,
    total_return,
)

if TYPE_CHECKING:
    from trademl.tracking import RunRecorder

__all__ = [
    "COST_MULTIPLIERS",
    "RandomBaseline",
    "Safeguards",
    "compute_safeguards",
    "cost_sensitivity",
    "log_safeguards",
    "plot_random_baseline",
    "random_signal_baseline",
]


@dataclass
class Safeguards:
    """The safeguards of one backtest; ``None`` parts are not available (no trades)."""

    strategy_return: float
    strategy_sharpe: float
    buy_and_hold: dict[str, float]  # total_return, sharpe
    random: RandomBaseline | None
    sharpe_ci: Interval | None
    total_return_ci: Interval | None
    psr: float  # P[true Sharpe > 0]
    costs: pd.DataFrame | None
    fees_bps: float = float("nan")  # the configured costs the multipliers scale
    slippage_bps: float = float("nan")
    note: str = ""  # e.g. "IN-SAMPLE: ...", shown first in every summary line

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics; NaN where not available (left out of the run)."""
        nan = float("nan")
        rnd, sci, tci = self.random, self.sharpe_ci, self.total_return_ci
        out = {
            "flat_total_return": 0.0,
            "random_runs": float(rnd.n_runs) if rnd else nan,
            "random_p_value": rnd.p_value if rnd else nan,
            "random_return_median": rnd.quantile(0.5) if rnd else nan,
            "random_return_p05": rnd.quantile(0.05) if rnd else nan,
            "random_return_p95": rnd.quantile(0.95) if rnd else nan,
            "sharpe_ci_low": sci.low if sci else nan,
            "sharpe_ci_high": sci.high if sci else nan,
            "total_return_ci_low": tci.low if tci else nan,
            "total_return_ci_high": tci.high if tci else nan,
            "bootstrap_block": float(sci.block) if sci else nan,
            "psr": self.psr,
        }
        if self.costs is not None:
            for row in self.costs.itertuples():
                for key in ("total_return", "sharpe", "trades"):
                    out[f"cost_x{row.multiplier:g}_{key}"] = float(getattr(row, key))
        return out

    def summary(self) -> list[str]:
        """Lines for the user, each starting with the in-sample note when there is one."""
        bh = self.buy_and_hold
        lines = [
            f"baselines: strategy {self.strategy_return:+.2%} (Sharpe "
            f"{self.strategy_sharpe:.2f}), always-FLAT +0.00% (Sharpe n/a), buy & hold "
            f"{bh['total_return']:+.2%} (Sharpe {bh['sharpe']:.2f})"
        ]
        rnd = self.random
        if rnd is None:
            lines.append("random-signal baseline: n/a (no trades)")
        else:
            beaten = int(np.sum(rnd.returns < rnd.strategy_return))
            lines.append(
                f"random-signal baseline ({rnd.n_runs} runs of the same {rnd.trades} trades and "
                f"lengths at random times): strategy beats {beaten}/{rnd.n_runs}, p = "
                f"{rnd.p_value:.3f}; random median {rnd.quantile(0.5):+.2%}, 5-95 % "
                f"{rnd.quantile(0.05):+.2%} .. {rnd.quantile(0.95):+.2%}"
            )
        sci, tci = self.sharpe_ci, self.total_return_ci
        if sci is None or tci is None:
            lines.append("block-bootstrap intervals and PSR: n/a (no trades)")
        else:
            lines.append(
                f"{sci.level:.0%} block-bootstrap CI ({sci.n_boot} resamples, blocks of "
                f"{sci.block} bars): Sharpe {sci.low:.2f} .. {sci.high:.2f}"
                f"{' (includes 0)' if sci.contains(0.0) else ''}, total return "
                f"{tci.low:+.2%} .. {tci.high:+.2%}{' (includes 0)' if tci.contains(0.0) else ''}"
                f"; P(Sharpe > 0) = {self.psr:.3f} (PSR)"
            )
        if self.costs is None:
            lines.append("cost sensitivity: n/a (no trades)")
        else:
            cells = ", ".join(
                f"x{r.multiplier:g} {r.total_return:+.2%} (Sharpe {r.sharpe:.2f})"
                for r in self.costs.itertuples()
            )
            lines.append(
                f"costs at multiples of the fees ({self.fees_bps:g} bps) and slippage "
                f"({self.slippage_bps:g} bps) per side: {cells}"
            )
        prefix = f"[{self.note}] " if self.note else ""
        return [prefix + line for line in lines]


def compute_safeguards(
    candles: pd.DataFrame,
    result: BacktestResult,
    *,
    random_runs: int = 200,
    bootstrap: int = 1000,
    block: int | None = None,
    cost_multipliers: Sequence[float] = COST_MULTIPLIERS,
    seed: int = 0,
    sides: Literal["strategy", "random"] = "strategy",
) -> Safeguards:
    """Random-signal baseline, always-FLAT and buy-and-hold, bootstrap intervals of Sharpe and
    total return, PSR, and the cost table of one backtest (``backtest.safeguards`` config)."""
    m, bh = result.metrics, result.benchmark
    baseline = {"total_return": bh["total_return"], "sharpe": bh["sharpe"]}
    out = Safeguards(
        strategy_return=m["total_return"],
        strategy_sharpe=m["sharpe"],
        buy_and_hold=baseline,
        random=None,
        sharpe_ci=None,
        total_return_ci=None,
        psr=float("nan"),
        costs=None,
        fees_bps=float(result.settings["fees_bps"]),
        slippage_bps=float(result.settings["slippage_bps"]),
        note=result.note,
    )
    if result.trades.empty:
        return out
    out.random = random_signal_baseline(candles, result, n_runs=random_runs, seed=seed, sides=sides)
    equity = result.equity.to_numpy(np.float64)
    rets = np.diff(equity) / equity[:-1]
    if block is not None and block > rets.size:
        raise ConfigError(
            f"backtest.safeguards.block={block} is longer than the backtest's {rets.size} bar "
            "returns; give a shorter block or null"
        )
    if rets.size >= 2:
        ppy = float(result.settings["periods_per_year"])
        sharpe = functools.partial(annualised_sharpe, periods_per_year=ppy)
        kw = {"n_boot": bootstrap, "block": block, "seed": seed}
        out.sharpe_ci = bootstrap_ci(rets, sharpe, **kw)
        out.total_return_ci = bootstrap_ci(rets, total_return, **kw)
        sr, n, skew, kurt = return_moments(rets)
        out.psr = float("nan") if math.isnan(sr) else probabilistic_sharpe_ratio(sr, n, skew, kurt)
    out.costs = cost_sensitivity(candles, result, cost_multipliers)
    return out


def plot_random_baseline(safeguards: Safeguards, path: str | Path, *, title: str = "") -> Path:
    """Histogram of the random-signal runs' total returns with the strategy's, always-FLAT
    and buy-and-hold marked, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rnd = safeguards.random
    if rnd is None:
        raise ValueError("no random-signal baseline to plot (the backtest made no trade)")
    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.hist(100 * rnd.returns, bins=min(40, max(10, rnd.n_runs // 5)), color="#9bb7d4")
    marks = (
        (rnd.strategy_return, "#c0392b", "-", f"strategy (p = {rnd.p_value:.3f})"),
        (0.0, "grey", "--", "always FLAT"),
        (safeguards.buy_and_hold["total_return"], "black", ":", "buy & hold"),
    )
    for value, colour, style, label in marks:
        ax.axvline(100 * value, color=colour, ls=style, lw=1.5, label=label)
    ax.set_xlabel("total return %")
    ax.set_ylabel("random-signal runs")
    ax.legend(loc="best")
    heading = f"{rnd.n_runs} random-signal runs, {rnd.trades} trades of the same lengths"
    ax.set_title("\n".join(t for t in (safeguards.note, title, heading) if t), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def log_safeguards(
    rec: RunRecorder, safeguards: Safeguards, artifact_path: str = "safeguards", *, title: str = ""
) -> None:
    """The safeguards' metrics (beside the backtest's) and, under ``artifact_path``,
    ``summary.txt``, ``cost_sensitivity.csv``, ``random_returns.csv`` and
    ``random_baseline.png`` (the last three when the backtest made trades)."""
    rec.log_metrics(safeguards.metrics())
    with rec.artifact_dir(artifact_path) as tmp:
        (tmp / "summary.txt").write_text("\n".join(safeguards.summary()) + "\n")
        if safeguards.costs is not None:
            safeguards.costs.to_csv(tmp / "cost_sensitivity.csv", index=False)
        if safeguards.random is not None:
            pd.DataFrame({"total_return": safeguards.random.returns}).to_csv(
                tmp / "random_returns.csv", index_label="run"
            )
            plot_random_baseline(safeguards, tmp / "random_baseline.png", title=title)
