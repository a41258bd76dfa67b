"""The repository's own contracts: the README's two commands, CI running the test one verbatim."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The indented command lines before the README's first rule."""
    head = (REPO / "README.md").read_text().split("\n---\n")[0]
    return [line.strip() for line in head.splitlines() if re.match(r"^    \S", line)]


def test_the_readme_opens_with_the_demo_and_the_test_command():
    demo, test = readme_commands()
    assert demo.endswith("just demo")
    assert test.endswith("just test")


def test_ci_runs_the_readmes_test_command_verbatim():
    _, test = readme_commands()
    ci = (REPO / ".ci/run").read_text().splitlines()
    commands = [line for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == test


def test_ci_installs_every_listed_debian_package():
    ci = (REPO / ".ci/run").read_text()
    assert "apt-get update" in ci
    assert ".ci/debian-packages.txt" in ci


def test_shell_scripts_pass_bash_n():
    for script in (REPO / ".ci/run", *sorted((REPO / "scripts").iterdir())):
        subprocess.run(["bash", "-n", script], check=True)
