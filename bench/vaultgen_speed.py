"""vaultgen start-up and no-op speed, side by side with `python -c "import typer"`.

Goals (issue 2): `vaultgen --help` at most 1.3x the median of `import typer`;
`generate` with nothing to do under 0.25 s median.

    uv run just bench            # or: uv run python bench/vaultgen_speed.py --runs 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import BIN, compile_sources, report, round_robin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    args = parser.parse_args()

    compile_sources()
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
        samples = round_robin(rows, args.runs, env)
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
    if not report("vaultgen speed", samples, 'python -c "import typer"', goals):
        sys.exit(1)


if __name__ == "__main__":
    main()
