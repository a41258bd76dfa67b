"""The programs a deploy runs: the box's stop/start/rollback commands, odbox-backup, Odoo."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from odbox_common import processes
from odbox_common.errors import ToolError

SERVICE_TIMEOUT = 900  # seconds: systemd's stop (90 s) and start, on a busy machine


def run_command(command: list[str], what: str, timeout: float = SERVICE_TIMEOUT) -> str:
    """Run one configured command; its stdout, or a ToolError naming it and its last line."""
    return processes.run_command(command, what, timeout)


@dataclass(frozen=True)
class Backup:
    """odbox-backup, with the box's environment (ODBOX_BACKUP_REPO and the rest)."""

    command: tuple[str, ...]
    db: str
    filestore: Path

    def _target(self) -> list[str]:
        # Odoo is already stopped (or not to be touched) when a deploy restores: `true`.
        return ["--db", self.db, "--filestore", str(self.filestore),
                "--odoo-stop", "true", "--odoo-start", "true"]  # fmt: skip

    def snapshot(self) -> str:
        """A hot snapshot of the live database and filestore, tagged pre-deploy; its ID."""
        run = [*self.command, "run", "--db", self.db, "--filestore", str(self.filestore),
               "--tag", "pre-deploy"]  # fmt: skip
        out = run_command(run, "take the pre-deploy snapshot", 24 * 3600)
        found = re.findall(r"snapshot (\S+): ", out)
        if not found:
            raise ToolError(f"odbox-backup run said no snapshot ID: {out.strip()[-200:]}")
        return str(found[-1])

    def swap_journal(self) -> Path:
        return self.filestore.with_name(f".{self.filestore.name}.restore-journal")

    def restore(self, snapshot: str) -> None:
        """odbox-backup's safe swap: the failed database and filestore are kept under
        `<db>_before_<time>` and `<folder>.before-<time>`; a swap it left half done (its
        journal) is finished first."""
        if self.swap_journal().exists():
            run_command([*self.command, "restore", "--resume", *self._target()],
                        "finish the restore a killed run left")  # fmt: skip
            return
        run_command([*self.command, "restore", snapshot, *self._target()],
                    f"restore the pre-deploy snapshot {snapshot}", 24 * 3600)  # fmt: skip


@dataclass(frozen=True)
class Odoo:
    """`odoo … --stop-after-init` with the box's configuration, as Odoo's own user."""

    command: tuple[str, ...]
    conf: Path
    db: str
    user: str | None

    def run(self, arguments: list[str], log: Path, subcommand: str | None = None) -> int:
        """Odoo (its `subcommand`) with `arguments`, its output into `log` (0600); its exit
        status."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        kwargs: dict[str, object] = {}
        if self.user is not None:
            try:
                entry = pwd.getpwnam(self.user)
            except KeyError:
                raise ToolError(f"no OS user {self.user!r} to run Odoo as (--odoo-user)") from None
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            env["HOME"] = entry.pw_dir
        command = [
            *self.command,
            *([subcommand] if subcommand else []),
            "--config",
            str(self.conf),
            "--database",
            self.db,
            *arguments,
        ]
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"$ {shlex.join(command)}\n".encode())
            try:
                done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                      env=env, cwd="/", **kwargs)  # type: ignore[call-overload]  # fmt: skip
            except OSError as e:
                raise ToolError(f"cannot run Odoo (`{shlex.join(command)}`): {e}") from None
        finally:
            os.close(fd)
        return int(done.returncode)


def failing_module(log: Path, modules: list[str]) -> str:
    """The module Odoo was loading when it failed: the last `Loading module X` line (the update
    runs with odoo.modules.loading at DEBUG), else the one module asked for, else the list."""
    text = log.read_text(errors="replace") if log.exists() else ""
    loading = re.findall(r"Loading module (\S+) \(\d+/\d+\)", text)
    if loading:
        return str(loading[-1])
    return modules[0] if len(modules) == 1 else ",".join(modules)
