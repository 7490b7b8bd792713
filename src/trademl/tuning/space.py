"""A search space written as Hydra sweep overrides, as Optuna distributions.

``tune.params`` maps config keys, nested as in the config, to Hydra's sweep syntax (the syntax
of the former Hydra Optuna sweeper plugin, so existing search spaces carry over)::

    model:
      n_estimators: choice(50, 100, 200)        # categorical
      max_depth: int(range(3, 16))              # integers 3..15 (range's stop is excluded)
      learning_rate: tag(log, interval(0.01, 0.3))   # float, log scale
      min_samples_leaf: int(interval(1, 50))    # integers 1..50
      max_features: sqrt                        # a fixed value (not searched)

On the command line: ``tune.params.model.max_depth='int(range(3, 9))'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trademl.errors import ConfigError

__all__ = ["parse_space", "to_override"]


def parse_space(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``tune.params`` as (Optuna distributions by key, fixed values by key).

    Raises
    ------
    ConfigError
        A value that is not a sweep Hydra can parse, or a range/interval Optuna cannot
        sample (empty, a step on a log scale, a shuffled choice), naming the key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for key, text in _flat(params).items():
        where = f"tune.params.{key}={text!r}"
        try:
            value = parser.parse_override(f"{key}={text}").value()
        except Exception as exc:
            raise ConfigError(f"{where}: {' '.join(str(exc).split())[:200]}") from None
        log = "log" in getattr(value, "tags", set())
        if isinstance(value, ChoiceSweep):
            if not value.list:
                raise ConfigError(f"{where}: an empty choice")
            space[key] = CategoricalDistribution([_plain(v) for v in value.list])
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step or 1
            if all(isinstance(v, int) for v in (start, stop, step)):
                values = list(range(start, stop, step))
                if not values:
                    raise ConfigError(f"{where}: the range is empty (its stop is excluded)")
                if log and step != 1:
                    raise ConfigError(f"{where}: a log scale takes no step")
                space[key] = IntDistribution(values[0], values[-1], step=step, log=log)
            else:  # a float range: its values, as a choice
                import numpy as np

                values = [float(v) for v in np.arange(start, stop, step)]
                if not values:
                    raise ConfigError(f"{where}: the range is empty (its stop is excluded)")
                space[key] = CategoricalDistribution(values)
        elif isinstance(value, IntervalSweep):
            low, high = value.start, value.end
            if not low < high:
                raise ConfigError(f"{where}: the interval needs low < high")
            if log and low <= 0:
                raise ConfigError(f"{where}: a log scale needs low > 0")
            if isinstance(low, int) and isinstance(high, int):
                space[key] = IntDistribution(low, high, log=log)
            else:
                space[key] = FloatDistribution(float(low), float(high), log=log)
        else:
            fixed[key] = _plain(value)
    if not space:
        raise ConfigError(
            "tune.params has nothing to search: give an hparams_search preset "
            "(conf/hparams_search/) or keys such as tune.params.model.max_depth='int(range(3, 9))'"
        )
    return space, fixed


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys (``model: {max_depth: ...}``, which the command line can override as
    ``tune.params.model.max_depth=...``) as dotted ones."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _plain(value: Any) -> Any:
    """A parsed value as Optuna stores choices: None, bool, int, float or str."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_override(key: str, value: Any) -> str:
    """``key=value`` as a Hydra override (strings quoted when Hydra would misread them)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    if isinstance(value, str):
        import re

        if re.fullmatch(r"[A-Za-z_][\w.\-/]*", value) and value not in ("null", "true", "false"):
            return f"{key}={value}"
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"{key}='{escaped}'"
    return f"{key}={value}"
