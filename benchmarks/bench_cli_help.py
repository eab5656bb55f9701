"""Start-up time of the ``medrobust`` command: ``--help`` and ``list attacks``, cold and warm.

Each command runs as a fresh subprocess (``python -m medrobust.cli``, the same code as the
console script), so every run pays the interpreter start and the imports a user pays. ``list``
is timed with a cold catalogue cache (a new empty ``XDG_CACHE_HOME`` each run: the registries are
imported, torch included, and the catalogue is written) and with a warm one (the catalogue is
read; no torch). The script prints the median, minimum and maximum of ``--repeats`` runs and the
load average before and after, since other work on the machine slows every number.

Usage::

    python benchmarks/bench_cli_help.py --repeats 5 --out benchmarks/results/cli_help.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time_once(args: list[str], cache: Path) -> float:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "medrobust.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0


def _time(args: list[str], repeats: int, *, cold: bool) -> list[float]:
    """Seconds of ``repeats`` runs; cold: each in a new, empty cache folder."""
    times: list[float] = []
    with tempfile.TemporaryDirectory() as warm_cache:
        if not cold:
            _time_once(args, Path(warm_cache))  # fill the cache once
        for _ in range(repeats):
            if cold:
                with tempfile.TemporaryDirectory() as cache:
                    times.append(_time_once(args, Path(cache)))
            else:
                times.append(_time_once(args, Path(warm_cache)))
    return times


def main() -> None:
    """Time the commands and print (and optionally write) the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="Runs per command (median).")
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON.")
    opts = parser.parse_args()
    load_before = os.getloadavg()
    cases = {
        "--help": (["--help"], False),
        "list attacks (warm cache)": (["list", "attacks"], False),
        "list attacks (cold cache)": (["list", "attacks"], True),
    }
    rows = {}
    for label, (args, cold) in cases.items():
        times = _time(args, opts.repeats, cold=cold)
        rows[label] = {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "runs": len(times),
        }
        print(
            f"{label:28s} median {rows[label]['median_s']:.3f} s  "
            f"(min {rows[label]['min_s']:.3f}, max {rows[label]['max_s']:.3f}, n={len(times)})"
        )
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "results": rows,
        }
        opts.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
