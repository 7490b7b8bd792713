"""The repository itself: files the README names are tracked, the examples run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trademl import generate_ohlcv

ROOT = Path(__file__).resolve().parents[1]
# Paths inside the repository as the README writes them (``trademl/...`` is the package).
_PATH = re.compile(
    r"(?<![\w./-])((?:\.ci|benchmarks|conf|docs|examples|notebooks|src|tests|trademl)/"
    r"[\w./-]*)"
)
_TOP_LEVEL = ("Makefile", "MLproject", "python_env.yaml", "pyproject.toml", "LICENSE")


def _tracked() -> set[str] | None:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an sdist): fall back to the file system
    return set(out.stdout.splitlines())


def readme_paths(text: str) -> list[str]:
    """Every repository path the README names (``trademl/x`` means ``src/trademl/x``)."""
    found = {m.rstrip(".") for m in _PATH.findall(text)}
    found |= {name for name in _TOP_LEVEL if re.search(rf"\b{re.escape(name)}\b", text)}
    return sorted(f"src/{p}" if p.startswith("trademl/") else p for p in found)


def test_every_path_the_readme_names_is_in_the_repository():
    paths = readme_paths((ROOT / "README.md").read_text())
    assert "examples/run_live.py" in paths and "conf/train.yaml" in paths  # the regex works
    tracked = _tracked()
    missing = []
    for path in paths:
        target = ROOT / path
        if not target.exists():
            missing.append(path)
            continue
        if tracked is None:
            continue
        # conf/ is a tracked symlink to src/trademl/conf: check the file it resolves to
        rel = target.resolve().relative_to(ROOT.resolve()).as_posix()
        if target.is_dir():
            if not any(t.startswith(rel.rstrip("/") + "/") for t in tracked):
                missing.append(f"{path} (no tracked file under it)")
        elif rel not in tracked:
            missing.append(f"{path} (exists but is not tracked by git)")
    assert not missing, f"README names files that are not in the repository: {missing}"


def _group_keys(conf: Path) -> dict[str, set[str]]:
    """Keys each config group can have: the union over its options and the top-level files."""
    import yaml

    keys: dict[str, set[str]] = {}
    for option in conf.glob("*/*.yaml"):
        data = yaml.safe_load(option.read_text()) or {}
        keys.setdefault(option.parent.name, set()).update(data)
    for option in conf.glob("*/*/*.yaml"):  # nested groups (backtest/costs): their package
        text = option.read_text()
        package = re.search(r"#\s*@package\s+(\w+)", text)
        group = package.group(1) if package else option.parent.parent.name
        keys.setdefault(group, set()).update(yaml.safe_load(text) or {})
    for top in conf.glob("*.yaml"):
        data = yaml.safe_load(top.read_text()) or {}
        for group, value in data.items():
            if isinstance(value, dict):
                keys.setdefault(group, set()).update(value)
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                keys.setdefault(group, set()).update(*value)
    return keys


def test_config_comments_name_existing_files_and_keys():
    """Comments in conf/ name files that exist and ``group.key``s that exist (the triple-barrier
    labels once said "= risk.base_sl_atr_mult", a key that never existed)."""
    conf = ROOT / "src" / "trademl" / "conf"
    keys = _group_keys(conf)
    named = re.compile(rf"(?<![\w./])({'|'.join(keys)})\.(?!yaml\b|py\b)([a-z_]+)\b(?!\()")
    for yaml_file in conf.rglob("*.yaml"):
        comments = " ".join(
            line.split("#", 1)[1] for line in yaml_file.read_text().splitlines() if "#" in line
        )
        for ref in re.findall(r"conf/[\w/]+\.yaml", comments):
            assert (ROOT / ref).exists(), f"{yaml_file.name} names {ref}, which does not exist"
        for group, key in named.findall(comments):
            assert key in keys[group], f"{yaml_file} names {group}.{key}, which is not a key"


@pytest.mark.slow
def test_run_live_example_runs_the_spec_usage(tmp_path):
    """examples/run_live.py: the spec's run_live.py, here with the rule-based strategy."""
    csv = tmp_path / "BTCUSDT_1h.csv"
    generate_ohlcv(300, seed=3, momentum=0.3).to_csv(csv, index_label="timestamp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "run_live.py"),
            f"feeds.0.path={csv}",
            "strategy.type=scalping_ema_rsi",
            "strategy.params=null",
            f"live.journal={tmp_path / 'journal.db'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"mlflow.artifact_root={tmp_path / 'mlruns'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "strategy scalping_ema_rsi on BTCUSDT" in out.stdout
    assert "candles processed: 300" in out.stdout
    assert re.search(r"trades: [1-9]", out.stdout), out.stdout
    assert (tmp_path / "journal.db").exists()
