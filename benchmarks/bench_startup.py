"""Start-up time: ``import trademl`` and ``trademl --help`` in fresh interpreters.

Each command runs in a new process, ``--repeats`` times (default 5), and the median
wall time is printed. The reference in the same run is ``python -c "import numpy,
pandas"``, the floor any trademl command pays; the ratio column is each command's
median over the reference's. The machine's load average is printed beside the figures.

Run: ``python benchmarks/bench_startup.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _commands() -> list[tuple[str, list[str]]]:
    python = sys.executable
    script = shutil.which("trademl", path=str(Path(python).parent)) or shutil.which("trademl")
    helps = [script, "--help"] if script else [python, "-m", "trademl.cli", "--help"]
    return [
        ("import numpy, pandas (reference)", [python, "-c", "import numpy, pandas"]),
        ("import trademl", [python, "-c", "import trademl"]),
        ("trademl --help", helps),
    ]


def _median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commands = _commands()
    for _, argv in commands:  # warm the OS file cache and numba/pyc caches once
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    load_before = os.getloadavg()
    medians = {label: _median_seconds(argv, args.repeats) for label, argv in commands}
    load_after = os.getloadavg()
    reference = medians[commands[0][0]]
    header = f"{'command':<34} {'median s':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, seconds in medians.items():
        print(f"{label:<34} {seconds:>9.3f} {seconds / reference:>6.2f}")
    print(
        f"\nmedian of {args.repeats} fresh processes each; ratio = median / reference. "
        f"load average (1, 5, 15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )


if __name__ == "__main__":
    main()
