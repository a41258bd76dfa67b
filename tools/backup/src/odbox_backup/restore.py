"""`odbox-backup restore`: into a new database and a new folder, verify, and only then swap.

1. Every object the snapshot names must be in the repository: checked before
   anything is created.
2. The dump streams, object by object (each checked against its name), into a new
   database `<db>_restore_<id>`, loaded in a session of its owner role (never a
   superuser's: a dump from another server is untrusted): a custom dump by
   `pg_restore --single-transaction --no-owner --no-privileges`, a plain SQL one (an
   imported Odoo zip) by odbox_backup.sqlload, never psql. The source's grants are left
   out; the live database's default privileges are copied first, so the box's apply.
   The files go to a new folder next to the live one, given the live folder's owner and
   mode (on a new box, its parent's).
3. Verify: every object's SHA-256 (as it is read), the dump's and every
   file's size, and that every attachment the restored database names
   (`ir_attachment.store_fname`) is in the restored filestore, and that the folder's
   owner can read every file.
4. Only then, with Odoo stopped (the stop command), the live database is
   renamed `<db>_before_<time>` and the live folder `<folder>.before-<time>`,
   and the restored ones take their names. Odoo is started again whatever
   happened (the start command).

A failure before step 4 removes what the restore made and leaves the live
database and filestore untouched. The previous ones are kept until
`odbox-backup drop-previous` removes them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbox_backup import swap
from odbox_backup.backup import find_pg_tool, without_password
from odbox_backup.repository import CorruptObject, Repository
from odbox_backup.service import OdooService, ServiceError
from odbox_common.console import count_of
from odbox_common.errors import ToolError
from odbox_common.files import fsync_dir, sync_filesystem
from odbox_common.progress import Progress
from odbox_common.signals import uninterrupted


class RestoreFailed(ToolError):
    """The restore stopped; the live database and filestore are as they were."""


@dataclass(frozen=True)
class Target:
    conninfo: str  # the maintenance connection (a superuser), e.g. to `postgres`
    db: str
    filestore: Path
    owner: str | None = None
    pg_bin: Path | None = None


@dataclass
class Restored:
    snapshot: str
    db: str
    filestore: Path
    previous_db: str | None
    previous_filestore: Path | None
    files: int
    bytes: int
    attachments_checked: int
    attachments_missing: int = 0


def _connect(conninfo: str, dbname: str | None = None) -> Any:
    import psycopg
    from psycopg.conninfo import make_conninfo

    info = make_conninfo(conninfo, dbname=dbname) if dbname else conninfo
    try:
        return psycopg.connect(info, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise RestoreFailed(
            f"cannot connect to PostgreSQL: {str(e).strip().splitlines()[0]}"
        ) from e


def _exists(conn: Any, db: str) -> tuple[bool, str | None]:
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [db]
    ).fetchone()
    return (row is not None, str(row[0]) if row else None)


def check_objects(repo: Repository, manifest: dict[str, Any]) -> None:
    known = repo.known_objects(with_places=True)
    missing = [n for n in repo.objects_of(manifest) if n not in known]
    if missing:
        raise RestoreFailed(
            f"snapshot {manifest['id']} names {count_of(len(missing), 'object')} missing from "
            f"{repo.store.url} (first: {missing[0][:12]}…); nothing was changed"
        )


def _stream_dump(
    repo: Repository, manifest: dict[str, Any], sink: Any, progress: Progress | None = None
) -> int:
    """Write the dump's objects in order; its size. Each object is checked against its
    name as it is read, so the manifest's list of names pins the whole dump (its SHA-256
    need not be computed again)."""
    size = 0
    for name in manifest["database"]["objects"]:
        data = repo.get_object(name)
        size += len(data)
        sink.write(data)
        if progress:
            progress.advance(len(data))
    return size


# Where a snapshot came from: a dump this tool made itself from this box's database (or a
# copy of one) is trusted as that box's; anything else (an Odoo zip, another cluster's dump
# pulled by k8s-migrate) came from another server.
TRUSTED_SOURCES = ("run", "copy")


@dataclass
class Session:
    """How a child reaches the new database as its owner."""

    conninfo: str  # without its password
    env: dict[str, str]
    run_as: dict[str, Any]  # subprocess's user/group, when it must run as the owner's OS user
    role: str | None = None  # pg_restore --role, when the session is the maintenance one


def owner_session(target: Target, owner: str, new_db: str, trusted: bool) -> Session:
    """A session of the owner role on the new database, so what the dump says runs with the
    owner's rights only: over the maintenance DSN with the owner's name; else, run as root,
    as the OS user of the owner's name (peer authentication: odoo is odoo); else, for a
    trusted dump only, the maintenance session with SET ROLE, as before."""
    import pwd

    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    conninfo, _ = without_password(target.conninfo, user=owner, dbname=new_db)
    env: dict[str, str] = {}  # the maintenance role's password is not the owner's
    try:
        psycopg.connect(conninfo, connect_timeout=10).close()
        return Session(conninfo, env, {})
    except psycopg.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    account = None
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam(owner)
    if account is not None:
        return Session(conninfo, env, {"user": account.pw_uid, "group": account.pw_gid,
                                       "extra_groups": [], "cwd": "/"})  # fmt: skip
    if trusted:
        conninfo, env = without_password(target.conninfo, dbname=new_db)
        return Session(conninfo, env, {}, role=owner)
    user = conninfo_to_dict(target.conninfo).get("user") or "the DSN's user"
    raise RestoreFailed(
        f"cannot connect as the owner role {owner} ({reason}): a dump from another server is "
        f"loaded as its owner, never as {user}; run the restore as root on the box (it then "
        f"connects as the OS user {owner}), or give a --dsn that role can use; nothing was changed"
    )


def restore_database(
    repo: Repository,
    manifest: dict[str, Any],
    target: Target,
    new_db: str,
    owner: str,
    progress: Progress | None = None,
    live: str | None = None,
) -> None:
    """Load the dump into the new (empty) database as its owner: plain SQL through
    odbox_backup.sqlload (no psql), a custom dump through pg_restore --no-privileges
    --no-owner. The source's grants and owners are left out; the box's apply."""
    import sys

    from psycopg import sql

    with _connect(target.conninfo) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                sql.Identifier(new_db), sql.Identifier(owner)
            )
        )
    if live:
        copy_default_privileges(target.conninfo, live, new_db)
    database = manifest["database"]
    plain = database["format"] == "sql"
    trusted = manifest.get("source", "run") in TRUSTED_SOURCES and not plain
    session = owner_session(target, owner, new_db, trusted)
    env = dict(os.environ) | session.env
    if plain:
        command = [sys.executable, "-m", "odbox_backup.sqlload"]
        env["ODBOX_SQLLOAD_CONNINFO"] = session.conninfo
    else:
        command = [find_pg_tool("pg_restore", target.pg_bin), "--single-transaction",
                   "--exit-on-error", "--no-owner", "--no-privileges",
                   f"--dbname={session.conninfo}"]  # fmt: skip
        if session.role:
            command.append(f"--role={session.role}")
    try:
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, env=env, **session.run_as)  # fmt: skip
    except OSError as e:
        who = f" as the OS user {owner}" if session.run_as else ""
        raise RestoreFailed(
            f"cannot run {command[0]}{who} to load the dump: {e.strerror or e} (that user must "
            "be able to run it: on the box it can); nothing was swapped"
        ) from e
    assert child.stdin is not None and child.stderr is not None
    try:
        size = _stream_dump(repo, manifest, child.stdin, progress)
        child.stdin.close()
    except BrokenPipeError:
        size = -1
    except BaseException:
        child.kill()
        child.wait()
        raise
    stderr = child.stderr.read().decode(errors="replace")
    if child.wait() != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        what = "loading the SQL dump" if plain else "pg_restore"
        last = lines[-1].removeprefix("error: ") if lines else "no message"
        raise RestoreFailed(f"{what} into {new_db} failed: {last}; nothing was swapped")
    if size != database["size"]:
        raise CorruptObject(
            f"the dump of snapshot {manifest['id']} came back with {size} bytes, "
            f"not {database['size']}"
        )
    if live:
        copy_schema_acls(target.conninfo, live, new_db)


def copy_default_privileges(conninfo: str, live: str, new: str) -> None:
    """Give the new database the live one's default privileges (dbinit's `ALTER DEFAULT
    PRIVILEGES FOR ROLE odoo GRANT … TO odoo_handyman`), before the dump is loaded: what
    the owner creates then gets the box's grants, not the source's."""
    from psycopg import sql

    kinds = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
    with _connect(conninfo, live) as conn:
        rows = conn.execute(
            "SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text,"
            " d.defaclnamespace, d.defaclobjtype, a.grantee, pg_get_userbyid(a.grantee),"
            " a.privilege_type, a.is_grantable"
            " FROM pg_default_acl d, aclexplode(d.defaclacl) a"
            " ORDER BY 1, 2, 4"
        ).fetchall()
    if not rows:
        return
    with _connect(conninfo, new) as conn:
        schemas = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
        reset = set()
        for role, schema, nsp_oid, kind, grantee, grantee_name, privilege, grantable in rows:
            if (nsp_oid != 0 and schema.strip('"') not in schemas) or kind not in kinds:
                continue
            prefix = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} ").format(
                sql.Identifier(role),
                sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema.strip('"')))
                if nsp_oid != 0 else sql.SQL(""),
            )  # fmt: skip
            objects = sql.SQL(kinds[kind])
            if (role, schema, kind) not in reset:  # the live entry replaces the built-in one
                reset.add((role, schema, kind))
                conn.execute(prefix + sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}").format(
                    objects, sql.Identifier(role)))  # fmt: skip
            who = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(grantee_name)
            conn.execute(prefix + sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege), objects, who,
                sql.SQL(" WITH GRANT OPTION" if grantable else "")))  # fmt: skip


def copy_schema_acls(conninfo: str, live: str, new: str) -> None:
    """Give each schema of the new database that the live one has too the live one's
    privileges (dbinit's USAGE on public for odoo_handyman): the dump's own grants were left
    out, and a schema's are not default privileges."""
    from psycopg import sql

    query = (
        "SELECT n.nspname, a.grantee, pg_get_userbyid(a.grantee), a.privilege_type,"
        " a.is_grantable FROM pg_namespace n, aclexplode(n.nspacl) a"
        " WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'"
    )
    with _connect(conninfo, live) as conn:
        acls: dict[str, list[tuple[int, str, str, bool]]] = {}
        for schema, grantee, role, privilege, grantable in conn.execute(query):
            acls.setdefault(schema, []).append((grantee, role, privilege, grantable))
    with _connect(conninfo, new) as conn:
        present = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
        for schema, entries in acls.items():
            if schema not in present:
                continue
            target = sql.Identifier(schema)
            conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(target))
            for grantee, role, privilege, grantable in entries:
                who = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(role)
                conn.execute(sql.SQL("GRANT {} ON SCHEMA {} TO {}{}").format(
                    sql.SQL(privilege), target, who,
                    sql.SQL(" WITH GRANT OPTION" if grantable else "")))  # fmt: skip


def copy_database_acl(conninfo: str, live: str, new: str) -> None:
    """Give the new database the live one's own privileges (CONNECT, TEMP, CREATE: dbinit
    revokes them from PUBLIC). A dump holds what is inside a database, not these."""
    from psycopg import sql

    with _connect(conninfo) as conn:
        acl = conn.execute(
            "SELECT a.grantee, pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable"
            " FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
            [live],
        ).fetchall()
        if not acl:
            return  # the default privileges, which the new database has too
        target = sql.Identifier(new)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target))
        for grantee, role, privilege, grantable in acl:
            if privilege not in ("CONNECT", "TEMPORARY", "CREATE"):
                continue
            who = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(role)
            conn.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(privilege), target, who,
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )  # fmt: skip


def restore_filestore(
    repo: Repository,
    manifest: dict[str, Any],
    folder: Path,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,  # set when the database part failed
) -> tuple[int, int]:
    try:
        return _write_files(repo, manifest, folder, progress, cancel)
    except OSError as e:
        where = e.filename or folder
        full = f"; the disk under {folder.parent} is full" if e.errno == errno.ENOSPC else ""
        raise RestoreFailed(f"cannot write {where}: {e.strerror}{full}; nothing was swapped") from e


def _write_files(
    repo: Repository,
    manifest: dict[str, Any],
    folder: Path,
    progress: Progress | None,
    cancel: threading.Event | None,
) -> tuple[int, int]:
    folder.mkdir(mode=0o750)
    count = total = 0
    # Plain strings, not Path: pathlib interns every part of every path it parses, and the
    # table of interned strings grew by megabytes over 200,000 file names.
    root, made = str(folder), {str(folder)}
    for entry in repo.files_in_read_order(manifest):
        if cancel is not None and cancel.is_set():
            raise RestoreFailed("the restore of the database failed; the files were not finished")
        rel = entry["path"]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise CorruptObject(f"snapshot {manifest['id']} names a file outside the filestore")
        path = os.path.join(root, rel)  # noqa: PTH118
        parent = os.path.dirname(path)  # noqa: PTH120
        if parent not in made:  # a folder per 2 hex digits in Odoo's filestore: 256 of them
            os.makedirs(parent, exist_ok=True)  # noqa: PTH103
            made.add(parent)
        size = 0
        with open(path, "wb") as f:
            for name in entry["objects"]:
                data = repo.get_object(name)
                f.write(data)
                size += len(data)
                if progress:
                    progress.advance(len(data))
        if size != entry["size"]:
            raise CorruptObject(f"{entry['path']} came back with {size} bytes, not {entry['size']}")
        count += 1
        total += size
    sync_filesystem(folder)
    fsync_dir(folder.parent)
    return count, total


def adopt(folder: Path, like: Path) -> None:
    """Give the restored folder `like`'s owner, group and mode: `like` is the live folder, or,
    on a new box with no live folder yet, its parent (the odoo user's data folder), so Odoo
    can read and write its filestore after the swap. Folders take `like`'s mode, files the
    same without x; the owner always keeps read and write (and x on folders). Owners change
    only when run as root; modes always.

    Through file descriptors, bottom up, never following a symlink: the parent is the odoo
    user's, who could put a symlink to /etc where the folder was; fwalk holds the folder it
    opened, and each folder is handed over only once everything in it was."""
    import stat

    st = like.stat()
    chown = os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid())
    dir_mode = (st.st_mode & 0o2777) | 0o700
    file_mode = (st.st_mode & 0o666) | 0o600
    top = None
    for _, _, files, fd in os.fwalk(folder, topdown=False):
        for name in files:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(entry.st_mode):
                continue  # a restore writes regular files only
            if chown:
                os.chown(name, st.st_uid, st.st_gid, dir_fd=fd, follow_symlinks=False)
            os.chmod(name, file_mode, dir_fd=fd)  # a regular file, in a folder not yet handed over
        if chown:
            os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, dir_mode)
        top = fd
    if top is None:
        raise RestoreFailed(f"{folder} is not the folder the restore made; nothing was swapped")


def unreadable(folder: Path) -> tuple[int, str]:
    """How many files and folders under `folder` (itself included) its owner could not use
    as Odoo does (read a file; list, enter and add to a folder), and the first of them.
    Decided from the owner's uid and groups and each entry's mode bits, as the kernel
    decides (ACLs aside): it is what a restore run as root cannot see by trying."""
    import pwd
    import stat

    owner = folder.stat()
    if owner.st_uid == 0:
        return 0, ""
    try:
        user = pwd.getpwuid(owner.st_uid)
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except KeyError:
        groups = {owner.st_gid}

    def may(st: os.stat_result, need: int) -> bool:  # need: 4 read, 2 write, 1 enter
        if st.st_uid == owner.st_uid:
            bits = st.st_mode >> 6
        elif st.st_gid in groups:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & need == need

    count, first = 0, ""
    for parent, _, files in os.walk(folder):
        if not may(os.lstat(parent), 7):
            count, first = count + 1, first or parent
        for name in files:
            path = os.path.join(parent, name)  # noqa: PTH118
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or not may(st, 4):
                count, first = count + 1, first or path
    return count, first


@dataclass
class Attachments:
    checked: int
    missing: int = 0
    first_missing: str = ""


def verify_attachments(conninfo: str, db: str, folder: Path) -> Attachments:
    """How many store_fname the restored database names, and how many of them are not a file
    in the restored folder."""
    count, missing, first = 0, 0, ""
    with _connect(conninfo, db) as conn:
        has = conn.execute("SELECT to_regclass('ir_attachment')").fetchone()
        if not has or not has[0]:
            return Attachments(0)
        # A server-side cursor, a batch at a time: a list of every name (200,000 on a big
        # box) came on top of the manifest and the object places, and set the peak memory.
        with conn.transaction(), conn.cursor("attachments") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                "SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL"
            )
            for (fname,) in cursor:
                count += 1
                if not os.path.isfile(os.path.join(folder, fname)):  # noqa: PTH113, PTH118
                    missing += 1
                    first = first or str(fname)
    return Attachments(count, missing, first)


_drop_database = swap.drop_database


def _drop(conninfo: str, db: str) -> None:
    """Best effort: the cleanup of a failed restore must not hide why it failed."""
    with contextlib.suppress(Exception), _connect(conninfo) as conn:
        _drop_database(conn, db)


@contextlib.contextmanager
def _cleanup_on_failure(conninfo: str, db: str, folder: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        _drop(conninfo, db)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def restore(
    repo: Repository,
    snapshot_id: str,
    target: Target,
    service: OdooService,
    progress: Progress | None = None,
    *,
    allow_missing_attachments: bool = False,
    prepare: Callable[[str], None] | None = None,
) -> Restored:
    """Restore `snapshot_id` next to the live database and filestore, verify it, then swap.
    `prepare` (restore --neutralize) runs on the restored database's name before the swap,
    before any Odoo has started on it; when it raises, nothing is swapped.
    A restored database that names attachments the snapshot's filestore lacks stops the
    restore before the swap, unless `allow_missing_attachments`: a snapshot of a box whose
    filestore already lacked them (Odoo shows such an attachment as empty) or where Odoo's
    garbage collector deleted one during the backup is still that box as it was."""
    progress = progress or Progress()
    manifest = repo.read_snapshot(snapshot_id)
    check_objects(repo, manifest)
    short = snapshot_id[-8:]
    new_db = f"{kept_base(target.db)}_restore_{short}"
    new_folder = target.filestore.with_name(f"{target.filestore.name}.restore-{short}")
    refuse_mount_point(target.filestore)
    with swap.restore_lock(target.filestore, "the restore"):
        swap.refuse_if_interrupted(target.filestore, "the restore")
        with _connect(target.conninfo) as conn:
            live_exists, live_owner = _exists(conn, target.db)
            if _exists(conn, new_db)[0] or new_folder.exists():
                # The lock is ours and no journal names them: a restore killed before its
                # swap left them, and this one starts again.
                progress.phase(f"removing {new_db} and {new_folder}: a killed restore left them")
                _drop_database(conn, new_db)
                shutil.rmtree(new_folder, ignore_errors=True)
        owner = target.owner or live_owner or "postgres"
        with _cleanup_on_failure(target.conninfo, new_db, new_folder):
            files, size, attachments = _restore_and_verify(
                repo, manifest, target, new_db, new_folder, owner, live_exists, progress,
                allow_missing_attachments=allow_missing_attachments,
            )  # fmt: skip
            if prepare is not None:
                prepare(new_db)
        previous_db, previous_folder = _previous_names(target, live_exists)
        kept = str(previous_folder) if previous_folder else None
        plan = swap.Swap(snapshot_id, target.db, new_db, previous_db, str(target.filestore),
                         str(new_folder), kept)  # fmt: skip
        run_swap(plan, target.conninfo, service, progress)
    return Restored(snapshot_id, target.db, target.filestore, previous_db, previous_folder,
                    files, size, attachments.checked, attachments.missing)  # fmt: skip


def _restore_and_verify(
    repo: Repository,
    manifest: dict[str, Any],
    target: Target,
    new_db: str,
    new_folder: Path,
    owner: str,
    live_exists: bool,
    progress: Progress,
    *,
    allow_missing_attachments: bool,
) -> tuple[int, int, Attachments]:
    """Steps 2 and 3: the new database and folder, restored and verified."""
    new_folder.parent.mkdir(parents=True, exist_ok=True)
    progress.phase(
        f"restoring database {manifest['database']['name']} and "
        f"{count_of(manifest['filestore']['count'], 'file')}",
        manifest["database"]["size"] + manifest["filestore"]["bytes"],
    )
    # The files are written while PostgreSQL restores the dump: one waits on the server,
    # the other on the disk, and both finish before anything is verified.
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        files_done = pool.submit(restore_filestore, repo, manifest, new_folder, progress,
                                 cancel)  # fmt: skip
        try:
            restore_database(repo, manifest, target, new_db, owner, progress,
                             target.db if live_exists else None)  # fmt: skip
        except BaseException:
            cancel.set()
            raise
        finally:
            wait([files_done])
        files, size = files_done.result()
    if live_exists:
        copy_database_acl(target.conninfo, target.db, new_db)
    adopt(new_folder, target.filestore if target.filestore.exists() else new_folder.parent)
    bad, first_bad = unreadable(new_folder)
    if bad:
        raise RestoreFailed(
            f"the owner of {new_folder} (uid {new_folder.stat().st_uid}) could not read "
            f"{bad} of its files and folders (first: {first_bad}); nothing was swapped"
        )
    attachments = verify_attachments(target.conninfo, new_db, new_folder)
    if attachments.missing:
        lacking = (
            f"the restored database names {count_of(attachments.missing, 'attachment')} the "
            f"snapshot's filestore lacks (first: {attachments.first_missing})"
        )
        if not allow_missing_attachments:
            raise RestoreFailed(
                f"{lacking}; nothing was swapped. If the live filestore lacked them too "
                "when the snapshot was taken, --allow-missing-attachments restores it as it was"
            )
        progress.phase(f"warning: {lacking}; restored as it was (--allow-missing-attachments)")
    progress.phase(
        f"verified: every object's SHA-256, {count_of(files, 'file')}, "
        f"{attachments.checked - attachments.missing} of {attachments.checked} "
        "attachments present"
    )
    return files, size, attachments


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
                with _connect(conninfo) as conn:
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


def _previous_names(target: Target, live_exists: bool) -> tuple[str | None, Path | None]:
    """`<db>_before_<UTC second>` and `<folder>.before-<UTC second>`, for a second no earlier
    restore used (two restores within a second: the second one waits for the next)."""
    import time

    with _connect(target.conninfo) as conn:
        for _ in range(50):  # 10 s: more means the names do not change with the second
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            db = f"{kept_base(target.db)}_before_{stamp}" if live_exists else None
            folder = (
                target.filestore.with_name(f"{target.filestore.name}.before-{stamp}")
                if target.filestore.exists()
                else None
            )
            if not (db and _exists(conn, db)[0]) and not (folder and folder.exists()):
                return db, folder
            time.sleep(0.2)
    raise RestoreFailed(
        f"{db} and {folder} exist whatever the time: remove them; nothing was swapped"
    )


STAMP = r"\d{8}T\d{6}Z"
NAMEDATALEN = 63  # bytes in a PostgreSQL name
LONGEST_SUFFIX = len("_before_20260101T000000Z")


def kept_base(db: str) -> str:
    """What the names of `db`'s kept and restored copies start with: `db` itself, or, when
    `db` + `_before_<time>` would pass PostgreSQL's 63 bytes (which cuts a name silently: a
    51-character name lost its time, and the next restore waited forever for a free one),
    its first bytes and a hash of the whole name."""
    import hashlib

    if len(db.encode()) + LONGEST_SUFFIX <= NAMEDATALEN:
        return db
    digest = hashlib.sha256(db.encode()).hexdigest()[:8]
    head = db.encode()[: NAMEDATALEN - LONGEST_SUFFIX - 9].decode(errors="ignore")
    return f"{head}_{digest}"


def refuse_mount_point(filestore: Path) -> None:
    """A filestore that is a mount point cannot be swapped by rename (EBUSY), and a folder
    next to it is on the parent's file system: refused before anything is written."""
    if filestore.is_dir() and os.path.ismount(filestore):
        raise RestoreFailed(
            f"{filestore} is a mount point: a restore writes a new folder next to it and swaps "
            "the two by rename, which a mount point refuses; mount the disk on the folder that "
            f"holds it ({filestore.parent}) instead; nothing was changed"
        )


@dataclass
class Previous:
    """What restores left next to the live database and filestore."""

    databases: list[str]
    folders: list[Path]
    # the sessions open on a database to drop ("pid 123 of odoo (psql)"): ended by the drop
    sessions: dict[str, list[str]] = field(default_factory=dict)
    # `_restore_` databases a restore is writing now, with their sessions: left alone
    in_use: dict[str, list[str]] = field(default_factory=dict)


def find_previous(conninfo: str, db: str, filestore: Path) -> Previous:
    """The `<db>_before_<time>` databases and `<folder>.before-<time>` folders restores kept,
    and the `_restore_`/`.restore-` ones a killed restore left. A kept copy is not live: a
    session open on it (a psql left open, a report) does not keep it; a `_restore_` database
    with a session is one a restore is writing now, and it and its folder are left alone."""
    db_pattern = re.compile(rf"{re.escape(kept_base(db))}_(before_{STAMP}|restore_[0-9a-f]{{8}})")
    folder_pattern = re.compile(
        rf"{re.escape(filestore.name)}\.(before-{STAMP}|restore-[0-9a-f]{{8}})"
    )
    with _connect(conninfo) as conn:
        names = [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]
        sessions: dict[str, list[str]] = {}
        for datname, pid, user, app in conn.execute(
            "SELECT datname, pid, usename, application_name FROM pg_stat_activity"
            " WHERE datname IS NOT NULL AND pid <> pg_backend_pid() ORDER BY pid"
        ):
            sessions.setdefault(str(datname), []).append(
                f"pid {pid} of {user}" + (f" ({app})" if app else "")
            )
    ours = [n for n in names if db_pattern.fullmatch(n)]
    in_use = {n: sessions[n] for n in ours if "_restore_" in n and n in sessions}
    databases = [n for n in ours if n not in in_use]
    running = {n.rsplit("_", 1)[1] for n in in_use}
    folders = (
        sorted(
            p for p in filestore.parent.iterdir()
            if folder_pattern.fullmatch(p.name) and p.name.rsplit("-", 1)[1] not in running
        )
        if filestore.parent.is_dir()
        else []
    )  # fmt: skip
    held = {n: sessions[n] for n in databases if n in sessions}
    return Previous(databases, folders, held, in_use)


def leftovers(previous: Previous) -> Previous:
    """Only what killed restores left (`_restore_`, `.restore-`), not the kept copies."""
    return Previous(
        [d for d in previous.databases if "_restore_" in d[-17:]],
        [f for f in previous.folders if ".restore-" in f.name],
        previous.sessions,
        previous.in_use,
    )


def refuse_without_live(conninfo: str, db: str, filestore: Path, previous: Previous) -> None:
    """A kept copy may be all that is left of the live data when the live database or
    folder is missing: then nothing is dropped (a leftover of a killed restore still is,
    with --leftovers)."""
    with _connect(conninfo) as conn:
        live = _exists(conn, db)[0]
    missing = [f"database {db}"] if not live else []
    if previous.folders and not filestore.is_dir():
        missing.append(str(filestore))
    if missing:
        raise RestoreFailed(
            f"{' and '.join(missing)} does not exist: a kept copy may be all there is of it, "
            "so nothing was dropped; rename a copy back (or restore), or pass --leftovers to "
            "drop only what killed restores left"
        )


def drop_previous(conninfo: str, previous: Previous) -> None:
    with _connect(conninfo) as conn:
        for db in previous.databases:
            _drop_database(conn, db)
    for folder in previous.folders:
        shutil.rmtree(folder)
    if previous.folders:
        fsync_dir(previous.folders[0].parent)
