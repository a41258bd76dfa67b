"""The swap at the end of a restore, kept in a journal so that a kill at any step is undone
or finished by one command.

Before its first change the swap writes what it will do (the four names: the live
database and folder, the restored ones, and what the live ones become) to a journal next
to the filestore, `.<folder>.restore-journal`, fsynced. Each step is then an atomic
rename (ALTER DATABASE … RENAME, rename(2)), so after a kill the names that exist say how
far it got: `finish` (`restore --resume`) takes the remaining steps forward, `undo`
(`restore --undo`) puts the previous pair back under the live names; both are safe to run
again. The journal is removed last, once Odoo was started again, so a kill after the renames
still leaves `restore --resume` to start it. While a journal exists a new restore and
`drop-previous` refuse to start, naming the command to run.

A lock (flock(2) on the folder that holds the filestore) is held by a restore from its
first change to its last, and by drop-previous: two of them never work on one filestore.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from odbox_common.errors import ToolError
from odbox_common.files import fsync_dir, lock_or_refuse

# Tests kill the process at the Nth step of a swap (the journal's write and removal, each
# SQL statement, each rename) to show that every state it can be left in is recovered.
KILL_AT_STEP = "ODBOX_BACKUP_TEST_KILL_AT_STEP"
_steps = 0


def step() -> None:
    """Before each step of the swap: SIGKILL here when the test hook names this step."""
    global _steps
    _steps += 1
    if os.environ.get(KILL_AT_STEP) == str(_steps):
        os.kill(os.getpid(), signal.SIGKILL)


class SwapInterrupted(ToolError):
    """A journal says a swap did not finish."""


def journal_path(filestore: Path) -> Path:
    return filestore.with_name(f".{filestore.name}.restore-journal")


@contextlib.contextmanager
def restore_lock(filestore: Path, what: str) -> Iterator[None]:
    """This filestore's restore lock: flock(2) on the folder that holds it (no lock file to
    leave behind); a one-line error when another process holds it."""
    parent = filestore.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        lock_or_refuse(fd, f"another restore or drop-previous of {filestore} is running (it "
                           f"holds a lock on {parent}); {what} did nothing")  # fmt: skip
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Swap:
    snapshot: str
    db: str
    new_db: str
    previous_db: str | None
    folder: str
    new_folder: str
    previous_folder: str | None

    def describe(self) -> str:
        return f"the swap of snapshot {self.snapshot} into {self.db} and {self.folder}"


def write_journal(swap: Swap) -> None:
    path = journal_path(Path(swap.folder))
    tmp = path.with_name(path.name + ".tmp")
    step()
    with tmp.open("w") as f:
        json.dump(asdict(swap), f)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)
    fsync_dir(path.parent)


def read_journal(filestore: Path) -> Swap | None:
    path = journal_path(filestore)
    try:
        data = json.loads(path.read_text())
        return Swap(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, OSError) as e:
        raise ToolError(
            f"the restore journal {path} is unreadable ({e}): see what "
            "databases and folders exist and rename them by hand"
        ) from e


def remove_journal(filestore: Path) -> None:
    step()
    journal_path(filestore).unlink(missing_ok=True)
    fsync_dir(filestore.parent)


def refuse_if_interrupted(filestore: Path, command: str) -> None:
    swap = read_journal(filestore)
    if swap is not None:
        raise SwapInterrupted(
            f"{swap.describe()} was interrupted: the live database or folder may be missing "
            f"until `odbox-backup restore --resume --db {swap.db} --filestore {swap.folder}` "
            f"finishes it (or --undo puts the previous ones back); {command} did nothing"
        )


def _exists(conn: Any, db: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone() is not None


def rename_db(conn: Any, old: str, new: str) -> None:
    from psycopg import sql

    step()
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        [old],
    )
    step()
    conn.execute(
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
    )


def drop_database(conn: Any, db: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def _rename(old: Path, new: Path) -> None:
    step()
    old.rename(new)


def finish(conn: Any, swap: Swap) -> None:
    """Take the swap's remaining steps: the restored pair under the live names, the
    previous one under its kept names. From any state a kill can leave."""
    if swap.previous_db and _exists(conn, swap.db) and _exists(conn, swap.new_db):
        rename_db(conn, swap.db, swap.previous_db)
    if _exists(conn, swap.new_db) and not _exists(conn, swap.db):
        rename_db(conn, swap.new_db, swap.db)
    folder, new = Path(swap.folder), Path(swap.new_folder)
    if swap.previous_folder and folder.exists() and new.exists():
        _rename(folder, Path(swap.previous_folder))
    if new.exists() and not folder.exists():
        _rename(new, folder)
    step()
    fsync_dir(folder.parent)
    if not (_exists(conn, swap.db) and folder.is_dir()):
        raise ToolError(
            f"{swap.describe()}: neither {swap.db} nor {swap.new_db} (or neither "
            f"folder) exists; the journal {journal_path(folder)} is kept"
        )


def undo(conn: Any, swap: Swap) -> None:
    """Put the previous pair back under the live names, and the restored one back under
    its own; from any state a kill can leave (the restored copy is then dropped: the
    snapshot still holds it)."""
    import shutil

    if (
        not _exists(conn, swap.new_db)
        and _exists(conn, swap.db)
        and (swap.previous_db is None or _exists(conn, swap.previous_db))
    ):
        rename_db(conn, swap.db, swap.new_db)
    if swap.previous_db and _exists(conn, swap.previous_db) and not _exists(conn, swap.db):
        rename_db(conn, swap.previous_db, swap.db)
    folder, new = Path(swap.folder), Path(swap.new_folder)
    previous = Path(swap.previous_folder) if swap.previous_folder else None
    if not new.exists() and folder.exists() and (previous is None or previous.exists()):
        _rename(folder, new)
    if previous and previous.exists() and not folder.exists():
        _rename(previous, folder)
    step()
    fsync_dir(folder.parent)
    step()
    drop_database(conn, swap.new_db)
    shutil.rmtree(new, ignore_errors=True)
