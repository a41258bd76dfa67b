"""Running odbox-deploy against tests/box's real Odoo, and what the tests compare."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.box.harness import DB, Box
from tests.box.helpers import new_repo

ROOT = Path(__file__).resolve().parents[2]
ADDONS = Path(__file__).with_name("addons")
DEMO = "odbox_deploy_demo"
ODBOX_DEPLOY = Path(sys.executable).with_name("odbox-deploy")
HOOKS = Path(__file__).with_name("hooks.py")


def install_version(box: Box, version: int, into: Path | None = None) -> None:
    """odbox_deploy_demo at `version` in the box's addons folder (what a rebuild would bring)."""
    target = (into or box.base / "addons") / DEMO
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ADDONS / f"v{version}" / DEMO, target)
    subprocess.run(["chmod", "-R", "a+rX", target], check=True)


def install_command(box: Box, version: int) -> str:
    """A shell command that puts `version` back (the tests' --rollback-command)."""
    target = box.base / "addons" / DEMO
    source = ADDONS / f"v{version}" / DEMO
    return shlex.join(["sh", "-c", f"rm -rf {shlex.quote(str(target))} && cp -r "
                       f"{shlex.quote(str(source))} {shlex.quote(str(target))} && chmod -R a+rX "
                       f"{shlex.quote(str(target))}"])  # fmt: skip


@dataclass
class Deploy:
    box: Box
    base: Path  # this test's folder: repository, deploy state, hook files

    def fresh(self, base: Path) -> Deploy:
        return Deploy(self.box, base)

    @property
    def state(self) -> Path:
        return self.base / "deploy-state"

    @property
    def repo(self) -> Path:
        repo = self.base / "repo"
        if not repo.exists():
            new_repo(self.box, self.base)
        return repo

    def start_command(self) -> str:
        """systemctl start's idempotence around tests/box's odooctl start."""
        pid = self.box.base / "odoo.pid"
        start = shlex.join(self.box.ctl("start"))
        return shlex.join(["sh", "-c", f'kill -0 "$(cat {shlex.quote(str(pid))} 2>/dev/null)" '
                           f"2>/dev/null || exec {start}"])  # fmt: skip

    def env(self, **extra: str) -> dict[str, str]:
        box = self.box
        env = box.backup_env(self.repo, self.base / "backup-key.txt")
        env.update({
            "ODBOX_DSN": f"host={box.cluster.socket_dir} port={box.cluster.port} user=postgres",
            "ODBOX_ODOO_CONF": str(box.base / "etc" / "odoo.conf"),
            "ODBOX_ODOO_ROOT": str(box.install.tree / "odoo"),
            "ODBOX_ODOO_BIN": str(box.base / "bin" / "odoo"),
            "ODBOX_ODOO_USER": "odoo",
            "ODBOX_ODOO_STOP": shlex.join(box.ctl("stop")),
            "ODBOX_ODOO_START": self.start_command(),
            "ODBOX_DEPLOY_BACKUP": str(box.tools),
            "ODBOX_DEPLOY_STATE": str(self.state),
            "ODBOX_DEPLOY_HEALTH_URL": f"http://127.0.0.1:{box.http_port}/odbox/health",
            "ODBOX_DEPLOY_ROLLBACK": install_command(box, 2),
        })  # fmt: skip
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ODBOX_DEPLOY), *args], env=self.env(**extra),
                              capture_output=True, text=True, timeout=3600)  # fmt: skip

    def ok(self, *args: str, **extra: str) -> str:
        result = self.run(*args, **extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def plan(self) -> dict[str, Any]:
        return json.loads(self.ok("plan", "--json"))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        return json.loads(self.ok("status", "--json"))  # type: ignore[no-any-return]

    def snapshots(self) -> list[dict[str, Any]]:
        out = self.box.odbox_backup(self.repo, "list", "--json",
                                    identity=self.base / "backup-key.txt")  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def hook(self, *args: str) -> str:
        return shlex.join([sys.executable, str(HOOKS), *args])


def table_checksums(box: Box, db: str = DB) -> dict[str, str]:
    """Every table of the database: its columns and an md5 of its sorted rows."""
    return checksums_of(lambda query, *params: box.sql(query, db, *params))


def checksums_of(sql: Any) -> dict[str, str]:
    tables = [name for (name,) in sql(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM "
        "information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
        "('pg_catalog', 'information_schema') ORDER BY 1")]  # fmt: skip
    sums = {}
    for table in tables:
        columns = sql("SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY "
                          "column_name) FROM information_schema.columns WHERE "
                          "quote_ident(table_schema) || '.' || quote_ident(table_name) = %s",
                          table)[0][0]  # fmt: skip
        rows = sql(f"SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                       f"FROM {table} t")[0][0]  # fmt: skip
        sums[table] = f"{columns}|{rows}"
    return sums


def filestore_checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def demo_fields(box: Box) -> set[str]:
    fields = box.rpc("odbox.deploy.demo", "fields_get", [], attributes=["type"])
    return set(fields)


def demo_records(box: Box) -> list[dict[str, Any]]:
    names = {"name"} | ({"colour"} & demo_fields(box))
    rows = box.rpc("odbox.deploy.demo", "search_read", [], fields=sorted(names), order="name")
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]
