"""Our Odoo addons (nix/pkgs/odoo-addons/addons): every manifest is a literal Odoo can read,
with the keys Odoo needs; the code compiles; the modules the service stack installs on a new
box exist. Odoo itself is not installed here: the NixOS VM test (nix/checks/stack.nix) asks
/odbox/health of a running Odoo."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDONS = ROOT / "nix" / "pkgs" / "odoo-addons" / "addons"
ALL = sorted(p.parent for p in ADDONS.glob("*/__manifest__.py"))


def test_there_is_at_least_one_addon():
    assert [p.name for p in ALL] == ["odbox_health"]


@pytest.mark.parametrize("addon", ALL, ids=lambda p: p.name)
def test_the_manifest_is_a_literal_with_what_odoo_needs(addon: Path):
    manifest = ast.literal_eval((addon / "__manifest__.py").read_text())
    assert isinstance(manifest, dict)
    assert {"name", "version", "depends", "license", "installable"} <= manifest.keys()
    assert re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"]), "x.y.z: Odoo adds its series"
    assert manifest["license"] in {
        "LGPL-3",
        "GPL-3",
        "AGPL-3",
        "OPL-1",
        "OEEL-1",
        "Other OSI approved licence",
    }
    assert "base" in manifest["depends"] and manifest["installable"] is True
    assert re.fullmatch(r"[a-z][a-z0-9_]*", addon.name)
    assert (addon / "__init__.py").exists()


@pytest.mark.parametrize("addon", ALL, ids=lambda p: p.name)
def test_the_code_compiles_and_imports_only_what_it_has(addon: Path):
    for source in addon.rglob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        compile(tree, str(source), "exec")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None:
                for name in node.names:  # `from . import controllers` names a sibling
                    sibling = source.parent / name.name
                    assert sibling.with_suffix(".py").exists() or (sibling / "__init__.py").exists()


def test_the_health_route_is_public_and_sessionless():
    tree = ast.parse((ADDONS / "odbox_health" / "controllers" / "main.py").read_text())
    routes = [
        d
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for d in node.decorator_list
        if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "route"
    ]
    assert len(routes) == 1
    (route,) = routes
    assert ast.literal_eval(route.args[0]) == "/odbox/health"
    keywords = {k.arg: ast.literal_eval(k.value) for k in route.keywords}
    assert keywords == {"type": "http", "auth": "none", "methods": ["GET"], "save_session": False}


def test_the_modules_a_new_box_installs_exist():
    interface = (ROOT / "nix" / "modules" / "service-stack" / "interface.nix").read_text()
    m = re.search(r"initialModules = mkOption \{.*?default = \[([^\]]*)\]", interface, re.S)
    assert m
    modules = re.findall(r'"([^"]+)"', m.group(1))
    assert modules == ["base", "odbox_health"]
    assert all(name == "base" or (ADDONS / name).is_dir() for name in modules)
