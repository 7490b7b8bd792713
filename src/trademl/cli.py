"""The ``trademl`` command.

Subcommands::

    trademl train [hydra overrides...] [-m]       # see conf/train.yaml
    trademl tune hparams_search=NAME [tune.n_trials=N tune.storage=URL overrides...]
    trademl backtest [model=models:/NAME/STAGE | strategy=scalping_ema_rsi] [overrides...]
    trademl walkforward [training overrides...]   # see conf/walkforward.yaml
    trademl live feeds.0.path=candles.csv [overrides...]   # see conf/live.yaml
    trademl live report JOURNAL [--decisions] [--out DIR]  # live versus backtest
    trademl models list | info REF | promote NAME VERSION | delete NAME [VERSION] --yes
    trademl server [mlflow=team] [server.port=5000 ...] [--check]   # conf/server.yaml
    trademl data synth --rows 5000 --seed 1 --out candles.csv
    trademl data check candles.csv [--out clean.parquet]
    trademl features candles.csv --out features.parquet
    trademl features --list [--markdown]
    trademl check lookahead module:function [--data candles.csv] [--cuts 40] [--json]

Errors a user can fix (:class:`trademl.errors.TradeMLError`) are printed as one
line on stderr with exit status 2, never as a traceback. ``trademl check lookahead``
exits with 0 when clean and 1 when a column uses the future; ``trademl live report``
with 0 when live and its backtest match and 1 when they diverge.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from trademl.errors import (
    EXIT_USER_ERROR,
    ConfigError,
    DataError,
    ModelError,
    TradeMLError,
    report,
)

if TYPE_CHECKING:  # pandas loads inside the commands, so that `trademl --help` stays fast
    import pandas as pd

__all__ = ["main"]


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df.to_parquet(path)
    elif suffix == ".csv":
        df.to_csv(path, index_label="timestamp")
    else:
        raise DataError(f"{path}: output must end in .csv or .parquet")


def _cmd_synth(args: argparse.Namespace) -> int:
    from trademl.synthetic import generate_ohlcv

    df = generate_ohlcv(args.rows, seed=args.seed, freq=args.freq, momentum=args.momentum)
    _write_frame(df, Path(args.out))
    print(f"wrote {len(df)} synthetic candles to {args.out}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from trademl.cleaning import clean_ohlcv_data
    from trademl.data import load_ohlcv_data

    overrides = dict(_parse_overrides(args.set))
    raw = load_ohlcv_data(args.path)
    clean, report = clean_ohlcv_data(raw, overrides)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(f"{args.path}: {len(raw)} rows, {raw.index[0]} .. {raw.index[-1]}")
        print(report.summary())
    if args.out:
        _write_frame(clean, Path(args.out))
        print(f"wrote {len(clean)} clean candles to {args.out}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from trademl.features import FeatureConfig, build_feature_matrix, feature_catalogue

    if args.list:
        cat = feature_catalogue()
        if args.markdown:
            print(catalogue_markdown(cat))
        else:
            import pandas as pd

            with pd.option_context("display.max_colwidth", 90, "display.width", 200):
                print(cat.to_string(index=False))
        return 0
    if not args.path:
        raise DataError("give a candle file (CSV or Parquet) or --list")
    from trademl.cleaning import clean_ohlcv_data
    from trademl.data import load_ohlcv_data

    clean, report = clean_ohlcv_data(load_ohlcv_data(args.path))
    X, frep = build_feature_matrix(clean, FeatureConfig(), return_report=True)
    print(report.summary())
    print(
        f"{frep.n_features} features on {frep.rows_out} rows ({frep.warmup_rows} warm-up rows "
        "removed)"
    )
    if args.out:
        _write_frame(X, Path(args.out))
        print(f"wrote {args.out}")
    return 0


EXIT_LOOKAHEAD = 1  # trademl check lookahead: a column uses the future


def _cmd_check_lookahead(args: argparse.Namespace) -> int:
    from trademl.lookahead import check_lookahead

    target = _import_target(args.target, strategy=args.strategy)
    if args.data in (None, "synthetic"):
        from trademl.synthetic import generate_ohlcv

        candles = generate_ohlcv(args.rows, seed=args.seed)
        source = f"synthetic candles (--rows {args.rows} --seed {args.seed})"
    else:
        from trademl.cleaning import clean_ohlcv_data
        from trademl.data import load_ohlcv_data

        candles, _ = clean_ohlcv_data(load_ohlcv_data(args.data))
        source = args.data
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        print(f"\rchecking {args.target}: cut {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        report = check_lookahead(
            target,
            candles,
            cuts=args.cuts,
            seed=args.seed,
            name=args.target,
            progress=progress if tty else None,
        )
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"data": source, **report.to_dict()}, indent=2, default=str))
    else:
        print(f"data: {source}, {len(candles)} bars, {candles.index[0]} .. {candles.index[-1]}")
        print(report.summary())
    return 0 if report.clean else EXIT_LOOKAHEAD


def _import_target(spec: str, *, strategy: bool = False) -> Any:
    """``module:function`` (or ``module:Strategy``) imported like ``python -m`` would: the
    current directory first; a strategy class is instantiated without arguments."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{spec!r}: expected module:function, e.g. myfeatures:build")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(
                f"{spec}: no module named {exc.name!r} in {cwd} or the installed packages"
            ) from None
        raise ConfigError(f"{spec}: importing {module_name} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"{spec}: importing {module_name} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [
                n
                for n, v in vars(module).items()
                if callable(v)
                and not n.startswith("_")
                and getattr(v, "__module__", "") == module_name
            ]
            raise ConfigError(
                f"{spec}: {module_name} has no attribute {attr!r} (it has "
                f"{', '.join(sorted(names)[:12]) or 'no public callables'})"
            )
        obj = getattr(obj, part)
    if strategy or hasattr(obj, "generate_signals"):
        if not hasattr(obj, "generate_signals"):
            raise ConfigError(f"{spec} is not a strategy: it has no generate_signals(df)")
        if isinstance(obj, type):
            try:
                obj = obj()
            except Exception as exc:
                raise ConfigError(
                    f"{spec}: cannot create the strategy without arguments: "
                    f"{type(exc).__name__}: {exc}; name an instance instead"
                ) from None
    elif not callable(obj):
        raise ConfigError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj


def catalogue_markdown(cat: pd.DataFrame) -> str:
    """The feature catalogue as the Markdown table of ``docs/features.md``."""
    lines = [
        "| # | feature | group | formula | lookback |",
        "|---|---|---|---|---|",
    ]
    for i, row in enumerate(cat.itertuples(index=False), start=1):
        formula = row.formula.replace("|", "\\|")
        lines.append(f"| {i} | `{row.name}` | {row.group} | {formula} | {row.lookback} |")
    return "\n".join(lines)


def _parse_overrides(items: Sequence[str] | None) -> list[tuple[str, object]]:
    out = []
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            parsed: object = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.append((key.strip(), parsed))
    return out


def _backtest_overrides(args: Sequence[str]) -> list[str]:
    """``model=URI`` (the `model` config group's name) means the ML strategy on that model."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("model="):
            uri = arg.split("=", 1)[1].strip("'\"")
            if any(a.startswith("strategy=") and a != "strategy=ml_strategy" for a in args):
                raise ConfigError(f"{arg} needs strategy=ml_strategy")
            out += ["strategy=ml_strategy", f"strategy.model_uri='{uri}'"]
        else:
            out.append(arg)
    return out


def _run_hydra(command: str, args: Sequence[str]) -> int:
    """Hand the arguments to a Hydra entrypoint (train, backtest, walkforward, live)."""
    from trademl._hydra import compose_config

    if command == "backtest":
        args = _backtest_overrides(args)
    if command == "train" and any(a.startswith("hparams_search=") for a in args):
        raise ConfigError(
            "hparams_search presets are Optuna studies, run by `trademl tune "
            f"{' '.join(args)}` (any number of workers); `trademl train -m` runs grid sweeps"
        )
    if command == "tune":
        return _tune(args)
    if not any(a.startswith("-") for a in args):  # single run: check composition first,
        compose_config(args, config_name=command)  # before the (slow) imports of the entry
    if command == "train":
        from trademl.train import main as entry
    elif command == "walkforward":
        from trademl.walkforward import main as entry
    elif command == "live":
        from trademl.live.app import main as entry
    else:
        from trademl.backtest_run import main as entry
    saved = sys.argv
    sys.argv = [f"trademl {command}", *args]
    try:
        entry()
    except SystemExit as exc:  # the entrypoints exit 2 on user errors, Hydra 1 on its own
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    return 0


def _tune(args: Sequence[str]) -> int:
    from trademl.errors import exit_on_user_error

    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise ConfigError(
            f"trademl tune takes key=value overrides only, not {flags[0]} (run more workers to "
            "go faster: every `trademl tune` naming the same study and storage shares it)"
        )
    from trademl.tuning.study import tune

    try:
        with exit_on_user_error():
            tune(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from trademl import registry

    uri = args.tracking_uri  # None: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    if args.models_command == "list":
        rows = registry.list_models(args.name, tracking_uri=uri)
        if not rows:
            from trademl.tracking import MlflowSettings

            print(f"no registered models in {MlflowSettings(tracking_uri=uri).describe()}")
            return 0
        import pandas as pd

        table = pd.DataFrame(rows).drop(columns=["created"])
        table["aliases"] = table["aliases"].map(lambda a: ",".join(a) or "-")
        table["run_id"] = table["run_id"].str[:12]
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.to_string(index=False))
    elif args.models_command == "info":
        info = registry.get_model_info(args.reference, tracking_uri=uri)
        print(json.dumps(info, indent=2, default=str))
    elif args.models_command == "promote":
        mv = registry.promote_model(
            args.name, args.version, stage=args.stage, alias=args.alias, tracking_uri=uri
        )
        print(
            f"{args.name} version {mv.version} is now in stage {mv.current_stage} with "
            f"aliases {', '.join(mv.aliases) or '-'}: models:/{args.name}/{mv.current_stage} "
            f"and models:/{args.name}@{args.alias} resolve to it"
        )
    elif args.models_command == "delete":
        what = (
            f"version {args.version} of {args.name!r}"
            if args.version
            else (f"registered model {args.name!r} with all its versions")
        )
        if not args.yes:
            raise ModelError(f"refusing to delete {what} without --yes")
        print(registry.delete_model(args.name, args.version, tracking_uri=uri))
    return 0


def _cmd_server(args: argparse.Namespace) -> int:
    from trademl.tracking.server import run_server

    return run_server(args.overrides, check_only=args.check)


_HYDRA_COMMANDS = {
    "train": "train, log and register a model",
    "tune": "an Optuna study of trainings, shared by any number of workers",
    "backtest": "backtest a strategy, logged as an MLflow run",
    "walkforward": "walk-forward evaluation: retrain per fold, trade out of sample",
    "live": "live paper trading on candle feeds (`trademl live report JOURNAL`: live versus "
    "backtest)",
}


class _Parser(argparse.ArgumentParser):
    """argparse with trademl's one-line errors (``trademl: error: ...``, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        report(ConfigError(f"{message} (see {self.prog} --help)"))
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trademl", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthetic candles, loading and cleaning reports")
    dsub = data.add_subparsers(dest="data_command", required=True)
    synth = dsub.add_parser("synth", help="write synthetic candles")
    synth.add_argument("--rows", type=int, default=5000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--freq", default="1h")
    synth.add_argument(
        "--momentum",
        type=float,
        default=0.3,
        help="planted AR(1) effect in the trending regime (0 = none)",
    )
    synth.add_argument("--out", required=True, help="output .csv or .parquet")
    synth.set_defaults(func=_cmd_synth)
    check = dsub.add_parser("check", help="load and clean a candle file, print the report")
    check.add_argument("path")
    check.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="cleaning policy override, e.g. --set duplicates=error",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--out", help="write the cleaned candles (.csv or .parquet)")
    check.set_defaults(func=_cmd_check)

    for name, text in _HYDRA_COMMANDS.items():  # run by Hydra: listed here for --help
        sub.add_parser(name, help=f"{text} (Hydra overrides follow; --help for them)")

    models = sub.add_parser("models", help="the MLflow model registry")
    store_help = "the store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)"
    models.add_argument("--tracking-uri", help=store_help)
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="versions with stage, aliases and key test metrics")
    mlist.add_argument("name", nargs="?")
    minfo = msub.add_parser("info", help="one model (NAME) or version (models:/NAME/...)")
    minfo.add_argument("reference")
    mprom = msub.add_parser("promote", help="set the Production stage and champion alias")
    mprom.add_argument("name")
    mprom.add_argument("version")
    mprom.add_argument("--stage", default="Production")
    mprom.add_argument("--alias", default="champion")
    mdel = msub.add_parser("delete", help="delete a version, or a whole model")
    mdel.add_argument("name")
    mdel.add_argument("version", nargs="?")
    mdel.add_argument("--yes", action="store_true", help="confirm the deletion")
    for p in (models, mlist, minfo, mprom, mdel):
        p.set_defaults(func=_cmd_models)
    for p in (mlist, minfo, mprom, mdel):  # also after the subcommand: models list --tracking-uri
        p.add_argument("--tracking-uri", default=argparse.SUPPRESS, help=store_help)

    srv = sub.add_parser(
        "server",
        help="an MLflow tracking server on the configured store (conf/server.yaml)",
        description="Start `mlflow server` on the store of the mlflow preset (mlflow=local: "
        "sqlite:///mlflow.db and ./mlruns; mlflow=team: PostgreSQL and S3), on 127.0.0.1:5000 "
        "unless told otherwise; print its URI once it answers; stop it on Ctrl-C or SIGTERM.",
    )
    srv.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. mlflow=team server.port=5001"
    )
    srv.add_argument(
        "--check", action="store_true", help="check the port and the store, print the command"
    )
    srv.set_defaults(func=_cmd_server)

    chk = sub.add_parser("check", help="checks of your own code: look-ahead")
    csub = chk.add_subparsers(dest="check_command", required=True)
    look = csub.add_parser(
        "lookahead",
        help="does a feature function or strategy use the future? (exit 1 if so)",
        description="Recompute module:function (candles -> DataFrame of features) on many "
        "prefixes and future-perturbed copies of the candles and report every column that "
        "uses the future, with its first offending bar. Exit status: 0 clean, 1 look-ahead "
        "found, 2 usage or data error.",
    )
    look.add_argument("target", help="module:function or module:Strategy (cwd is importable)")
    look.add_argument("--data", help="candle file (CSV or Parquet), or 'synthetic' (default)")
    look.add_argument("--rows", type=int, default=2000, help="synthetic candles (default 2000)")
    look.add_argument("--seed", type=int, default=0, help="synthetic data, cuts, perturbations")
    look.add_argument("--cuts", type=int, default=40, help="cut points (default 40)")
    look.add_argument("--strategy", action="store_true", help="target is a strategy")
    look.add_argument("--json", action="store_true", help="print the report as JSON")
    look.set_defaults(func=_cmd_check_lookahead)

    feats = sub.add_parser("features", help="build the feature matrix, or list the catalogue")
    feats.add_argument("path", nargs="?")
    feats.add_argument("--list", action="store_true", help="print the feature catalogue")
    feats.add_argument("--markdown", action="store_true", help="with --list: as Markdown")
    feats.add_argument("--out", help="write the features (.csv or .parquet)")
    feats.set_defaults(func=_cmd_features)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trademl`` console script; returns the exit status."""
    if argv is None:  # the command itself (not a call from Python): its runs start with it
        from trademl._process import mark_command_start

        mark_command_start()
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args_list)
    except BrokenPipeError:  # `trademl ... | head`: the reader is gone, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _live_report(args_list: list[str]) -> int:
    """``trademl live report ...`` (``trademl live`` itself takes Hydra overrides, which
    always contain ``=``, so the word ``report`` cannot be one)."""
    from trademl.live.report import add_report_parser, run_report

    parser = _Parser(prog="trademl live")
    add_report_parser(parser.add_subparsers(dest="live_command", required=True))
    args = parser.parse_args(["report", *args_list])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_report(args)
    except TradeMLError as exc:
        report(exc)
        return EXIT_USER_ERROR


def _main(args_list: list[str]) -> int:
    if args_list[:2] == ["live", "report"]:
        return _live_report(args_list[2:])
    if args_list[:1] and args_list[0] in _HYDRA_COMMANDS:
        logging.basicConfig(level=logging.WARNING)
        try:
            return _run_hydra(args_list[0], args_list[1:])
        except TradeMLError as exc:
            report(exc)
            return EXIT_USER_ERROR
    parser = build_parser()
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except TradeMLError as exc:
        report(exc)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
