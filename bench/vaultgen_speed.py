"""vaultgen start-up and no-op speed, side by side with `python -c "import typer"`.

Goals (issue 2): `vaultgen --help` at most 1.3x the median of `import typer`;
`generate` with nothing to do under 0.25 s median. Commands run round-robin, so
noise from the shared machine falls on every row alike; medians and ratios are
what to quote.

    uv run just bench            # or: uv run python bench/vaultgen_speed.py --runs 40
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    args = parser.parse_args()

    # An installed tool has byte-compiled modules (the Nix package does; uv compiles the
    # dependencies). Our sources are an editable install: compile them too, or every run
    # would pay for compiling them when PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(REPO / "tools", quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTGEN_")}
    work = Path(tempfile.mkdtemp(prefix="vaultgen-bench-"))
    try:
        vault = work / "vault"
        vaultgen = str(BIN / "vaultgen")
        subprocess.run([vaultgen, "--vault", vault, "generate", "--batch"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        on_vault = [vaultgen, "--vault", str(vault)]
        rows = {
            'python -c "import typer"': [sys.executable, "-c", "import typer"],
            "vaultgen --help": [vaultgen, "--help"],
            "vaultgen generate (nothing to do)": [*on_vault, "generate", "--batch"],
            "vaultgen status": [*on_vault, "status"],
            "vaultgen check (decrypts, verifies all)": [*on_vault, "check"],
        }
        samples: dict[str, list[float]] = {name: [] for name in rows}
        for argv in rows.values():  # warm the page cache
            timed(argv, env)
        for _ in range(args.runs):
            for name, argv in rows.items():
                samples[name].append(timed(argv, env))
    finally:
        shutil.rmtree(work)

    medians = {name: statistics.median(s) for name, s in samples.items()}
    baseline = medians['python -c "import typer"']
    goals = {
        "vaultgen --help": ("<= 1.3x import typer", medians["vaultgen --help"] <= 1.3 * baseline),
        "vaultgen generate (nothing to do)": (
            "< 250 ms",
            medians["vaultgen generate (nothing to do)"] < 0.25,
        ),
    }
    print(f"vaultgen speed, {args.runs} runs each, round-robin ({os.cpu_count()} CPUs)\n")
    header = f"{'command':<42} {'median':>9} {'min':>9} {'max':>9} {'vs typer':>9}  goal"
    print(header)
    print("-" * len(header))
    for name, values in samples.items():
        goal, met = goals.get(name, ("", True))
        verdict = f"{goal} {'met' if met else 'MISSED'}" if goal else ""
        print(
            f"{name:<42} {medians[name] * 1000:>7.1f}ms {min(values) * 1000:>7.1f}ms "
            f"{max(values) * 1000:>7.1f}ms {medians[name] / baseline:>8.2f}x  {verdict}"
        )
    if not all(met for _, met in goals.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
