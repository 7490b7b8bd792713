"""The trademl command: subcommands work, user errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from trademl.cli import main


def test_synth_check_features(tmp_path, capsys):
    csv = tmp_path / "c.csv"
    assert main(["data", "synth", "--rows", "400", "--seed", "1", "--out", str(csv)]) == 0
    assert main(["data", "check", str(csv), "--out", str(tmp_path / "clean.parquet")]) == 0
    out = capsys.readouterr().out
    assert "rows in 400, rows out 400" in out
    assert main(["features", str(csv), "--out", str(tmp_path / "f.parquet")]) == 0
    assert "49 features on 350 rows (50 warm-up rows removed)" in capsys.readouterr().out
    assert pd.read_parquet(tmp_path / "f.parquet").shape == (350, 49)


def test_check_json_and_policy_override(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n2024-01-01T00:00Z,1,2,0.5,1.5,1\n"
        "2024-01-01T00:00Z,1,2,0.5,1.6,1\n"
    )
    assert main(["data", "check", str(csv), "--json"]) == 0
    assert '"duplicate_rows_dropped": 1' in capsys.readouterr().out
    assert main(["data", "check", str(csv), "--set", "duplicates=error"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trademl: error:") and "duplicate timestamps" in err
    assert err.count("\n") == 1


def test_list_catalogue(capsys):
    assert main(["features", "--list"]) == 0
    assert capsys.readouterr().out.count("\n") == 50


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trademl.cli", "data", "check", str(tmp_path / "missing.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"trademl: error: {tmp_path / 'missing.csv'}: file not found"
    assert "Traceback" not in proc.stderr


def test_top_level_api_is_complete_and_lazy():
    import subprocess
    import sys

    import trademl

    for name in trademl.__all__:
        assert getattr(trademl, name) is not None, name
    code = "import sys, trademl; print('mlflow' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.split() == ["False", "False"]  # `import trademl` stays light for the CLI
