"""The MLflow registry: promotion to stage and alias, loading by any URI, clear errors."""

from __future__ import annotations

import pytest

from trademl import ModelError
from trademl.cli import main as cli
from trademl.registry import (
    delete_model,
    get_model_info,
    list_models,
    load_model,
    parse_model_uri,
    promote_model,
    resolve_version,
)
from trademl.train import train

from .conftest import client_for, fast_overrides


@pytest.fixture
def two_versions(store, compose):
    first = train(compose(fast_overrides(store)))
    second = train(compose(fast_overrides(store, "seed=7")))
    return first, second


def test_parse_references():
    assert parse_model_uri("baseline_rf").stage == "Production"
    assert parse_model_uri("models:/baseline_rf/production").stage == "Production"
    assert parse_model_uri("models:/baseline_rf@champion").alias == "champion"
    assert parse_model_uri("models:/baseline_rf/3").version == "3"
    assert parse_model_uri("runs:/abc/model").run_id == "abc"
    with pytest.raises(ModelError, match="unknown stage 'Live'"):
        parse_model_uri("models:/baseline_rf/Live")
    with pytest.raises(ModelError, match="not a model reference"):
        parse_model_uri("s3://bucket/model")


def test_promote_sets_stage_and_alias_and_archives_the_previous(two_versions, store):
    uri = store["uri"]
    promote_model("baseline_rf", 1, tracking_uri=uri)
    assert load_model("models:/baseline_rf/Production", tracking_uri=uri).version == "1"
    mv = promote_model("baseline_rf", "2", tracking_uri=uri)
    assert (mv.current_stage, mv.aliases) == ("Production", ["champion"])
    for ref in ("models:/baseline_rf/Production", "models:/baseline_rf@champion", "baseline_rf"):
        loaded = load_model(ref, tracking_uri=uri)
        assert loaded.version == "2" and loaded.run_id == two_versions[1].run_id
    rows = {r["version"]: r for r in list_models("baseline_rf", tracking_uri=uri)}
    assert rows[1]["stage"] == "Archived" and rows[2]["stage"] == "Production"
    assert rows[2]["aliases"] == ["champion"] and rows[1]["aliases"] == []
    assert rows[2]["test_balanced_accuracy"] == pytest.approx(
        two_versions[1].metrics["test_balanced_accuracy"], abs=1e-4
    )


def test_versions_are_never_overwritten(two_versions, store):
    first, _ = two_versions
    v1 = load_model("models:/baseline_rf/1", tracking_uri=store["uri"])
    assert v1.run_id == first.run_id


def test_info_of_version_and_model(two_versions, store):
    info = get_model_info("models:/baseline_rf/2", tracking_uri=store["uri"])
    assert info["version"] == 2 and info["params"]["seed"] == "7"
    assert info["trademl"]["feature_names"][0] == "open_norm"
    assert info["feature_count"] == 49 and info["pyfunc_loader"] == "trademl.serving"
    whole = get_model_info("baseline_rf", tracking_uri=store["uri"])
    assert [v["version"] for v in whole["versions"]] == [1, 2]


def test_errors_name_what_is_missing_and_what_exists(two_versions, store):
    uri = store["uri"]
    with pytest.raises(
        ModelError,
        match=r"no version of 'baseline_rf' in stage 'Production'; "
        r"versions: 1 \(None\), 2 \(None\)",
    ):
        load_model("models:/baseline_rf/Production", tracking_uri=uri)
    with pytest.raises(ModelError, match="has no alias 'champion'"):
        resolve_version("models:/baseline_rf@champion", tracking_uri=uri)
    with pytest.raises(ModelError, match="has no version 9; versions: 1"):
        load_model("models:/baseline_rf/9", tracking_uri=uri)
    with pytest.raises(ModelError, match=r"no registered model 'btc_rf'.*baseline_rf"):
        load_model("models:/btc_rf/Production", tracking_uri=uri)


def test_delete_version_then_model(two_versions, store):
    uri = store["uri"]
    assert delete_model("baseline_rf", 1, tracking_uri=uri) == "deleted version 1 of 'baseline_rf'"
    assert [r["version"] for r in list_models(tracking_uri=uri)] == [2]
    assert "1 version(s)" in delete_model("baseline_rf", tracking_uri=uri)
    assert list_models(tracking_uri=uri) == []
    # the runs (and their artifacts) stay: only registry entries go
    assert client_for(store).get_run(two_versions[0].run_id).info.status == "FINISHED"


def test_models_cli(two_versions, store, capsys):
    uri = ["--tracking-uri", store["uri"]]
    assert cli(["models", *uri, "promote", "baseline_rf", "1"]) == 0
    assert (
        "models:/baseline_rf/Production and models:/baseline_rf@champion" in capsys.readouterr().out
    )
    assert cli(["models", *uri, "list"]) == 0
    out = capsys.readouterr().out
    assert "Production" in out and "champion" in out and "test_balanced_accuracy" in out
    assert cli(["models", *uri, "delete", "baseline_rf", "2"]) == 2
    assert "without --yes" in capsys.readouterr().err
    assert cli(["models", *uri, "delete", "baseline_rf", "2", "--yes"]) == 0
    assert cli(["models", *uri, "info", "models:/baseline_rf/Staging"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trademl: error: no version of 'baseline_rf' in stage 'Staging'")
