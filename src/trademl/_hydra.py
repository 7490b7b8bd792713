"""Hydra plumbing shared by the entrypoints: the config directory, composing and
instantiating configs with trademl's errors instead of Hydra's wrapped ones."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from trademl.errors import ConfigError, TradeMLError

__all__ = ["CONFIG_DIR", "compose_config", "instantiate_node"]

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def instantiate_node(node: DictConfig, what: str) -> Any:
    """``hydra.utils.instantiate`` with our errors unwrapped and Hydra's made clear."""
    try:
        return hydra.utils.instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, TradeMLError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{what}: {' '.join(str(exc).split())}") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{what}: {' '.join(str(exc).split())}") from exc


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose a config from ``conf/`` with Hydra overrides, outside a Hydra app."""
    from hydra import compose, initialize_config_dir

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name=config_name, overrides=list(overrides))
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    except Exception as exc:  # Hydra raises several types for bad overrides
        if isinstance(exc, TradeMLError):
            raise
        text = " ".join(str(exc).split()).split(" Config search path:")[0]
        raise ConfigError(_unknown_override(text, overrides, config_name) or text) from exc


def _unknown_override(text: str, overrides: Sequence[str], config_name: str) -> str:
    """For Hydra's "Could not override 'a.b'. To append ... use +a.b=...": where a moved key
    went, or the closest existing key (appending it would be wrong); else "" (Hydra's text)."""
    import re

    from omegaconf import OmegaConf

    from trademl._config import MOVED_KEYS

    m = re.match(r"Could not override '([\w.]+)'", text)
    if not m:
        return ""
    key = m[1]
    if key in MOVED_KEYS:
        return f"{key} {MOVED_KEYS[key]}"
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose_config(rest, config_name)
    except TradeMLError:
        return ""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not OmegaConf.is_dict(node):
        return ""
    keys = [str(k) for k in node if k not in ("hydra", leaf)]
    match = difflib.get_close_matches(leaf, keys, n=1)
    if not match:
        return ""
    return (
        f"{key} is not a config key; did you mean {(f'{parent}.' if parent else '') + match[0]!r}?"
    )
