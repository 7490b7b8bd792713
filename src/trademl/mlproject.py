"""Entry point of the MLproject: maps ``mlflow run -P ...`` parameters onto Hydra overrides.

``mlflow run`` shell-quotes every declared parameter, so a free-form list of
overrides arrives as one argument; it is split here with shell rules and handed
to the Hydra entrypoint with the others. The run created by ``mlflow run``
(``MLFLOW_RUN_ID``) is the one the training logs into.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

__all__ = ["main", "to_overrides"]


def to_overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides for the MLproject parameters (empty ones are left out)."""
    out = [f"model={args.model}", f"data={args.data}"]
    if args.data_path:
        out.append(f"data.path={args.data_path}")
    if args.horizon:
        out.append(f"labels.horizon={args.horizon}")
    if args.promote:
        out.append(f"promote={args.promote}")
    out += shlex.split(args.overrides or "")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trademl-mlproject")
    parser.add_argument("--model", default="random_forest")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--horizon", default="")
    parser.add_argument("--promote", default="")
    parser.add_argument("--overrides", default="")
    args = parser.parse_args(argv)
    from trademl.cli import main as cli_main

    return cli_main(["train", *to_overrides(args)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
