"""The Nix build of the tools (nix/pkgs/tools) reads uv.lock through uv2nix.

In CI: every package of uv.lock without a wheel is one the build gives a build system to, and
every package the tools need has a wheel for each system of the flake.
Locally, with UV2NIX and PYPROJECT_NIX pointing at fetched copies (never committed) and
NIXPKGS_LIB at nixpkgs' lib: uv2nix itself loads the workspace and finds every tool.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

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


# How a wheel's platform tag names each system the flake builds for (PEP 425/600 tags).
PLATFORM_TAGS = {
    "x86_64-linux": r"manylinux\w*_x86_64",
    "aarch64-linux": r"manylinux\w*_aarch64",
    "aarch64-darwin": r"macosx_\d+_\d+_(arm64|universal2)",
    "x86_64-darwin": r"macosx_\d+_\d+_(x86_64|universal2|intel)",
}
# The interpreter nix/pkgs/tools builds the tools with.
PYTHON = (3, 12)


def flake_systems() -> list[str]:
    text = (ROOT / "flake.nix").read_text()
    found = []
    for group in ("linux", "darwin"):
        m = re.search(rf"^\s*{group} = \[([^\]]*)\];", text, re.M)
        assert m, f"flake.nix names its {group} systems"
        found += re.findall(r'"([^"]+)"', m.group(1))
    return found


def marker_environment(system: str) -> dict[str, str]:
    machine, kernel = system.split("-")
    version = f"{PYTHON[0]}.{PYTHON[1]}"
    return {
        "sys_platform": kernel, "platform_system": kernel.capitalize(), "os_name": "posix",
        "platform_machine": "arm64" if system == "aarch64-darwin" else machine,
        "python_version": version, "python_full_version": f"{version}.0",
        "implementation_name": "cpython", "platform_python_implementation": "CPython",
        "platform_release": "", "platform_version": "", "implementation_version": f"{version}.0",
    }  # fmt: skip


def tool_closure(lock: dict[str, Any], system: str) -> set[str]:
    """The packages of uv.lock the five tools need on `system` (markers and extras followed)."""
    from packaging.markers import Marker

    packages = {p["name"]: p for p in lock["package"]}
    env = marker_environment(system)
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(tool, ()) for tool in TOOLS]
    while todo:
        name, extras = todo.pop()
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        if name in seen and not extras:
            continue
        seen.add(name)
        for dep in deps:
            if "marker" in dep and not Marker(dep["marker"]).evaluate({**env, "extra": ""}):
                continue
            todo.append((dep["name"], tuple(dep.get("extra", []))))
    return seen


def _fits(wheel: str, system: str) -> bool:
    """Does a wheel (its file name) install on `system` for PYTHON?"""
    python, abi, platform = wheel.removesuffix(".whl").split("-")[-3:]
    minor = PYTHON[1]
    pythons = python.split(".")
    ok_python = any(
        p in ("py3", f"py3{minor}", f"cp3{minor}")
        or ("abi3" in abi.split(".") and re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= minor)
        for p in pythons
    )
    ok_platform = platform == "any" or any(
        re.fullmatch(PLATFORM_TAGS[system], tag) for tag in platform.split(".")
    )
    return bool(ok_python and ok_platform)


def missing_wheels(lock: dict[str, Any], system: str, sdists: set[str]) -> list[str]:
    packages = {p["name"]: p for p in lock["package"]}
    missing = []
    for name in sorted(tool_closure(lock, system)):
        package = packages[name]
        if {"editable", "virtual", "directory"} & package["source"].keys() or name in sdists:
            continue
        wheels = [w["url"].rsplit("/", 1)[1] for w in package.get("wheels", [])]
        if not any(_fits(w, system) for w in wheels):
            missing.append(f"{name} {package['version']}")
    return missing


def test_every_package_the_tools_need_has_a_wheel_for_every_system_of_the_flake():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    build = (ROOT / "nix" / "pkgs" / "tools" / "default.nix").read_text()
    m = re.search(r"sdists = final: prev: lib\.genAttrs \[([^\]]*)\]", build)
    assert m
    sdists = set(re.findall(r'"([^"]+)"', m.group(1)))
    systems = flake_systems()
    assert {"x86_64-linux", "aarch64-linux"} <= set(systems)
    assert {system: missing_wheels(lock, system, sdists) for system in systems} == {
        system: [] for system in systems
    }


def test_the_wheel_check_sees_a_system_without_a_wheel():
    # cryptography publishes no macOS x86_64 wheel: the reason x86_64-darwin left the flake.
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert any(m.startswith("cryptography ") for m in missing_wheels(lock, "x86_64-darwin", set()))
    assert _fits("cryptography-50.0.2-cp39-abi3-macosx_11_0_arm64.whl", "aarch64-darwin")
    assert not _fits("cryptography-50.0.2-cp314-cp314t-macosx_11_0_arm64.whl", "aarch64-darwin")
    assert _fits("rich-14.0.0-py3-none-any.whl", "x86_64-darwin")
