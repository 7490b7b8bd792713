"""The RiskEngine (the spec's Module 14): position sizing and validation of signals.

``RiskEngine.apply_risk_to_signal`` turns a signal with its entry, stop and target into an
:class:`Order` (side, size, position value, risk amount and percent of equity) or a rejected
one with its reason. Sizing is :func:`trademl.fills.position_size`, the same code the
backtester and the paper broker use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trademl._config import coerce_config
from trademl.errors import ConfigError
from trademl.fills import position_size

__all__ = ["Order", "RiskConfig", "RiskEngine"]


@dataclass(frozen=True)
class RiskConfig:
    """Risk limits.

    Attributes
    ----------
    risk_per_trade
        Fraction of equity lost if the stop is hit (0.01 = 1 %).
    max_position_fraction
        Largest position value as a fraction of equity (0.999 = 99.9 %, the spec's example).
    min_size, max_size
        Size bounds in units (``max_size`` 0 or null = unbounded); below ``min_size`` the
        order is rejected.
    size_step
        Lot size: sizes are floored to a multiple (0 or null = no rounding).
    allow_short
        Reject SHORT signals when false.
    max_gross_exposure
        A shared-cash portfolio of several symbols (:class:`trademl.portfolio.PortfolioBacktest`,
        ``live.portfolio=shared``): the open and pending notionals of all its positions together
        may not exceed this multiple of the portfolio's equity (1.0 = no leverage); a new order
        beyond it is reduced to fit, or rejected, and counted. A single book never reaches it
        (``max_position_fraction`` caps its one position).
    """

    risk_per_trade: float = 0.01
    max_position_fraction: float = 0.999
    min_size: float = 0.0
    max_size: float | None = None
    size_step: float | None = None
    allow_short: bool = True
    max_gross_exposure: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "risk_per_trade": 0.0 < self.risk_per_trade <= 1.0,
            "max_position_fraction": self.max_position_fraction > 0.0,
            "min_size": self.min_size >= 0.0,
            "max_size": self.max_size is None or self.max_size >= 0.0,
            "size_step": self.size_step is None or self.size_step >= 0.0,
            "max_gross_exposure": self.max_gross_exposure > 0.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"risk.{name}={getattr(self, name)!r} is out of range")


@dataclass
class Order:
    """A sized order, or a rejection (``approved=False`` with a ``reason``)."""

    approved: bool
    side: str
    size: float = 0.0
    position_value: float = 0.0
    risk_amount: float = 0.0
    risk_pct: float = 0.0
    entry_price: float = 0.0
    stop_loss: float = 0.0
    take_profit: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        if not self.approved:
            return f"REJECTED {self.side}: {self.reason}"
        return (
            f"{self.side} {self.size:.6f} units @ {self.entry_price:.2f} (value "
            f"{self.position_value:.2f}, risk {self.risk_amount:.2f} = {self.risk_pct:.2f}% "
            f"of equity, stop {self.stop_loss:.2f}, target {self.take_profit})"
        )


class RiskEngine:
    """Sizes and validates signals under a :class:`RiskConfig`.

    ``fees_bps`` is the fee per side of the fills (``backtest.fees_bps`` in a config, the one
    fee setting): the risk of a trade counts the entry and exit fees. It is an execution
    setting, not a risk limit, so it is given here rather than in the ``RiskConfig``.
    """

    def __init__(self, config: RiskConfig | dict | None = None, *, fees_bps: float = 0.0) -> None:
        self.config = coerce_config(config, RiskConfig, name="risk")
        if not 0.0 <= fees_bps < 1000.0:
            raise ConfigError(f"fees_bps={fees_bps!r} must be in [0, 1000)")
        self.fee_rate = float(fees_bps) / 1e4

    def apply_risk_to_signal(
        self,
        signal: str,
        equity: float,
        entry_price: float,
        stop_loss_price: float,
        take_profit_price: float | None = None,
    ) -> Order:
        """Size a LONG/SHORT signal; reject FLAT, inconsistent levels or too small a size.

        ``risk_amount`` is what is lost at the stop, fees included.
        """
        cfg = self.config
        side = str(signal).upper()
        base = {
            "side": side,
            "entry_price": float(entry_price),
            "stop_loss": float(stop_loss_price),
            "take_profit": None if take_profit_price is None else float(take_profit_price),
        }

        def reject(reason: str) -> Order:
            return Order(approved=False, reason=reason, **base)

        if side not in ("LONG", "SHORT", "FLAT"):
            return reject(f"unknown signal {signal!r}; expected LONG, SHORT or FLAT")
        if side == "FLAT":
            return reject("FLAT signal: nothing to trade")
        if side == "SHORT" and not cfg.allow_short:
            return reject("short selling is disabled (risk.allow_short=false)")
        if not equity > 0:
            return reject(f"equity {equity} must be positive")
        if not entry_price > 0:
            return reject(f"entry price {entry_price} must be positive")
        direction = 1.0 if side == "LONG" else -1.0
        distance = direction * (entry_price - stop_loss_price)
        if distance == 0:
            return reject("stop loss equals the entry price (zero distance)")
        if distance < 0:
            where = "below" if side == "LONG" else "above"
            return reject(
                f"stop loss {stop_loss_price} must be {where} the entry {entry_price} for a {side}"
            )
        if take_profit_price is not None and direction * (take_profit_price - entry_price) <= 0:
            where = "above" if side == "LONG" else "below"
            return reject(
                f"take profit {take_profit_price} must be {where} the entry "
                f"{entry_price} for a {side}"
            )
        size = position_size(
            float(equity),
            float(entry_price),
            float(distance),
            cfg.risk_per_trade,
            cfg.max_position_fraction,
            cfg.min_size,
            cfg.max_size or 0.0,
            cfg.size_step or 0.0,
            self.fee_rate,
        )
        if size <= 0:
            return reject(f"size below the minimum {cfg.min_size} units")
        risk = size * (distance + 2.0 * self.fee_rate * entry_price)
        return Order(
            approved=True,
            size=size,
            position_value=size * entry_price,
            risk_amount=risk,
            risk_pct=100.0 * risk / equity,
            **base,
        )
