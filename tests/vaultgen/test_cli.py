"""The command line itself: no secrets in argv, JSON that parses, help that is plain and fast
to import, status and graph."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.vaultgen.helpers import VAULTGEN, vaultgen, vaultgen_ok
from vaultgen.cli import app

SECRET_WORDS = re.compile(r"pass|secret|token|key|identity|private", re.IGNORECASE)


def all_commands() -> dict[str, typer.main.TyperGroup]:
    root = typer.main.get_command(app)
    commands = {"vaultgen": root}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        commands[f"vaultgen {name}"] = command
    return commands


# Every option that takes a value, reviewed: none of them carries a secret.
VALUE_OPTIONS = {
    "--vault", "--mode", "--name", "--san", "--days", "--file", "--out", "--identity",
    "--accept-age",
}  # fmt: skip


def test_no_option_takes_a_secret_as_its_value():
    """A new option that takes a value fails this test until it is reviewed and listed."""
    seen = set()
    for path, command in all_commands().items():
        for param in command.params:
            if param.param_type_name != "option" or param.is_flag:
                continue
            name = max(param.opts, key=len)
            seen.add(name)
            assert name in VALUE_OPTIONS, f"{path} {name}: review it, then list it"
            if SECRET_WORDS.search(name):
                assert param.type.name in ("path", "file"), f"{path} {name} takes a secret"
    assert seen == VALUE_OPTIONS


def test_no_argument_is_a_secret():
    for path, command in all_commands().items():
        for param in command.params:
            if param.param_type_name == "argument":
                assert not re.search(r"pass|secret", param.name or "", re.I), f"{path} {param.name}"


@pytest.mark.parametrize("command", list(all_commands()))
def test_every_command_has_plain_help(command):
    args = command.split()[1:]
    result = subprocess.run([VAULTGEN, *args, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: vaultgen")
    assert "╭" not in result.stdout  # plain: rich's help renderer costs a tenth of a second


def test_help_does_not_import_the_heavy_libraries():
    code = (
        "import sys; from vaultgen.cli import run; run(['--help']);"
        "print(sorted(m for m in ('cryptography', 'pyrage', 'rich', 'pydantic', 'xkcdpass')"
        " if m in sys.modules), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip() == "[]"


def test_python_dash_m_vaultgen_works():
    result = subprocess.run([sys.executable, "-m", "vaultgen", "--help"], capture_output=True)
    assert result.returncode == 0


def test_status_json_parses_and_says_what_is_stale_and_why(vault):
    report = json.loads(vaultgen_ok(vault, "status", "--json").stdout)
    assert report["up_to_date"] is True
    assert {f["state"] for f in report["files"]} == {"ok"}
    (vault / "passwords/root.txt").write_text("changed password")
    (vault / "certs/localhost-cert.pem").unlink()
    (vault / "certs/localhost-cert.pem.age").unlink()
    report = json.loads(vaultgen_ok(vault, "status", "--json").stdout)
    by_path = {f["path"]: f for f in report["files"]}
    assert report["up_to_date"] is False
    assert by_path["passwords/root.sha512"]["state"] == "stale"
    assert by_path["passwords/root.sha512"]["reason"] == "does not match its password"
    assert by_path["passwords/root.txt.age"]["reason"] == "its cleartext changed"
    assert by_path["certs/localhost-cert.pem"]["state"] == "missing"
    assert by_path["passwords/admin.txt"]["state"] == "ok"


def test_status_changes_nothing(vault):
    from tests.vaultgen.helpers import changed, snapshot

    (vault / "passwords/root.txt").write_text("changed password")
    before = snapshot(vault)
    vaultgen_ok(vault, "status")
    assert changed(before, snapshot(vault)) == set()


def test_check_json_parses(vault):
    report = json.loads(vaultgen_ok(vault, "check", "--json").stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["checked_files"] == 18 * 2 + 1  # 18 secrets (the backup key too), .age, .pub


def test_plain_output_is_timestamped_for_the_journal(vault):
    line = vaultgen_ok(vault, "generate", "--batch").stdout.strip()
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d vaultgen: .* is up to date$", line
    )


def test_graph_is_dot_with_every_dependency(vault):
    dot = vaultgen_ok(vault, "graph").stdout
    assert dot.startswith("digraph vault {") and dot.rstrip().endswith("}")
    assert '"passwords/root.txt" -> "passwords/root.yesc";' in dot
    assert '"certs/vault-ca-key.pem" -> "certs/localhost-cert.pem";' in dot
    assert 'recipients -> "ssh/id_ed25519.age"' in dot


def test_the_vault_can_come_from_the_environment(vault):
    from tests.vaultgen.helpers import clean_env

    result = subprocess.run(
        [VAULTGEN, "status", "--json"], capture_output=True, text=True,
        env=clean_env(VAULTGEN_VAULT=str(vault)),
    )  # fmt: skip
    assert json.loads(result.stdout)["vault"] == str(vault)


def test_decrypt_to_a_file_is_atomic_and_has_the_mode(vault, tmp_path):
    out = tmp_path / "secrets/odoo-admin"
    out.parent.mkdir()
    vaultgen_ok(
        vault, "decrypt", "passwords/odoo-admin.txt.age", "--out", str(out), "--mode", "0440"
    )
    assert out.read_bytes() == (vault / "passwords/odoo-admin.txt").read_bytes()
    assert out.stat().st_mode & 0o777 == 0o440
    assert [p.name for p in out.parent.iterdir()] == ["odoo-admin"]


def test_decrypt_of_a_missing_file_is_one_line(vault):
    result = vaultgen(vault, "decrypt", "passwords/nope.age")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot read" in result.stderr


def test_version_and_batch_without_a_command(tmp_path):
    assert vaultgen_ok(tmp_path, "--version").stdout.startswith("vaultgen ")
    vaultgen_ok(tmp_path / "vault", "--batch")
    assert (tmp_path / "vault/passwords/root.txt").exists()


def test_status_and_graph_of_a_missing_vault_say_so(tmp_path):
    for command in ("status", "graph", "check"):
        result = vaultgen(tmp_path / "nowhere", command)
        assert result.returncode == 2
        assert "no vault at" in result.stderr


def test_a_vault_path_that_is_a_file_is_refused(vault):
    for command in ("generate", "status", "check"):
        result = vaultgen(vault / "manifest.json", command)
        assert result.returncode == 2
        assert "is not a folder" in result.stderr


def test_status_lists_folders_generate_would_tighten(vault):
    vault.chmod(0o755)
    report = json.loads(vaultgen_ok(vault, "status", "--json").stdout)
    assert {"path": ".", "state": "stale", "reason": "mode 0755 lets others read it"} in report[
        "files"
    ]


def test_decrypt_of_a_file_that_is_not_age_says_so(vault):
    result = vaultgen(vault, "decrypt", "passwords/root.txt")
    assert result.returncode == 1
    assert "not an age file" in result.stderr


@pytest.mark.parametrize("target", ["folder", "link", "device"])
def test_decrypt_refuses_an_out_that_is_not_a_regular_file(vault, tmp_path, target):
    out = tmp_path / "out"
    if target == "folder":
        out.mkdir()
    elif target == "link":
        (tmp_path / "real").write_text("untouched")
        out.symlink_to(tmp_path / "real")
    else:
        out = Path("/dev/null")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = vaultgen(vault, "decrypt", "passwords/root.txt.age", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no secret left beside it
    assert Path("/dev/null").is_char_device()


def test_debug_off_values_of_the_environment_show_no_traceback(vault):
    from tests.vaultgen.helpers import clean_env

    (vault / "age.key").write_text("junk\n")
    for value in ("0", "no", "FALSE"):
        result = subprocess.run(
            [VAULTGEN, "--vault", vault, "generate"], capture_output=True, text=True,
            env=clean_env(ODBOX_VAULTGEN_DEBUG=value),
        )  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr
