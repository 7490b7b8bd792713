"""Only trusted model files load: tampered, foreign and corrupt artifacts are ModelErrors that
name the model and version, and nothing planted in them runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from trademl import ModelError, generate_ohlcv
from trademl.models import SKOPS_TRUSTED_TYPES
from trademl.registry import load_model
from trademl.strategies import MLStrategy

from ._tamper import Planted, edit_mlmodel, tampered
from .conftest import client_for

NAME = "baseline_rf"


@pytest.fixture(scope="module")
def original(production_model):
    """The production model's files and run, to copy and tamper with."""
    store = production_model["store"]
    client = client_for(store)
    version = production_model["result"].registered_version
    source = client.get_model_version_download_uri(NAME, version)
    run_id = client.get_model_version(NAME, version).run_id
    return {"store": store, "dir": Path(source.removeprefix("file://")), "run_id": run_id}


def load(original, uri):
    return load_model(uri, tracking_uri=original["store"]["uri"])


def test_the_untouched_model_loads(original):
    assert load(original, f"models:/{NAME}/Production").model is not None


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_a_pickle_model_is_refused_and_nothing_runs(original, tmp_path, fmt):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Planted(str(marker)))
    pickle.loads(pickle.dumps(Planted(str(tmp_path / "proof"))))  # the payload is live
    assert (tmp_path / "proof").exists()

    def plant(path: Path) -> None:
        (path / "model.pkl").write_bytes(payload)

        def change(data):
            data["flavors"]["sklearn"].update(serialization_format=fmt, pickled_model="model.pkl")
            data["flavors"]["python_function"]["model_path"] = "model.pkl"

        edit_mlmodel(path, change)

    uri = tampered(original, tmp_path, plant)
    version = uri.rsplit("/", 1)[1]
    with pytest.raises(ModelError, match=rf"{NAME}/{version}.*serialization_format '{fmt}'"):
        load(original, uri)
    with pytest.raises(ModelError, match="only skops"):
        MLStrategy(model_uri=uri, tracking_uri=original["store"]["uri"]).load()
    assert not marker.exists()


def test_a_widened_trusted_type_list_is_refused(original, tmp_path):
    def widen(path: Path) -> None:
        edit_mlmodel(
            path,
            lambda d: d["flavors"]["sklearn"]["skops_trusted_types"].append("builtins.eval"),
        )

    uri = tampered(original, tmp_path, widen)
    with pytest.raises(ModelError, match=r"asks to trust \['builtins.eval'\].*refusing") as info:
        load(original, uri)
    assert uri in str(info.value)


def test_a_type_outside_the_projects_list_is_refused_even_if_mlmodel_trusts_it(original, tmp_path):
    evil = Pipeline([("f", FunctionTransformer(func=print))])

    def swap(path: Path) -> None:
        sio.dump(evil, path / "model.skops")
        edit_mlmodel(path, lambda d: d["flavors"]["sklearn"].update(skops_trusted_types=[]))

    uri = tampered(original, tmp_path, swap)
    with pytest.raises(ModelError, match="does not trust: builtins.print"):
        load(original, uri)
    assert "builtins.print" not in {t for ts in SKOPS_TRUSTED_TYPES.values() for t in ts}


def test_the_estimator_is_the_runs_not_the_files(original, tmp_path):
    """The trusted types are chosen by the estimator the training run recorded; an MLmodel that
    names another one (say, one with a wider list) is refused."""

    def rename(path: Path) -> None:
        edit_mlmodel(
            path,
            lambda d: d["metadata"]["trademl"].update(estimator="lightgbm.LGBMClassifier"),
        )

    with pytest.raises(ModelError, match="says estimator 'lightgbm.LGBMClassifier', the run"):
        load(original, tampered(original, tmp_path, rename))


def test_a_model_naming_no_estimator_anywhere_is_refused(original, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(original["dir"], copy)
    edit_mlmodel(copy, lambda d: d["metadata"]["trademl"].pop("estimator"))
    mv = client_for(original["store"]).create_model_version(NAME, source=str(copy))  # no run
    with pytest.raises(ModelError, match="neither its run nor its MLmodel names the estimator"):
        load(original, f"models:/{NAME}/{mv.version}")


@pytest.mark.parametrize(
    ("case", "edit", "message"),
    [
        ("truncated", lambda p: _truncate(p / "model.skops"), "corrupt or truncated"),
        ("empty", lambda p: (p / "model.skops").write_bytes(b""), "model.skops is empty"),
        ("missing", lambda p: (p / "model.skops").unlink(), "'model.skops' named in MLmodel is"),
        ("garbage MLmodel", lambda p: (p / "MLmodel").write_text("{: ["), "not valid YAML"),
        ("MLmodel a list", lambda p: (p / "MLmodel").write_text("- 1\n"), "not a mapping"),
        ("no MLmodel", lambda p: (p / "MLmodel").unlink(), "has no MLmodel file"),
        ("no sklearn", lambda p: edit_mlmodel(p, lambda d: d["flavors"].pop("sklearn")), "no sk"),
        ("not a zip", lambda p: (p / "model.skops").write_bytes(b"x" * 500), "corrupt"),
        ("flavors a list", lambda p: _set(p, "flavors", ["sklearn"]), "no sklearn flavour"),
        ("flavors text", lambda p: _set(p, "flavors", "sklearn"), "no sklearn flavour"),
        ("estimator a list", lambda p: _meta(p, estimator=["a"]), r"estimator as \['a'\]"),
        ("format a list", lambda p: _flavor(p, serialization_format=["skops"]), "refusing"),
        ("file a list", lambda p: _flavor(p, pickled_model=["model.skops"]), "model file as"),
        ("path traversal", lambda p: _flavor(p, pickled_model="../model.skops"), "is missing"),
    ],
)
def test_corrupt_artifacts_are_model_errors_naming_model_and_version(
    original, tmp_path, case, edit, message
):
    uri = tampered(original, tmp_path, edit)
    with pytest.raises(ModelError, match=message) as info:
        load(original, uri)
    assert uri in str(info.value), case


def test_metadata_that_is_not_a_mapping_is_no_metadata(original, tmp_path):
    uri = tampered(original, tmp_path, lambda p: _set(p, "metadata", {"trademl": "x"}))
    assert load(original, uri).trademl == {}  # the model itself is fine
    strategy = MLStrategy(model_uri=uri, tracking_uri=original["store"]["uri"])
    with pytest.raises(ModelError, match="has no trademl feature metadata"):
        strategy.load()


def test_deleted_model_files_are_a_model_error(original, tmp_path):
    uri = tampered(original, tmp_path, lambda p: None)
    shutil.rmtree(tmp_path / "model")
    with pytest.raises(ModelError, match="model files are missing"):
        load(original, uri)


def _set(path: Path, key: str, value) -> None:
    edit_mlmodel(path, lambda d: d.update({key: value}))


def _meta(path: Path, **values) -> None:
    edit_mlmodel(path, lambda d: d["metadata"]["trademl"].update(values))


def _flavor(path: Path, **values) -> None:
    edit_mlmodel(path, lambda d: d["flavors"]["sklearn"].update(values))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_backtest_and_live_refuse_a_pickle_model_in_one_line(
    original, tmp_path, monkeypatch, capsys
):
    """The command line: one `trademl: error:` line naming the model, nothing planted runs."""
    marker = tmp_path / "pwned"

    def plant(path: Path) -> None:
        (path / "model.pkl").write_bytes(pickle.dumps(Planted(str(marker))))
        edit_mlmodel(
            path,
            lambda d: d["flavors"]["sklearn"].update(
                serialization_format="pickle", pickled_model="model.pkl"
            ),
        )

    uri = tampered(original, tmp_path, plant)
    csv = tmp_path / "candles.csv"
    generate_ohlcv(300, seed=1).to_csv(csv, index_label="timestamp")
    from trademl.cli import main as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", original["store"]["uri"])
    commands = [
        ["backtest", f"model={uri}", "data=csv", f"data.path={csv}"],
        [
            "live",
            f"feeds.0.path={csv}",
            f"strategy.params.model_name={NAME}",
            f"+strategy.params.model_uri={uri}",
            f"live.journal={tmp_path / 'j.db'}",
        ],
    ]
    for args in commands:
        assert cli([*args, "hydra/job_logging=none", "hydra/hydra_logging=none"]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert lines[-1].startswith("trademl: error:") and uri in lines[-1], err
        assert "serialization_format 'pickle'" in lines[-1]
        assert "Traceback" not in err
    assert not marker.exists()


def test_extra_files_beside_the_model_come_back_with_it(original, tmp_path):
    from trademl.tracking.model_files import EXTRAS_DIR

    def add_extra(path: Path) -> None:
        (path / EXTRAS_DIR).mkdir(exist_ok=True)
        (path / EXTRAS_DIR / "note.bin").write_bytes(b"\x00compiled")

    store = original["store"]["uri"]
    assert "note.bin" not in load_model(f"models:/{NAME}/1", tracking_uri=store).extras
    uri = tampered(original, tmp_path, add_extra)
    loaded = load_model(uri, tracking_uri=store)
    assert loaded.extras["note.bin"] == b"\x00compiled"
