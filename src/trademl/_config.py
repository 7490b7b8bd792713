"""Turning user-supplied configuration (dataclass, mapping, DictConfig) into dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from trademl.errors import ConfigError

T = TypeVar("T")

# Keys that were renamed or removed: where they went (a migration, as Freqtrade does).
MOVED_KEYS: dict[str, str] = {
    "risk.fee_bps": "was removed: the one fee is backtest.fees_bps (per side, on every fill, "
    "and counted in position sizing too)",
    "risk.fees_bps": "does not exist: the one fee is backtest.fees_bps (per side, on every "
    "fill, and counted in position sizing too)",
    "strategy.base_sl_atr_mult": "was renamed strategy.sl_atr_mult",
    "strategy.base_tp_atr_mult": "was renamed strategy.tp_atr_mult",
    "strategy.params.base_sl_atr_mult": "was renamed strategy.params.sl_atr_mult",
    "strategy.params.base_tp_atr_mult": "was renamed strategy.params.tp_atr_mult",
    "signal.base_sl_atr_mult": "was renamed signal.sl_atr_mult",
    "signal.base_tp_atr_mult": "was renamed signal.tp_atr_mult",
}


def coerce_config(value: Any, cls: type[T], *, name: str | None = None) -> T:
    """Return ``value`` as an instance of the dataclass ``cls``.

    ``None`` gives the defaults; a mapping (``dict`` or OmegaConf ``DictConfig``)
    is passed as keyword arguments, after dropping Hydra's ``_target_`` key.
    Unknown keys raise :class:`ConfigError` listing the valid ones.
    """
    label = name or cls.__name__
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        try:  # OmegaConf DictConfig is a MutableMapping, but be lenient with look-alikes
            from omegaconf import DictConfig, OmegaConf

            if isinstance(value, DictConfig):
                value = OmegaConf.to_container(value, resolve=True)
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{label}: expected a mapping or {cls.__name__}, got {type(value).__name__}"
        )
    data = _plain(dict(value))
    data.pop("_target_", None)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    for key in unknown:
        if f"{label}.{key}" in MOVED_KEYS:
            raise ConfigError(f"{label}.{key} {MOVED_KEYS[f'{label}.{key}']}")
    if unknown:
        raise ConfigError(
            f"{label}: unknown key(s) {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], sorted(fields))}; valid keys: {', '.join(sorted(fields))}"
        )
    return cls(**data)


def did_you_mean(key: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    match = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers (and nested ones) to plain Python objects."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_choice(label: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{label}={value!r} is not valid; choose one of {', '.join(choices)}")


def check_positive_int(label: str, value: Any, *, minimum: int = 1) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{label}={value!r} must be an integer >= {minimum}")


def check_periods(label: str, value: Any, *, minimum: int = 1, min_len: int = 1) -> tuple[int, ...]:
    """Validate a list of window lengths: integers >= ``minimum``, unique, ascending."""
    if isinstance(value, int | str) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{label}={value!r} must be a list of integers")
    periods = tuple(value)
    for p in periods:
        check_positive_int(f"{label} entry", p, minimum=minimum)
    if len(periods) < min_len:
        raise ConfigError(f"{label}={list(periods)} needs at least {min_len} entr(y/ies)")
    if list(periods) != sorted(set(periods)):
        raise ConfigError(f"{label}={list(periods)} must be strictly increasing (no duplicates)")
    return periods
