"""`apply`: the plan carried out behind a snapshot, rolled back by itself on any failure.

snapshot, stop Odoo, `odoo -u … --stop-after-init`, start Odoo, health, record the checksums.
On a failure (the update exits non-zero, Odoo does not start, health does not pass, SIGTERM):
stop Odoo, restore the snapshot with odbox-backup's safe swap (the failed database and filestore
kept beside it), run the code's rollback command, start Odoo, exit 1. Every step is written to
the journal first (journal.py); a run that finds a journal finishes what it says.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from odbox_common.errors import ExitCode, ToolError
from odbox_common.signals import uninterrupted
from odbox_deploy import records
from odbox_deploy.commands import Backup, Odoo, failing_module, run_command
from odbox_deploy.journal import FORWARD, ROLLING_BACK, UNTOUCHED, Journal, StateDir
from odbox_deploy.plan import Code, Plan, make_plan

Say = Callable[[str], None]


class PlanRefused(ToolError):
    """The plan found what no update may go ahead with (exit 3)."""

    exit_code = ExitCode.PROBLEMS


@dataclass(frozen=True)
class Box:
    """The box a deploy runs on: its database, code and the commands that manage Odoo."""

    db: str
    dsn: str
    filestore: Path
    code: Code
    odoo: Odoo
    backup: Backup
    stop: list[str]
    start: list[str]
    rollback: list[str] | None
    health_url: str | None
    health_timeout: float
    state: StateDir
    hook: list[str] | None = None

    @property
    def conninfo(self) -> str:
        return make_conninfo(self.dsn, dbname=self.db)


@dataclass(frozen=True)
class Result:
    outcome: str  # nothing | recorded | updated | rolled-back
    message: str
    journal: Journal | None = None

    def as_json(self) -> dict[str, Any]:
        # schema 1: a key added keeps it, one renamed or removed makes it 2
        doc: dict[str, Any] = {"schema": 1, "outcome": self.outcome, "message": self.message}
        doc.update(dict.fromkeys(("id", "modules", "snapshot", "log")))
        if self.journal is not None:
            doc.update(id=self.journal.id, modules=self.journal.modules,
                       snapshot=self.journal.snapshot, log=self.journal.log)  # fmt: skip
        return doc


def refuse(plan: Plan) -> None:
    if plan.missing:
        raise PlanRefused(
            f"installed modules missing from the addons path: {', '.join(plan.missing)}; add "
            "them back (an update would fail or drop their data), or uninstall them in Odoo first"
        )
    if plan.series_changed:
        raise PlanRefused(
            f"Odoo's series changed ({plan.series_changed}): `odoo -u` does not migrate a "
            "database between series; upgrade it with Odoo's upgrade service or OpenUpgrade"
        )


def apply(box: Box, say: Say) -> Result:
    box.state.lock()  # held until the process exits
    journal = box.state.read()
    if journal is not None:
        say(f"found deploy {journal.id} stopped at {journal.phase}: finishing it")
        return _resume(box, journal, say)
    return _begin(box, say)


def _begin(box: Box, say: Say) -> Result:
    try:
        plan = make_plan(box.code, box.conninfo)
    except records.NoOdooYet as e:
        return Result("nothing", f"nothing to deploy: {e}")
    refuse(plan)
    if plan.nothing:
        return Result("nothing", "nothing to deploy: every installed module is as recorded")
    if not plan.work:
        records.write_record(box.conninfo, plan.checksums)
        what = "first deploy" if plan.first else "new modules installed since the last deploy"
        return Result("recorded", f"{what}: recorded the checksums of "
                      f"{len(plan.checksums.modules)} modules; nothing to update")  # fmt: skip
    journal = Journal(
        id=dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ"), phase="snapshot",
        modules=plan.update + plan.install, odoo_arguments=plan.odoo_arguments(),
    )  # fmt: skip
    journal.log = str(box.state.logs / f"{journal.id}-update.log")
    say(f"deploy {journal.id}: {shlex.join(journal.odoo_arguments)}")
    _step(box, journal, "snapshot")
    try:
        journal.snapshot = box.backup.snapshot()
    except BaseException:
        box.state.journal_file.unlink()  # nothing changed: no deploy to finish
        raise
    say(f"pre-deploy snapshot {journal.snapshot}")
    _step(box, journal, "stopping")
    try:
        run_command(box.stop, "stop Odoo")
    except ToolError as e:
        run_command(box.start, "start Odoo")
        box.state.journal_file.unlink()
        raise ToolError(f"{e}; nothing was updated, Odoo started again") from None
    return _forward(box, journal, say)


def _step(box: Box, journal: Journal, phase: str) -> None:
    """Write the journal at `phase`, then run the hook (operators' and the tests' seam)."""
    journal.phase = phase
    box.state.write(journal)
    if box.hook:
        subprocess.run([*box.hook, phase], stdin=subprocess.DEVNULL, check=False,
                       env={"PATH": "/usr/bin:/bin", "ODBOX_DEPLOY_ID": journal.id})  # fmt: skip


def _forward(box: Box, journal: Journal, say: Say) -> Result:
    try:
        _step(box, journal, "updating")
        records.set_marker(box.conninfo, journal.id)
        assert journal.log is not None
        arguments = [*journal.odoo_arguments, "--stop-after-init", "--no-http",
                     "--log-handler", "odoo.modules.loading:INFO"]  # fmt: skip
        status = box.odoo.run(arguments, Path(journal.log))
        if status != 0:
            journal.module = failing_module(Path(journal.log), journal.modules)
            raise ToolError(f"the update of {journal.module} failed (exit status {status})")
        say(f"updated {', '.join(journal.modules)}")
        _step(box, journal, "starting")
        run_command(box.start, "start Odoo")
        _step(box, journal, "checking")
        _health(box)
    except (ToolError, KeyboardInterrupt) as e:
        journal.failure = str(e) or "interrupted"
        return _rollback(box, journal, say)
    return _record(box, journal, say)


def _record(box: Box, journal: Journal, say: Say) -> Result:
    _step(box, journal, "recording")
    plan = make_plan(box.code, box.conninfo)
    records.write_record(box.conninfo, plan.checksums)
    message = (f"deployed {', '.join(journal.modules)}; Odoo serves the new code "
               f"(pre-deploy snapshot {journal.snapshot})")  # fmt: skip
    box.state.finish({"outcome": "updated", "message": message, **_summary(journal)})
    return Result("updated", message, journal)


def _health(box: Box) -> None:
    if not box.health_url:
        return
    until = time.monotonic() + box.health_timeout
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(box.health_url, timeout=30) as response:  # noqa: S310
                body = json.loads(response.read() or b"{}")
                if response.status == 200 and body.get("status", "pass") == "pass":
                    return
                last = f"HTTP {response.status} {body.get('status')}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (OSError, ValueError) as e:
            last = str(e)
        if time.monotonic() > until:
            raise ToolError(f"Odoo's health ({box.health_url}) did not pass within "
                            f"{box.health_timeout:.0f} s: {last}")  # fmt: skip
        time.sleep(0.5)


def _rollback(box: Box, journal: Journal, say: Say) -> Result:
    try:
        return _roll_back(box, journal, say)
    except DeployFailed:
        raise
    except ToolError as e:
        raise ToolError(
            f"{journal.failure}; the rollback failed at {journal.phase}: {e}; Odoo is left "
            "stopped: fix that, then run `odbox-deploy apply` again to finish the rollback"
        ) from None


def _roll_back(box: Box, journal: Journal, say: Say) -> Result:
    with uninterrupted():  # SIGTERM now would leave a mix: the rollback finishes
        if journal.phase not in ROLLING_BACK:
            _step(box, journal, "rolling-back")
        if journal.phase == "rolling-back":
            say(f"rolling back: {journal.failure}")
            run_command(box.stop, "stop Odoo")
            if box.backup.swap_journal().exists() or _marked(box, journal):
                assert journal.snapshot is not None
                box.backup.restore(journal.snapshot)
            _step(box, journal, "code-rollback")
        if journal.phase == "code-rollback":
            # Run again after a kill only while the code still differs from the restored
            # database's record: the command (a switch to the previous generation) runs once.
            if box.rollback and not make_plan(box.code, box.conninfo).nothing:
                run_command(box.rollback, "roll the code back", 24 * 3600)
            _step(box, journal, "restarting")
        run_command(box.start, "start Odoo")
        after = ""
        try:
            _health(box)
        except ToolError as e:
            after = f"; but after the rollback {e}"
        code = "" if box.rollback else " (no --rollback-command: the code is still the new one)"
        message = (
            f"{journal.failure}; rolled back to snapshot {journal.snapshot}{code}, the failed "
            f"database kept beside it; log: {journal.log}{after}"
        )
        box.state.finish({"outcome": "rolled-back", "message": message, **_summary(journal)})
    raise DeployFailed(message)


class DeployFailed(ToolError):
    """The deploy failed and was rolled back (exit 1)."""


def _marked(box: Box, journal: Journal) -> bool:
    """Whether the live database is the one this deploy touched (its marker is there)."""
    try:
        return records.read_state(box.conninfo).marker == journal.id
    except ToolError:
        return True  # no readable live database: only the snapshot can bring it back


def _resume(box: Box, journal: Journal, say: Say) -> Result:
    if journal.phase in UNTOUCHED:
        # Nothing of the database changed: Odoo back up (a kill while stopping it), and the
        # deploy begins anew.
        if journal.phase == "stopping":
            run_command(box.start, "start Odoo")
        box.state.journal_file.unlink()
        return _begin(box, say)
    if journal.phase in FORWARD:
        journal.failure = f"deploy {journal.id} was interrupted at {journal.phase}"
        journal.module = journal.module or ",".join(journal.modules)
        return _rollback(box, journal, say)
    if journal.phase == "recording":
        return _record(box, journal, say)
    return _rollback(box, journal, say)


def _summary(journal: Journal) -> dict[str, Any]:
    return {"id": journal.id, "modules": journal.modules, "snapshot": journal.snapshot,
            "log": journal.log, "failure": journal.failure, "module": journal.module,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip


def record_first(code: Code, conninfo: str) -> Result:
    """`record`: a database with no checksums recorded (a new box, just initialized) gets those
    of the code on disk, which is what odoo-initialize installed it with; else nothing."""
    plan = make_plan(code, conninfo)
    refuse(plan)
    if not plan.first:
        return Result("nothing", "checksums are recorded already: `apply` deploys changes")
    records.write_record(conninfo, plan.checksums)
    return Result("recorded", f"first deploy: recorded the checksums of "
                  f"{len(plan.checksums.modules)} modules")  # fmt: skip


def status(state: StateDir) -> dict[str, Any]:
    """What the box is in: updated, rolled-back, in progress (a journal), or never deployed."""
    journal = state.read()
    if journal is not None:
        return {"state": "in-progress", "phase": journal.phase, "id": journal.id,
                "message": f"deploy {journal.id} stopped at {journal.phase}: run "
                "`odbox-deploy apply` to finish or roll it back"}  # fmt: skip
    last = state.last()
    if last is None:
        return {"state": "none", "message": "no deploy has run here"}
    return {"state": last["outcome"], **last}
