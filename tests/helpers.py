"""What every tool's tests share: running a tool as a user does, the one-line failure
contract, and runnable doc examples."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def tool_path(name: str) -> Path:
    """The console script `name` (odbox-backup, dbinit, vaultgen…) of the venv running pytest."""
    return Path(sys.executable).with_name(name)


def run_tool(
    name: str,
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """`NAME ARGS…` as a user runs it; never raises on a non-zero exit. Text in and out,
    unless `input` is bytes."""
    return subprocess.run(
        [str(tool_path(name)), *map(str, args)],
        input=input, capture_output=True, text=not isinstance(input, bytes), env=env, **kwargs,
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure must be exactly one line on stderr, without a traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert "error:" in lines[0]
    return lines[0]


def sh_blocks(text: str) -> list[str]:
    """The ```sh examples of a Markdown page, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.S | re.M)


def run_sh_examples(readme: Path, cwd: Path, env: Mapping[str, str], at_least: int) -> list[str]:
    """Run every ```sh block of `readme` in order with bash -euo pipefail; their outputs."""
    blocks = sh_blocks(readme.read_text())
    assert len(blocks) >= at_least
    outputs = []
    for number, block in enumerate(blocks, start=1):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, f"example {number} failed:\n{block}\n{result.stderr}"
        outputs.append(result.stdout)
    return outputs


def age_key(folder: Path, name: str = "key.txt") -> tuple[Path, str]:
    """A key made by the real age-keygen in `folder`: its file and its `age1…` recipient."""
    key = folder / name
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    return key, public
