"""`vaultgen edit NAME`: one password in the user's editor, then re-encrypted and re-hashed.

The editor gets a copy in a 0700 folder of its own, in memory (tmpfs: $XDG_RUNTIME_DIR,
else /dev/shm) when there is one, so neither the copy nor the editor's swap and backup
files touch a disk. The folder is removed when the editor is done; when vaultgen is
stopped (SIGTERM, SIGHUP: the editor is stopped too; Ctrl-C is the editor's); after a
SIGKILL or a power loss, by the next `vaultgen edit` (each folder holds a lock only a
live run has).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from odbox_common import console
from odbox_common.errors import ToolError as VaultError
from vaultgen import layout
from vaultgen.generate import Planner, generate
from vaultgen.plans import Plan, Request
from vaultgen.verify import check_password, password_from_bytes

FOLDER_PREFIX = "vaultgen-edit-"
IN_MEMORY = ("tmpfs", "ramfs")


def _filesystem_type(path: Path) -> str:
    """The type of the file system holding `path`, from the kernel's mount table."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def scratch_base() -> tuple[Path, bool]:
    """Where the editor's folder goes, and whether that is in memory."""
    # mkdtemp makes a 0700 folder of our own in either, with a random name
    candidates = [os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"]  # noqa: S108
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        usable = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
        if usable and _filesystem_type(path) in IN_MEMORY:
            return path, True
    return Path(tempfile.gettempdir()), False


def remove_abandoned(base: Path) -> None:
    """Folders of runs that were killed: their lock is free."""
    for folder in base.glob(FOLDER_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.geteuid():
                continue
            fd = os.open(folder / ".lock", os.O_RDONLY | os.O_NOFOLLOW)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live `vaultgen edit`
            finally:
                os.close(fd)
            shutil.rmtree(folder, ignore_errors=True)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    base, in_memory = scratch_base()
    if not in_memory:
        console.warn(
            f"no tmpfs ($XDG_RUNTIME_DIR, /dev/shm): the cleartext is written to {base} "
            "while you edit"
        )
    remove_abandoned(base)
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=base))  # mode 0700
    lock = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)
        for number, handler in previous.items():
            signal.signal(number, handler)


def editor_command() -> list[str]:
    """$VISUAL, else $EDITOR, else vi, as git and crontab choose."""
    for variable in ("VISUAL", "EDITOR"):
        if value := os.environ.get(variable, "").strip():
            return shlex.split(value)
    return ["vi"]


def _leave_to_the_editor(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C reaches the whole terminal's process group: it is the editor's to handle (vi
    cancels a command with it), as git leaves it while its editor runs. A handler, not
    SIG_IGN, so that the editor does not inherit an ignored SIGINT."""


def run_editor(path: Path) -> None:
    command = editor_command()
    previous = signal.signal(signal.SIGINT, _leave_to_the_editor)
    try:
        # The editor gets the file's path, never the secret, on its command line.
        result = subprocess.run([*command, str(path)], check=False)
    except OSError as e:
        raise VaultError(
            f"cannot run the editor {command[0]!r} ({e.strerror}): set EDITOR; nothing was changed"
        ) from e
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.returncode < 0:
        raise VaultError(
            f"the editor was stopped by signal {-result.returncode}: nothing was changed"
        )
    if result.returncode != 0:
        raise VaultError(f"the editor exited with status {result.returncode}: nothing was changed")


def edit_password(root: Path, name: str, identity_file: Path | None = None) -> Plan | None:
    """Edit one password (a new one starts empty); None when it came back unchanged."""
    layout.check_name(name)
    layout.require_vault(root)
    rel = f"passwords/{name}.txt"
    planner = Planner(root, Request(identity_file=identity_file))
    planner.plan()  # reads what generate would: refuses a forged .age, a wrong key, …
    began = planner.content.get(rel)
    with scratch_folder() as folder:
        copy = folder / f"{name}.txt"
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(began or b"")
        run_editor(copy)
        edited = copy.read_bytes()
    password = password_from_bytes(edited, "the edited password")
    if began is not None and password.encode() == began:
        return None
    check_password(password, f"the edited password of {name}")
    request = Request(
        passwords={name: password},
        identity_file=identity_file,
        expected={rel: began} if began is not None else {},
    )
    return generate(root, request)
