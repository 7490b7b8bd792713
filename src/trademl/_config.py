"""Turning user-supplied configuration (dataclass, mapping, DictConfig) into dataclasses."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

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
    "backtest.costs": "is a config group, not a key: choose a preset with backtest/costs=NAME "
    "(crypto, fx_major, us_equity)",
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


# -- typed checks of keyword arguments (the config schemas) -------------------------------------
def unknown_key_error(label: str, key: str, allowed: Sequence[str]) -> ConfigError:
    full = f"{label}.{key}" if label else key
    if full in MOVED_KEYS:
        return ConfigError(f"{full} {MOVED_KEYS[full]}")
    return ConfigError(
        f"{full} is not a key of {label or 'the config'}{did_you_mean(key, allowed)} "
        f"(keys: {', '.join(sorted(set(allowed)))})"
    )


def describe_type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple, Sequence):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {describe_type(inner[0])}s" if inner else "a list"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp is type(None):
        return "null"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def matches_type(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, str | Path)
    if origin in (list, tuple, Sequence):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return False
        inner = [a for a in args if a is not Ellipsis]
        if origin is tuple and args and Ellipsis not in args and len(args) != len(value):
            return False
        return all(matches_type(v, inner[0]) for v in value) if inner else True
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, Mapping)
    return True  # an annotation these checks do not know: left to the constructor


def _type_hints(target: Any) -> dict[str, Any]:
    try:
        obj = (
            target.__init__
            if isinstance(target, type) and not dataclasses.is_dataclass(target)
            else target
        )
        return typing.get_type_hints(obj)
    except (NameError, TypeError):
        return {}


def check_mapping(
    label: str, given: Mapping[str, Any], target: Callable, *, blocked: Sequence[str] = ()
) -> None:
    """Check ``given`` (keyword arguments) against the keys and types ``target`` takes."""
    sig = inspect.signature(target)
    params = {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in blocked
    }
    hints = _type_hints(target)
    for key, value in given.items():
        if key not in params:
            raise unknown_key_error(label, key, list(params))
        tp = hints.get(key, inspect.Parameter.empty)
        if not matches_type(value, tp):
            full = f"{label}.{key}" if label else key
            raise ConfigError(f"{full}={value!r} must be {describe_type(tp)}")
    for name, p in params.items():
        if p.default is p.empty and name not in given:
            raise ConfigError(f"{label}.{name} is required" if label else f"{name} is required")
