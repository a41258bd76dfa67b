"""The Nix build of the tools (nix/pkgs/tools) reads uv.lock through uv2nix.

In CI: every package of uv.lock without a wheel is one the build gives a build system to.
Locally, with UV2NIX and PYPROJECT_NIX pointing at fetched copies (never committed) and
NIXPKGS_LIB at nixpkgs' lib: uv2nix itself loads the workspace and finds every tool.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from tests.nix.test_nix import HERE, ROOT, TOOLS, evaluate_json


def test_every_sdist_only_package_of_the_lock_gets_a_build_system():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    sdist_only = {
        p["name"]
        for p in lock["package"]
        if not p.get("wheels") and not {"editable", "virtual", "directory"} & p["source"].keys()
    }
    build = (ROOT / "nix" / "pkgs" / "tools" / "default.nix").read_text()
    m = re.search(r"sdists = final: prev: lib\.genAttrs \[([^\]]*)\]", build)
    assert m, "nix/pkgs/tools/default.nix names the sdists it gives setuptools"
    assert set(re.findall(r'"([^"]+)"', m.group(1))) == sdist_only


def test_the_lock_has_nothing_uv2nix_cannot_read():
    # uv2nix (July 2026) refuses a lock entry with keys it does not know, such as the
    # default-groups uv writes when [tool.uv] sets them.
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    known = {
        "name", "version", "source", "resolution-markers", "dependencies",
        "optional-dependencies", "dev-dependencies", "metadata", "wheels", "sdist",
    }  # fmt: skip
    assert [
        (p["name"], sorted(p.keys() - known)) for p in lock["package"] if p.keys() - known
    ] == []


PATHS = {name: os.environ.get(name) for name in ("UV2NIX", "PYPROJECT_NIX", "NIXPKGS_LIB")}


@pytest.mark.skipif(
    not all(PATHS.values()),
    reason="needs uv2nix, pyproject.nix and nixpkgs lib, which are fetched, never committed, "
    "and CI cannot reach GitHub: set UV2NIX, PYPROJECT_NIX and NIXPKGS_LIB to local copies",
)
def test_uv2nix_loads_the_workspace_with_every_tool():
    expression = (
        f"import {HERE / 'eval-workspace.nix'} {{ nixpkgsLib = {PATHS['NIXPKGS_LIB']}; "
        f"uv2nix = {PATHS['UV2NIX']}; pyprojectNix = {PATHS['PYPROJECT_NIX']}; }}"
    )
    deps = evaluate_json(expression)
    assert set(TOOLS) <= deps["default"].keys()
    assert deps["all"]["odoo-box"] == ["dev"]
    assert Path(PATHS["UV2NIX"], "lib", "workspace.nix").exists()
