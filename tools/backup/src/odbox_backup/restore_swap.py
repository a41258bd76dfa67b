"""Step 4 of a restore: the swap run with Odoo stopped, its journal written first, and
`restore --resume` / `--undo` taking the steps a killed one left (the steps themselves are
odbox_backup.swap's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odbox_backup import swap
from odbox_backup.restore_checks import RestoreFailed, connect
from odbox_backup.service import OdooService, ServiceError
from odbox_common.progress import Progress
from odbox_common.signals import uninterrupted


def run_swap(
    plan: swap.Swap, conninfo: str, service: OdooService, progress: Progress, *, undo: bool = False
) -> None:
    """Step 4 with Odoo stopped: the journal, then the renames (or, with `undo`, their
    reversal), then Odoo started, then the journal removed; signals are ignored meanwhile (a
    TERM from systemd lets it finish), and after a kill `restore --resume` takes the steps
    left. When Odoo does not start after the swap, the error says the data was swapped and
    where the previous copies are."""
    folder = Path(plan.folder)
    swapped = False
    try:
        with uninterrupted():
            if swap.read_journal(folder) is None:
                swap.write_journal(plan)  # before Odoo stops: a kill from here on is resumed
            with service.stopped(progress.phase):
                with connect(conninfo) as conn:
                    if undo:
                        swap.undo(conn, plan)
                    else:
                        _finish_or_undo(conn, plan)
                swapped = True
                swap.step()  # a test kills here: swapped, Odoo not started again yet
    except ServiceError as e:
        swap.remove_journal(folder)
        if not swapped:
            raise
        kept = (
            f"; the previous ones are kept as database {plan.previous_db or '-'} and "
            f"{plan.previous_folder or '-'}"
            if not undo
            else ""
        )
        done = "put the previous database and folder back" if undo else "swapped the data in"
        raise ServiceError(
            f"{done} ({plan.db}, {plan.folder}){kept}, but Odoo did not start: {e}"
        ) from e
    swap.remove_journal(folder)


def _finish_or_undo(conn: Any, plan: swap.Swap) -> None:
    """Finish the swap; when a step fails (not a kill: an error), undo what was done."""
    try:
        swap.finish(conn, plan)
    except Exception as e:
        try:
            swap.undo(conn, plan)
        except Exception as again:
            raise RestoreFailed(
                f"{plan.describe()} failed ({e}), and so did undoing it ({again}); the "
                f"journal {swap.journal_path(Path(plan.folder))} is kept: run `odbox-backup "
                f"restore --resume --db {plan.db} --filestore {plan.folder}` to finish it, or "
                "--undo to put the previous ones back"
            ) from e
        swap.remove_journal(Path(plan.folder))
        raise RestoreFailed(
            f"{plan.describe()} failed ({e}) and was undone: the live database and filestore "
            "are as they were"
        ) from e


def resume(conninfo: str, filestore: Path, service: OdooService, progress: Progress,
           *, undo: bool = False) -> swap.Swap:  # fmt: skip
    """`restore --resume` / `--undo`: finish, or undo, the swap the journal names."""
    with swap.restore_lock(filestore, "--undo" if undo else "--resume"):
        plan = swap.read_journal(filestore)
        if plan is None:
            raise RestoreFailed(
                f"no interrupted restore of {filestore}: {swap.journal_path(filestore)} does "
                "not exist; nothing was changed"
            )
        run_swap(plan, conninfo, service, progress, undo=undo)
    return plan
