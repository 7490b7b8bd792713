"""The fill model and position sizing, shared by the RiskEngine, the backtester and
the live paper broker, so that all three agree to the last cent.

Rules (all prices per unit, ``side`` is +1 long, -1 short):

* **entry**: a market order decided on the close of bar ``t`` fills at the open of bar
  ``t+1``, worsened by the slippage: ``open * (1 + side * slippage)``.
* **stop and target** are absolute price levels fixed when the order is decided. They are
  checked from the entry bar on, within each bar's range:

  - if the bar opens beyond the stop (a gap), the stop fills at the open (with slippage);
  - else if the bar opens beyond the target, the target fills at the open (no slippage: a
    limit order gets the better price);
  - else if the low (long) / high (short) reaches the stop, it fills at the stop, with
    slippage; when the same bar also reaches the target, the **stop is assumed first**;
  - else if the high (long) / low (short) reaches the target, it fills at the target.
* **market exits** (opposite signal, time stop, end of data) fill at the given price worsened
  by the slippage.
* **fees**: ``fee_rate * price * size`` on every fill, entries and exits.

Sizing (:func:`position_size`): risk ``risk_fraction * equity`` on the distance to the stop
(plus the round-trip fees at the entry price), capped at ``max_fraction * equity`` of
notional and at ``max_size``; floored to ``size_step``; 0 below ``min_size``.

The functions are compiled with numba and work on plain floats, so the backtester's loop
calls them directly and Python code can call them too.
"""

from __future__ import annotations

import math

from numba import njit

__all__ = [
    "EXIT_END",
    "EXIT_NONE",
    "EXIT_REASONS",
    "EXIT_SIGNAL",
    "EXIT_STOP",
    "EXIT_TARGET",
    "EXIT_TIME",
    "entry_price",
    "exit_in_bar",
    "market_exit_price",
    "position_size",
]

EXIT_NONE, EXIT_STOP, EXIT_TARGET, EXIT_SIGNAL, EXIT_TIME, EXIT_END = 0, 1, 2, 3, 4, 5
EXIT_REASONS = {
    EXIT_STOP: "stop",
    EXIT_TARGET: "target",
    EXIT_SIGNAL: "signal",
    EXIT_TIME: "time",
    EXIT_END: "end",
}


@njit(cache=True)
def position_size(
    equity,
    entry,
    stop_distance,
    risk_fraction,
    max_fraction,
    min_size,
    max_size,
    size_step,
    fee_rate,
):
    """Units to trade (0.0 when the trade must be rejected for size)."""
    if equity <= 0.0 or entry <= 0.0 or stop_distance <= 0.0:
        return 0.0
    risk_per_unit = stop_distance + 2.0 * fee_rate * entry
    size = risk_fraction * equity / risk_per_unit
    cap = max_fraction * equity / entry
    if size > cap:
        size = cap
    if max_size > 0.0 and size > max_size:
        size = max_size
    if size_step > 0.0:
        size = math.floor(size / size_step + 1e-9) * size_step
    if size < min_size or size <= 0.0:
        return 0.0
    return size


@njit(cache=True)
def entry_price(open_price, side, slippage):
    """Fill price of a market entry at a bar's open."""
    return open_price * (1.0 + side * slippage)


@njit(cache=True)
def market_exit_price(price, side, slippage):
    """Fill price of a market exit at ``price`` (closing a long sells lower)."""
    return price * (1.0 - side * slippage)


@njit(cache=True)
def exit_in_bar(side, open_price, high, low, stop, target, slippage):
    """``(reason, price)`` of a stop or target fill within one bar, or ``(EXIT_NONE, 0.0)``.

    ``target <= 0`` means no target; ``stop <= 0`` means no stop.
    """
    has_stop = stop > 0.0
    has_target = target > 0.0
    if side > 0:
        if has_stop and open_price <= stop:
            return EXIT_STOP, market_exit_price(open_price, side, slippage)
        if has_target and open_price >= target:
            return EXIT_TARGET, open_price
        if has_stop and low <= stop:
            return EXIT_STOP, market_exit_price(stop, side, slippage)
        if has_target and high >= target:
            return EXIT_TARGET, target
    else:
        if has_stop and open_price >= stop:
            return EXIT_STOP, market_exit_price(open_price, side, slippage)
        if has_target and open_price <= target:
            return EXIT_TARGET, open_price
        if has_stop and high >= stop:
            return EXIT_STOP, market_exit_price(stop, side, slippage)
        if has_target and low <= target:
            return EXIT_TARGET, target
    return EXIT_NONE, 0.0
