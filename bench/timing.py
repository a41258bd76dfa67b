"""Timing whole commands for the benchmarks: round-robin runs, medians, a side-by-side table.

Commands run round-robin, so noise from the shared machine falls on every row
alike; medians and ratios are what to quote.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def compile_sources() -> None:
    """An installed tool has byte-compiled modules (the Nix package does; uv compiles the
    dependencies). Our sources are an editable install: compile them too, or every run
    would pay for compiling them when PYTHONDONTWRITEBYTECODE is set."""
    compileall.compile_dir(REPO / "tools", quiet=1)


def timed(argv: list[str], env: Mapping[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def round_robin(
    rows: Mapping[str, list[str]], runs: int, env: Mapping[str, str]
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for argv in rows.values():  # warm the page cache
        timed(argv, env)
    for _ in range(runs):
        for name, argv in rows.items():
            samples[name].append(timed(argv, env))
    return samples


def report(
    title: str,
    samples: Mapping[str, list[float]],
    baseline: str,
    goals: Mapping[str, tuple[str, bool]],
) -> bool:
    """Print the table; True when every goal is met."""
    medians = {name: statistics.median(s) for name, s in samples.items()}
    runs = len(next(iter(samples.values())))
    short = baseline if len(baseline) <= 12 else "baseline"
    print(f"{title}, {runs} runs each, round-robin ({os.cpu_count()} CPUs)")
    print(f"baseline: {baseline}\n")
    header = f"{'command':<44} {'median':>9} {'min':>9} {'max':>9} {'vs ' + short:>12}  goal"
    print(header)
    print("-" * len(header))
    for name, values in samples.items():
        goal, met = goals.get(name, ("", True))
        verdict = f"{goal} {'met' if met else 'MISSED'}" if goal else ""
        print(
            f"{name:<44} {medians[name] * 1000:>7.1f}ms {min(values) * 1000:>7.1f}ms "
            f"{max(values) * 1000:>7.1f}ms {medians[name] / medians[baseline]:>11.2f}x  {verdict}"
        )
    return all(met for _, met in goals.values())
