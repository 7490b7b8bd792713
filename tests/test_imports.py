"""Start-up stays lean: ``import trademl`` and ``trademl --help`` load no heavy library
(not even pandas: the package's names and the CLI's commands import what they need).

The EMA/Wilder recursion that used ``scipy.signal.lfilter`` now runs in a numba kernel
loaded on first use; it is checked here to give lfilter's values exactly.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.signal import lfilter

from trademl._indicators_nb import first_order_recursion_nb

HEAVY = ("scipy", "mlflow", "matplotlib", "sklearn", "numba", "pandas")

_REPORT = "import sys; print(' '.join(m for m in {heavy!r} if m in sys.modules))"

IMPORT = "import trademl\n" + _REPORT

HELP = (
    "import contextlib, io, sys\n"
    "sys.argv = ['trademl', '--help']\n"
    "from trademl.cli import main\n"
    "out = io.StringIO()\n"
    "with contextlib.redirect_stdout(out):\n"
    "    try:\n"
    "        main()\n"
    "    except SystemExit as exc:\n"
    "        assert exc.code in (0, None), exc.code\n"
    "assert 'usage: trademl' in out.getvalue(), out.getvalue()\n" + _REPORT
)


@pytest.mark.parametrize("script", [IMPORT, HELP], ids=["import trademl", "trademl --help"])
def test_start_up_loads_no_heavy_library(script):
    code = script.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == []


def test_the_check_sees_a_heavy_import():
    # the same probe reports a library once something has imported it
    code = ("import trademl.evaluation\n" + _REPORT).format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "sklearn" in done.stdout.split()


@given(
    x=hnp.arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    period=st.integers(1, 400),
    wilder=st.booleans(),
    seed=st.floats(-1e12, 1e12),
)
def test_recursion_equals_lfilter(x, period, wilder, seed):
    alpha = 1.0 / period if wilder else 2.0 / (period + 1)
    decay = 1.0 - alpha
    ref, _ = lfilter([alpha], [1.0, -decay], x, zi=[decay * seed])
    ours = first_order_recursion_nb(x, alpha, decay, decay * seed)
    # the same floats, NaN at the same places (a NaN's sign bit may differ)
    np.testing.assert_array_equal(ours, ref)
