"""Step 2 of a restore, the database part: the dump streams, object by object, into a new
database loaded in a session of its owner role (never a superuser's: a dump from another
server is untrusted). The source's grants are left out; the live database's default,
schema and database privileges are copied, so the box's apply."""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from odbox_backup.backup import find_pg_tool, without_password
from odbox_backup.repository import CorruptObject, Repository
from odbox_backup.restore_checks import RestoreFailed, Target, connect
from odbox_common.progress import Progress


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

    with connect(target.conninfo) as conn:
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
    with connect(conninfo, live) as conn:
        rows = conn.execute(
            "SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text,"
            " d.defaclnamespace, d.defaclobjtype, a.grantee, pg_get_userbyid(a.grantee),"
            " a.privilege_type, a.is_grantable"
            " FROM pg_default_acl d, aclexplode(d.defaclacl) a"
            " ORDER BY 1, 2, 4"
        ).fetchall()
    if not rows:
        return
    with connect(conninfo, new) as conn:
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
    with connect(conninfo, live) as conn:
        acls: dict[str, list[tuple[int, str, str, bool]]] = {}
        for schema, grantee, role, privilege, grantable in conn.execute(query):
            acls.setdefault(schema, []).append((grantee, role, privilege, grantable))
    with connect(conninfo, new) as conn:
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

    with connect(conninfo) as conn:
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
