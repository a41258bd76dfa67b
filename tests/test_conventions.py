"""The conventions every tool shares, held to the one place they are written down.

Exit codes: the table in tools/common/README.md; each tool's representative errors
(run as a user runs them) exit with the code of their row.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
from pathlib import Path

import pexpect
import pytest

from odbox_common.errors import ExitCode
from tests.backup.helpers import backup_ok, env_for, make_odoo
from tests.dbinit.helpers import clean_env as dbinit_env
from tests.ec2_install import conftest as ec2_fixtures
from tests.ec2_install.conftest import Aws, up_args
from tests.helpers import one_error_line, run_tool, tool_path
from tests.k8s_migrate import conftest as k8s_fixtures
from tests.k8s_migrate import shop as k8s_shop
from tests.odoo_data import Shape
from tests.vaultgen.helpers import clean_env as vaultgen_env

COMMON_README = Path(__file__).parents[1] / "tools/common/README.md"
TOOLS = ("odbox-backup", "dbinit", "vaultgen", "ec2-install", "k8s-migrate")


def exit_code_table() -> dict[str, int]:
    """The README's exit-code table: name → code."""
    rows = re.findall(r"^\| (\d+) \| ([A-Z]+) \|", COMMON_README.read_text(), flags=re.M)
    return {name: int(code) for code, name in rows}


def code_of(row: str) -> int:
    return exit_code_table()[row]


def refused(result: subprocess.CompletedProcess[str], row: str, message: str) -> None:
    assert result.returncode == code_of(row), result.stderr
    assert message in one_error_line(result)


def test_the_table_is_the_exit_codes_every_tool_uses():
    assert exit_code_table() == {code.name: int(code) for code in ExitCode}


@pytest.mark.parametrize("tool", TOOLS)
def test_an_unknown_option_is_a_usage_error_in_every_tool(tool):
    refused(run_tool(tool, "--no-such-option"), "USAGE", "No such option: --no-such-option")


def test_a_place_holding_nothing_is_a_usage_error_in_every_tool(tmp_path, postgres):
    nowhere = tmp_path / "nowhere"
    env = env_for(postgres, None)
    refused(run_tool("odbox-backup", "list", "--repo", nowhere, env=env), "USAGE",
            f"no repository at {nowhere}")  # fmt: skip
    refused(run_tool("vaultgen", "--vault", nowhere, "check", env=vaultgen_env()), "USAGE",
            f"no vault at {nowhere}")  # fmt: skip
    dsn = postgres.dsn.replace("dbname=postgres", "dbname=nope")
    refused(run_tool("dbinit", "check", "--dsn", dsn, env=dbinit_env()), "USAGE",
            'database "nope" does not exist')  # fmt: skip


def test_an_unknown_and_an_ambiguous_snapshot_id_are_both_usage_errors(tmp_path, postgres):
    env = env_for(postgres, None)
    filestore = tmp_path / "filestore"
    make_odoo(postgres, "odoo_conventions", filestore, Shape.small(), seed=21)
    repo = str(tmp_path / "repo")
    backup_ok(env, "init", "--repo", repo)
    for _ in range(2):
        backup_ok(
            env, "run", "--repo", repo, "--db", "odoo_conventions", "--filestore", str(filestore)
        )
    refused(run_tool("odbox-backup", "show", "--repo", repo, "20990101T000000Z", env=env),
            "USAGE", "no snapshot 20990101T000000Z")  # fmt: skip
    refused(run_tool("odbox-backup", "show", "--repo", repo, "2", env=env), "USAGE",
            "2 matches 2 snapshots")  # fmt: skip


def test_a_server_that_is_not_there_is_a_failure(tmp_path):
    result = run_tool("dbinit", "check", "--dsn", f"host={tmp_path}", env=dbinit_env())
    refused(result, "FAILED", "is PostgreSQL running?")


def test_a_check_that_finds_problems_exits_with_problems(tmp_path, postgres):
    vault = tmp_path / "vault"
    assert run_tool("vaultgen", "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
    (vault / "passwords/root.txt").chmod(0o640)
    checked = run_tool("vaultgen", "--vault", vault, "check", env=vaultgen_env())
    assert checked.returncode == code_of("PROBLEMS"), checked.stdout
    # A cluster nobody ran `dbinit setup` on lacks the roles and databases setup makes.
    checked = run_tool("dbinit", "check", "--dsn", postgres.dsn, env=dbinit_env())
    assert checked.returncode == code_of("PROBLEMS"), checked.stdout


def test_a_held_lock_exits_with_locked(tmp_path):
    vault = tmp_path / "vault"
    assert run_tool("vaultgen", "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
    with (vault / ".lock").open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_tool("vaultgen", "--vault", vault, "generate", "--batch", env=vaultgen_env())
        refused(result, "LOCKED", "another vaultgen run")


def test_ctrl_c_exits_with_interrupted(tmp_path):
    child = pexpect.spawn(str(tool_path("vaultgen")), ["--vault", str(tmp_path / "v"), "generate"],
                          env=vaultgen_env(), timeout=30)  # fmt: skip
    child.expect("Password for admin")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code_of("INTERRUPTED")
    assert b"error: interrupted" in child.before


def _global_option_cases(tmp: Path) -> list[tuple[str, list[str], list[str], str]]:
    """(tool, the global option before the command, the same after it, the line both give)."""
    nowhere = str(tmp / "nowhere")
    k8s = ["plan", "--db-pod", "p", "--db-name", "d", "--pvc", "v"]
    return [
        ("odbox-backup", ["--repo", nowhere, "list"], ["list", "--repo", nowhere],
         f"no repository at {nowhere}"),
        ("odbox-backup", ["-r", nowhere, "show", "latest"], ["show", "latest", "-r", nowhere],
         f"no repository at {nowhere}"),
        ("vaultgen", ["--vault", nowhere, "check"], ["check", "--vault", nowhere],
         f"no vault at {nowhere}"),
        ("dbinit", ["--dsn", f"host={tmp}", "check"], ["check", "--dsn", f"host={tmp}"],
         f"cannot connect to PostgreSQL at {tmp}"),
        ("ec2-install", ["--region", "xx-nowhere-9", "status", "--name", "x"],
         ["status", "--name", "x", "--region", "xx-nowhere-9"], "unknown region 'xx-nowhere-9'"),
        ("k8s-migrate", ["-r", nowhere, *k8s], [*k8s, "--repo", nowhere],
         f"no repository at {nowhere}"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(6), ids=lambda i: ["backup --repo", "backup -r",
                         "vaultgen", "dbinit", "ec2-install", "k8s-migrate"][i])  # fmt: skip
def test_a_global_option_goes_before_or_after_the_command(case, tmp_path):
    tool, before, after, line = _global_option_cases(tmp_path)[case]
    env = {**vaultgen_env(), **dbinit_env(), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    first, second = run_tool(tool, *before, env=env), run_tool(tool, *after, env=env)
    said = one_error_line(first).split("error: ", 1)[1]
    assert line in said
    assert (second.returncode, one_error_line(second).split("error: ", 1)[1]) == (
        first.returncode, said)  # fmt: skip


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    result = run_tool("vaultgen", "check", "--vault", tmp_path / "nowhere", "--debug",
                      env=vaultgen_env())  # fmt: skip
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_dash_r_is_the_repository_in_every_tool_that_has_it():
    import importlib

    import typer

    for module in ("odbox_backup.cli", "dbinit.cli", "vaultgen.cli", "ec2_install.cli",
                   "k8s_migrate.cli"):  # fmt: skip
        group = typer.main.get_command(importlib.import_module(module).app)
        for command in [group, *getattr(group, "commands", {}).values()]:
            for param in command.params:
                if "-r" in param.opts:
                    assert "--repo" in param.opts, (module, command.name, param.opts)


@pytest.mark.parametrize("tool", TOOLS)
def test_completion_prints_a_script_for_each_shell(tool):
    for shell in ("bash", "zsh", "fish"):
        result = run_tool(tool, "completion", shell)
        assert result.returncode == 0, result.stderr
        assert tool in result.stdout and f"_{tool.replace('-', '_').upper()}_COMPLETE" in (
            result.stdout)  # fmt: skip
    refused(run_tool(tool, "completion", "tcsh"), "USAGE", "no completion for 'tcsh'")


@pytest.mark.parametrize(
    "tool, words, expected",
    [("odbox-backup", "odbox-backup li", ["list"]),
     ("odbox-backup", "odbox-backup prune --keep-d", ["--keep-daily"]),
     ("vaultgen", "vaultgen re", ["rekey"]),
     ("dbinit", "dbinit check --js", ["--json"])],
)  # fmt: skip
def test_bash_completes_commands_and_options_with_the_printed_script(tool, words, expected):
    """The script, sourced by a real bash, asked as bash asks on Tab."""
    script = run_tool(tool, "completion", "bash").stdout
    function = re.search(r"complete -o default -F (\S+) " + re.escape(tool), script)
    assert function
    ask = (f"{script}\nCOMP_WORDS=({words}); COMP_CWORD={len(words.split()) - 1}; "
           f"{function[1]} {tool}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")  # fmt: skip
    env = {"PATH": f"{tool_path(tool).parent}:/usr/bin:/bin"}
    answer = subprocess.run(["bash", "-c", ask], capture_output=True, text=True, env=env)
    assert answer.stdout.split() == expected, answer.stderr


def test_the_nix_packages_install_the_completion_of_every_shell():
    from odbox_common.runner import SHELLS

    build = (Path(__file__).parents[1] / "nix/pkgs/tools/default.nix").read_text()
    installed = re.findall(r"--(\w+) <\(\$out/bin/\$\{name\} completion (\w+)\)", build)
    assert "installShellCompletion --cmd ${name}" in build
    assert sorted(installed) == sorted((shell, shell) for shell in SHELLS)


def test_counts_are_singular_for_one():
    from odbox_common.console import count_of

    assert [count_of(n, "object") for n in (0, 1, 2)] == ["0 objects", "1 object", "2 objects"]
    assert count_of(1, "copy", "copies") == "1 copy" and count_of(3, "copy", "copies") == "3 copies"


def test_a_repository_for_one_recipient_says_one_recipient(tmp_path, postgres):
    """`odbox-backup init -r … --recipient age1…` said `encrypted to 1 recipients`."""
    from odbox_common.age import generate_identity

    result = run_tool("odbox-backup", "init", "-r", tmp_path / "repo", "--recipient",
                      generate_identity()[1], env=env_for(postgres, None))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "(encrypted to 1 recipient)" in result.stdout


def _commands(module: str) -> dict[str, object]:
    import importlib

    import typer

    group = typer.main.get_command(importlib.import_module(module).app)
    return {"": group, **getattr(group, "commands", {})}


@pytest.mark.parametrize("tool, module", [("dbinit", "dbinit.cli"), ("vaultgen", "vaultgen.cli")])
def test_every_command_has_examples_that_name_real_commands_and_options(tool, module):
    commands = _commands(module)
    group_options = {o for p in commands[""].params for o in p.opts}  # type: ignore[attr-defined]
    for name, command in commands.items():
        if not name:
            continue
        epilog = command.epilog or ""  # type: ignore[attr-defined]
        assert epilog.startswith("\b\nExamples:"), f"{tool} {name} has no examples"
        runs = [line.strip() for line in epilog.splitlines()[3::2]]
        assert runs and all(tool in run for run in runs), epilog
        own = {o for p in command.params for o in p.opts} | group_options  # type: ignore[attr-defined]
        for run in runs:
            words = run.split()[run.split().index(tool) + 1 :]
            assert name in words, f"{run!r} is not an example of {tool} {name}"
            unknown = {w for w in words if w.startswith("--")} - own
            assert not unknown, f"{run!r} names options {tool} {name} does not have"


@pytest.mark.parametrize("module", ["odbox_backup.cli", "dbinit.cli", "vaultgen.cli",
                                    "ec2_install.cli", "k8s_migrate.cli"])  # fmt: skip
def test_every_placeholder_in_help_is_in_capitals(module):
    """`--mode <str>`, `--days <int range>`: typer's type names where a placeholder belongs."""
    import importlib

    tool = {"odbox_backup.cli": "odbox-backup", "ec2_install.cli": "ec2-install",
            "k8s_migrate.cli": "k8s-migrate"}.get(module, module.split(".")[0])  # fmt: skip
    for name in _commands(module):
        if name:
            text = run_tool(tool, name, "--help").stdout
            assert not re.search(r"--[a-z-]+ <[a-z ]+>", text), f"{tool} {name}:\n{text}"
    assert importlib.import_module(module)


def test_setup_json_is_one_document_with_every_key_and_its_log_on_stderr(postgres):
    import json

    result = run_tool("dbinit", "setup", "--dry-run", "--json", "--dsn", postgres.dsn,
                      env=dbinit_env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"schema", "server", "dry_run", "changed", "changes", "warnings"}
    assert document["schema"] == 1 and document["dry_run"] is True and not document["changed"]
    assert document["changes"], "a cluster nobody set up has changes to make"
    assert f"would {document['changes'][0]}" in result.stderr


@pytest.mark.parametrize("tool, args", [("dbinit", ["status"]), ("vaultgen", ["check"]),
                                        ("vaultgen", ["status"])])  # fmt: skip
def test_every_json_document_has_a_schema_version(tool, args, postgres, tmp_path):
    import json

    if tool == "dbinit":
        result = run_tool(tool, *args, "--json", "--dsn", postgres.dsn, env=dbinit_env())
    else:
        vault = tmp_path / "vault"
        assert run_tool(tool, "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
        result = run_tool(tool, "--vault", vault, *args, "--json", env=vaultgen_env())
    assert json.loads(result.stdout)["schema"] == 1, result.stderr


def test_a_global_option_without_a_known_command_says_what_is_missing(tmp_path):
    refused(run_tool("odbox-backup", "--repo", tmp_path), "USAGE", "Missing command")
    refused(run_tool("odbox-backup", "--repo", tmp_path, "lis"), "USAGE", "No such command 'lis'")


# --json: one document on stdout (the whole of it), with a `schema` version and every key
# always there; the lines a command would print go to stderr meanwhile. The tools name what
# they report on by its kind: `server` (dbinit), `vault`, `repository`, `box` and `region`,
# `context` and `server` (k8s-migrate); a check says `ok`, a plan or a setup `changes`.

# The fixtures of ec2-install's and k8s-migrate's tests, for their --json runs here.
aws, aws_proxy, ssh_pub = ec2_fixtures.aws, ec2_fixtures.aws_proxy, ec2_fixtures.ssh_pub
k8s, shop = k8s_fixtures.k8s, k8s_shop.shop

JSON_TOOLS = {"dbinit": "dbinit.cli", "vaultgen": "vaultgen.cli", "ec2-install": "ec2_install.cli",
              "k8s-migrate": "k8s_migrate.cli", "odbox-deploy": "odbox_deploy.cli"}  # fmt: skip
# Each held to the convention by a test below. odbox-backup's are i21c-backup-json's
# (tests/backup/test_json.py), and not listed here.
JSON_COMMANDS = {
    ("dbinit", "setup"), ("dbinit", "check"), ("dbinit", "status"), ("dbinit", "wait"),
    ("dbinit", "pgadmin-boot"),  # tests/dbinit/test_pgadmin.py: it needs pgAdmin's own setup
    ("vaultgen", "generate"), ("vaultgen", "password"), ("vaultgen", "edit"),
    ("vaultgen", "certs"), ("vaultgen", "import"), ("vaultgen", "rekey"), ("vaultgen", "check"),
    ("vaultgen", "status"),
    ("ec2-install", "up"), ("ec2-install", "down"), ("ec2-install", "status"),
    ("ec2-install", "amis"),
    ("k8s-migrate", "plan"), ("k8s-migrate", "pull"),
    ("odbox-deploy", "plan"), ("odbox-deploy", "apply"), ("odbox-deploy", "status"),
    ("odbox-deploy", "record"), ("odbox-deploy", "neutralize"),
}  # fmt: skip


def one_document(result: subprocess.CompletedProcess[str], *, logs: bool = True) -> dict:
    """The one JSON document a `--json` run printed; `logs`: its lines went to stderr."""
    import json

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # the whole of stdout: no line before or after it
    assert isinstance(document, dict) and document["schema"] == 1, document
    if logs:
        assert result.stderr.strip(), "the lines the command prints go to stderr"
        assert "error:" not in result.stderr
    return document


def test_every_command_with_json_is_held_to_the_json_convention():
    import importlib

    import typer

    found = set()
    for tool, module in JSON_TOOLS.items():
        group = typer.main.get_command(importlib.import_module(module).app)
        for name, command in getattr(group, "commands", {}).items():
            if any("--json" in p.opts for p in command.params):
                found.add((tool, name))
    assert found == JSON_COMMANDS


def test_vaultgen_json_is_one_document_with_every_key_and_its_lines_on_stderr(tmp_path):
    vault, env = tmp_path / "vault", {**vaultgen_env(), "EDITOR": "true", "VISUAL": "true"}

    def vaultgen(*args: str | Path) -> dict:
        return one_document(run_tool("vaultgen", "--vault", vault, *args, env=env))

    made = vaultgen("generate", "--batch", "--json")
    assert made["changed"] and made["vault"] == str(vault)
    assert {"path": "passwords/admin.txt", "action": "created", "reason": "new"} in made["files"]
    again = vaultgen("generate", "--batch", "--json")
    assert (again["changed"], again["files"]) == (False, []) and set(again) == set(made)
    for args in (["password", "admin", "--generate"], ["certs", "shop.example.com"],
                 ["edit", "admin"]):  # fmt: skip
        document = vaultgen(*args, "--json")
        assert set(document) == set(made), args
    cert, key = vault / "certs/shop.example.com-cert.pem", vault / "certs/shop.example.com-key.pem"
    imported = vaultgen("import", cert, key, "--name", "shop", "--json")
    assert any(f["path"] == "certs/shop-cert.pem" for f in imported["files"])
    rekeyed = vaultgen("rekey", "--json")
    assert rekeyed["changed"] and {"not_managed", "new_identity"} <= set(rekeyed)
    assert set(made) <= set(rekeyed)
    checked = one_document(run_tool("vaultgen", "--vault", vault, "check", "--json", env=env),
                           logs=False)  # fmt: skip
    assert checked["ok"] and checked["vault"] == str(vault)
    status = one_document(run_tool("vaultgen", "--vault", vault, "status", "--json", env=env),
                          logs=False)  # fmt: skip
    assert status["up_to_date"] and status["vault"] == str(vault)


def test_dbinit_json_names_the_server_and_has_a_schema(postgres):
    dsn, env = postgres.dsn, dbinit_env()
    planned = one_document(run_tool("dbinit", "setup", "--dry-run", "--json", "--dsn", dsn,
                                    env=env))  # fmt: skip
    assert planned["dry_run"] is True and planned["changes"]
    for args in (["status"], ["wait", "--timeout", "60"]):
        document = one_document(run_tool("dbinit", *args, "--json", "--dsn", dsn, env=env),
                                logs=False)  # fmt: skip
        assert (document["server"], document["state"]) == (planned["server"], "ready")
    checked = run_tool("dbinit", "check", "--json", "--dsn", dsn, env=env)
    assert checked.returncode == code_of("PROBLEMS")  # nobody ran setup on this cluster
    document = json.loads(checked.stdout)
    assert (document["schema"], document["server"], document["ok"]) == (1, planned["server"],
                                                                         False)  # fmt: skip


def test_odbox_deploy_status_json_has_every_key(tmp_path):
    document = one_document(run_tool("odbox-deploy", "status", "--state-dir", tmp_path, "--json"),
                            logs=False)  # fmt: skip
    assert document == {"schema": 1, "state": "none", "phase": None, "id": None,
                        "message": "no deploy has run here"}  # fmt: skip


def test_ec2_install_json_is_one_document_with_every_key_and_its_lines_on_stderr(
    aws: Aws, ssh_pub: Path
):
    planned = one_document(aws.run(*up_args(ssh_pub, "--dry-run", "--json")), logs=False)
    assert (planned["box"], planned["region"], planned["dry_run"]) == ("shop", "eu-west-1", True)
    assert any("launch m6g.xlarge" in step for step in planned["changes"])
    assert (planned["created"], planned["instance"]) == (None, None)
    assert aws.proxy.mutating() == []
    made = one_document(aws.run(*up_args(ssh_pub, "--json")))  # its phases on stderr
    assert set(made) == set(planned) and made["created"] is True and made["installed"] is False
    status = one_document(aws.run("status", "--name", "shop", "--json"), logs=False)
    assert status["instance"]["id"] == made["instance"]["id"]
    assert status["instance"]["public_ip"] == made["instance"]["public_ip"]
    aws.proxy.actions.clear()
    going = one_document(aws.run("down", "--name", "shop", "--dry-run", "--json"), logs=False)
    assert any(step.startswith("terminate i-") for step in going["changes"])
    assert going["removed"] is None and aws.proxy.mutating() == []
    gone = one_document(aws.run("down", "--name", "shop", "--yes", "--json"))
    assert set(gone) == set(going) and gone["removed"] and gone["dry_run"] is False
    down = one_document(aws.run("status", "--name", "shop", "--json"), logs=False)
    assert set(down) == set(status) and down["instance"] is None
    images = one_document(aws.run("amis", "--json"), logs=False)
    assert images["region"] == "eu-west-1" and images["images"]


def test_ec2_install_down_json_asks_no_question(aws: Aws):
    refused(aws.run("down", "--name", "shop", "--json"), "USAGE", "give --yes")


def test_k8s_migrate_json_is_one_document_with_its_lines_on_stderr(shop):
    planned = one_document(shop.migrate("plan", *shop.args("--repo", str(shop.repo), "--json")),
                           logs=False)  # fmt: skip
    assert planned["dry_run"] is True and planned["context"] == "test" and planned["changes"]
    pulled = one_document(shop.pull("--json"))  # the pull's progress on stderr
    assert (pulled["context"], pulled["server"]) == (planned["context"], planned["server"])
    assert pulled["dry_run"] is False and pulled["dump_bytes"] > 0 and pulled["cleanup"] == []
    assert shop.snapshots()


MODULE_LINES = 450  # issue 21: a module one can read in one sitting


def test_no_module_is_longer_than_one_sitting_without_a_reason_at_its_top():
    """`wc -l tools/*/src/*/*.py`: none over 450 lines, unless its first ten lines say why
    ("over 450 lines because …")."""
    root = Path(__file__).parents[1]
    long = []
    for module in sorted(root.glob("tools/*/src/*/*.py")):
        lines = module.read_text().splitlines()
        if len(lines) > MODULE_LINES and "450 lines" not in "\n".join(lines[:10]):
            long.append(f"{module.relative_to(root)}: {len(lines)}")
    assert not long, long
