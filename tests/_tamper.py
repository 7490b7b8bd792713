"""Tampering with a registered model's files: the tests of trusted loading share these."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .conftest import client_for


class Planted:
    """A pickle payload: unpickling it creates the file ``path`` (it runs ``open``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def tampered(original, tmp_path, edit, name: str = "baseline_rf") -> str:
    """A copy of ``original``'s model files (``{"dir", "store", "run_id"}``), changed by
    ``edit(dir)``, registered as a new version of ``name``; its ``models:/`` URI."""
    copy = tmp_path / "model"
    shutil.copytree(original["dir"], copy)
    edit(copy)
    mv = client_for(original["store"]).create_model_version(
        name, source=str(copy), run_id=original["run_id"]
    )
    return f"models:/{name}/{mv.version}"


def edit_mlmodel(path: Path, change) -> None:
    data = yaml.safe_load((path / "MLmodel").read_text())
    change(data)
    (path / "MLmodel").write_text(yaml.safe_dump(data))
