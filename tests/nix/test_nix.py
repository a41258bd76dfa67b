"""The Nix code, checked with Debian's nix-bin (no nixpkgs): it parses, every option of every
interface.nix has a type, a default (or a stated reason for none) and a description, and every
call of our tools in nix/ and flake.nix names a subcommand and options that exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS = ("vaultgen", "dbinit", "odbox-backup", "k8s-migrate", "ec2-install", "odbox-deploy")
# nix-bin's default config names a build group Debian does not create; nothing is built here.
NIX_ENV = {**os.environ, "NIX_CONFIG": "build-users-group =\nexperimental-features = nix-command"}


def _nix(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} comes with Debian's nix-bin (.ci/debian-packages.txt)"
    return path


def nix_files() -> list[Path]:
    files = sorted(p for p in (ROOT / "nix").rglob("*.nix"))
    files += sorted(HERE.glob("*.nix"))
    if (ROOT / "flake.nix").exists():
        files.append(ROOT / "flake.nix")
    return files


def test_every_nix_file_parses():
    files = nix_files()
    assert len(files) >= 10
    bad = {}
    for path in files:
        result = subprocess.run([_nix("nix-instantiate"), "--parse", path], capture_output=True,
                                text=True, env=NIX_ENV)  # fmt: skip
        if result.returncode != 0:
            bad[str(path.relative_to(ROOT))] = result.stderr.strip()
    assert bad == {}


def _interfaces() -> dict[str, Any]:
    paths = sorted((ROOT / "nix" / "modules").glob("*/interface.nix"))
    assert paths, "the modules keep their options in interface.nix"
    return _evaluate(paths)


def evaluate_json(expression: str) -> Any:
    """The value of a Nix expression, evaluated in full with Debian's nix-instantiate."""
    result = subprocess.run(
        [_nix("nix-instantiate"), "--eval", "--strict", "--json", "--expr", expression],
        capture_output=True, text=True, env=NIX_ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _evaluate(paths: list[Path]) -> dict[str, Any]:
    listed = " ".join(map(str, paths))
    return dict(evaluate_json(f"import {HERE / 'eval-interfaces.nix'} {{ paths = [ {listed} ]; }}"))


def _options(tree: Any, prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(tree, dict) and tree.get("_type") == "option":
        yield prefix, tree
        kind, suffix = tree.get("type", {}), ""
        while isinstance(kind, dict) and "inner" in kind:  # attrsOf/listOf/nullOr (submodule …)
            suffix += ".<name>" if kind["name"].startswith(("attrs", "list")) else ""
            kind = kind["inner"]
        if isinstance(kind, dict) and kind.get("options"):
            yield from _options(kind["options"], prefix + suffix)
        return
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _options(value, f"{prefix}.{key}" if prefix else key)


def test_every_option_has_a_type_a_default_or_a_reason_and_a_description():
    problems = []
    count = 0
    for path, tree in _interfaces().items():
        module = Path(path).parent.name
        for name, option in _options(tree):
            count += 1
            where = f"{module}: {name}"
            if not name.startswith(f"odbox.{module}."):
                problems.append(f"{where}: options of module {module} live under odbox.{module}")
            if (
                not isinstance(option.get("type"), dict)
                or option["type"].get("_type") != "option-type"
            ):
                problems.append(f"{where}: no type")
            description = option.get("description")
            if not isinstance(description, str) or len(description.strip()) < 10:
                problems.append(f"{where}: no description")
            elif "default" not in option and "No default:" not in description:
                problems.append(
                    f"{where}: no default, and the description gives no 'No default:' reason"
                )
    assert count >= 20
    assert problems == []


def test_the_option_reader_catches_what_it_should(tmp_path: Path):
    """The check above must be able to fail: an interface with each mistake is caught."""
    bad = tmp_path / "modules" / "broken"
    bad.mkdir(parents=True)
    (bad / "interface.nix").write_text("""{ lib, ... }: {
      options.odbox.broken = {
        untyped = lib.mkOption { default = 1; description = "An option without a type."; };
        undocumented = lib.mkOption { type = lib.types.int; default = 1; };
        required = lib.mkOption { type = lib.types.str; description = "Has no default."; };
        fine = lib.mkOption { type = lib.types.str; description = "No default: user's."; };
      };
    }""")
    options = dict(_options(next(iter(_evaluate([bad / "interface.nix"]).values()))))
    assert "type" not in options["odbox.broken.untyped"]
    assert "description" not in options["odbox.broken.undocumented"]
    assert "default" not in options["odbox.broken.required"]
    assert "No default:" in options["odbox.broken.fine"]["description"]


# ----------------------------------------------------------------------------- tool calls

_TOOL = "|".join(map(re.escape, TOOLS))
# A call is `…/bin/TOOL SUB --opt …`, or `${NAME} SUB --opt …` where the file binds
# NAME = "${…}/bin/TOOL"; prose that mentions a tool is not a call.
_ALIAS = re.compile(r'(\w+)\s*=\s*"\$\{[^}]*\}/bin/(' + _TOOL + r')"')
_REST = r"\s+([a-z][a-z-]*)([^\"\n;&|`]*)"


def tool_calls() -> list[tuple[str, str, str, list[str]]]:
    """(file:line, tool, subcommand, options) for every call of our tools in nix/ and flake.nix."""
    calls = []
    for path in nix_files():
        if path.parent == HERE:
            continue
        text = path.read_text()
        aliases = dict(_ALIAS.findall(text))
        names = "|".join(map(re.escape, aliases))
        pattern = rf"/bin/({_TOOL}){_REST}"
        if names:
            pattern = rf"(?:/bin/({_TOOL})|\$\{{({names})\}}){_REST}"
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for m in re.finditer(pattern, line):
                if names:
                    tool, alias, sub, rest = m.groups()
                    tool = tool or aliases[alias]
                else:
                    tool, sub, rest = m.groups()
                options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)
                calls.append((f"{path.relative_to(ROOT)}:{number}", tool, sub, options))
    return calls


def _help(tool: str, sub: str) -> subprocess.CompletedProcess[str]:
    module = {"odbox-backup": "odbox_backup", "k8s-migrate": "k8s_migrate",
              "ec2-install": "ec2_install",
              "odbox-deploy": "odbox_deploy"}.get(tool, tool)  # fmt: skip
    return subprocess.run([sys.executable, "-m", module, sub, "--help"], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def test_every_call_of_our_tools_in_nix_names_a_real_subcommand_and_options():
    calls = tool_calls()
    assert len(calls) >= 5, calls
    problems = []
    for where, tool, sub, options in calls:
        result = _help(tool, sub)
        if result.returncode != 0:
            problems.append(f"{where}: `{tool} {sub}` is not a command ({result.stderr.strip()})")
            continue
        for option in options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout):
                problems.append(f"{where}: `{tool} {sub}` has no option {option}")
    assert problems == []


def test_the_call_finder_catches_a_drifted_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nix = tmp_path / "nix"
    nix.mkdir()
    (nix / "drift.nix").write_text(
        '{ pkgs, ... }: let db = "${pkgs.dbinit}/bin/dbinit"; in {\n'
        '  ExecStart = "${pkgs.odbox-backup}/bin/odbox-backup run --hot --fast";\n'
        '  ExecStop = "${db} setupp --odoo-db odoo";\n'
        '  description = "odbox-backup snapshots, in prose";\n}\n'
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    calls = tool_calls()
    assert [(t, s, o) for _, t, s, o in calls] == [
        ("odbox-backup", "run", ["--hot", "--fast"]),
        ("dbinit", "setupp", ["--odoo-db"]),
    ]
    assert "--fast" not in _help("odbox-backup", "run").stdout
    assert _help("dbinit", "setupp").returncode != 0


# ----------------------------------------------------------------------------- docs


def _nix_blocks(text: str) -> list[str]:
    return re.findall(r"```nix\n(.*?)```", text, flags=re.S)


def test_every_nix_example_in_the_module_docs_parses_and_names_real_options():
    known = {name for tree in _interfaces().values() for name, _ in _options(tree)}
    # an attribute set of plain values (odoo.settings) takes any name below it
    known |= {
        f"{name}.<name>"
        for tree in _interfaces().values()
        for name, option in _options(tree)
        if option.get("type", {}).get("name", "").startswith("attrs of")
        and not option["type"].get("inner", {}).get("options")
    }
    docs = sorted((ROOT / "nix" / "modules").glob("*/docs.md"))
    assert docs
    problems = []
    for doc in docs:
        blocks = _nix_blocks(doc.read_text())
        if not blocks:
            problems.append(f"{doc.parent.name}/docs.md has no ```nix example")
        for block in blocks:
            expression = "{ pkgs, ... }: {\n" + block + "\n}"
            result = subprocess.run([_nix("nix-instantiate"), "--parse", "--expr", expression],
                                    capture_output=True, text=True, env=NIX_ENV)  # fmt: skip
            if result.returncode != 0:
                problems.append(f"{doc.parent.name}/docs.md: {result.stderr.strip()}")
                continue
            for path in _assigned_paths(block):
                if not _known(path, known):
                    problems.append(f"{doc.parent.name}/docs.md: no option {path}")
    assert problems == []


def _known(path: str, known: set[str]) -> bool:
    """`path` is an option, where `<name>` in an option stands for any attribute name."""
    parts = path.split(".")
    for option in known:
        pattern = option.split(".")
        if len(pattern) == len(parts) and all(
            p in ("<name>", a) for p, a in zip(pattern, parts, strict=True)
        ):
            return True
    return False


def _assigned_paths(block: str) -> list[str]:
    """The option paths a snippet sets, e.g. odbox.backup.keep.daily (nested sets followed)."""
    paths: list[str] = []
    stack: list[str] = []
    for line in block.splitlines():
        code = line.split("#", 1)[0].strip()
        if m := re.match(r"([\w.-]+)\s*=\s*(\{)?", code):
            full = ".".join([*stack, m.group(1)])
            if not m.group(2):
                paths.append(full)
            elif code.rstrip(";").endswith("}"):  # a set on one line: keep = { daily = 7; };
                paths += [f"{full}.{name}" for name in re.findall(r"([\w-]+)\s*=", code[m.end() :])]
            else:
                stack.append(m.group(1))
        elif code.startswith("}") and stack:
            stack.pop()
    return [p for p in paths if p.startswith("odbox.")]


def test_the_docs_reader_sees_a_misspelt_option():
    block = "odbox.backup = {\n  enabel = true;\n  keep = { daily = 7; };\n};\nnetworking.x = 1;"
    assert _assigned_paths(block) == ["odbox.backup.enabel", "odbox.backup.keep.daily"]
    known = {"odbox.backup.enable", "odbox.vault.secrets.<name>.file"}
    assert not _known("odbox.backup.enabel", known)
    assert _known("odbox.vault.secrets.anything.file", known)
    assert not _known("odbox.vault.secrets.anything.fiel", known)


# ----------------------------------------------------------------------------- flake


def test_the_flake_has_every_machine_ec2_install_switches_to_and_its_boot_variant():
    from ec2_install.spec import NODES

    shape = evaluate_json(f"import {HERE / 'flake-shape.nix'}")
    assert set(shape["outputs"]) == {
        "overlays", "nixosModules", "packages", "apps", "devShells",
        "nixosConfigurations", "checks",
    }  # fmt: skip
    machines = set(shape["nixosConfigurations"])
    assert machines == {name + boot for name in ("devm", *NODES.values()) for boot in ("", "-boot")}
    assert shape["nixosModule"] == str(ROOT / "nix" / "modules")
    # every input is pinned by the lock, not by an invented hash in the URL
    assert all(url.startswith("github:") and "?" not in url for url in shape["inputs"].values())
    for node in ("devm-aarch64", *NODES.values()):
        assert (ROOT / "nix" / "nodes" / node / "default.nix").exists()


# nixpkgs aliases that are deprecated (they warn at evaluation, and go away): alias -> name
DEPRECATED = {"nixfmt-rfc-style": "nixfmt"}


def test_no_nix_file_names_a_deprecated_nixpkgs_alias():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {alias} (now {name})"
        for path in nix_files()
        if path.parent != HERE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for alias, name in DEPRECATED.items()
        if re.search(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", line)
    ]
    assert found == []
