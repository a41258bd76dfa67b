"""`dbinit pgadmin-boot`: pgAdmin's own database, its first account, and the `local` server.

1. The password file is checked first (pgAdmin takes a too-short initial
   password from the environment without a word and then never lets anyone
   log in; nixpkgs' module checks the length for the same reason).
2. `dbinit.connection_params()` in the pgAdmin database (made by `dbinit setup`)
   says where the local server's Unix socket is.
3. pgAdmin's own `pgadmin4-cli setup-db` creates or upgrades its tables in
   the database `--db-uri` names and, the first time, the account. It gets its
   settings from a config file dbinit writes into a private temp folder
   (CONFIG_DISTRO_FILE_PATH) and the account from PGADMIN_SETUP_EMAIL and
   PGADMIN_SETUP_PASSWORD in its environment, never from argv.
4. The `local` server entry: added through pgAdmin's own `load-servers` the
   first time (so every column gets the value this pgAdmin version expects),
   then kept pointing at the socket, port, database and role with a plain
   UPDATE of those columns when they drift. A second run changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbinit.connect import Target, connect, describe
from odbox_common.errors import ToolError, UsageError

if TYPE_CHECKING:
    import psycopg

MIN_PASSWORD_LENGTH = 6  # pgAdmin's PASSWORD_LENGTH_MIN
SETUP_TIMEOUT = 600
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


class PgAdminFailed(ToolError):
    """pgAdmin's CLI failed: the message has its most telling line, `output` all of it."""

    def __init__(self, command: str, status: int, output: str) -> None:
        self.output = output
        super().__init__(
            f"pgAdmin's {command} failed (exit status {status}): {telling_line(output)}"
        )


def telling_line(output: str) -> str:
    """The line of pgAdmin's output that says what went wrong.

    Python's last traceback line ("psycopg.OperationalError: ...") if there is one; never
    SQLAlchemy's "(Background on this error at: ...)" link.
    """
    lines = [
        line.strip()
        for line in output.splitlines()
        if line.strip() and not line.strip().startswith("(Background on this error")
    ]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*:", line) or line.startswith("ERROR"):
            return line
    return lines[-1] if lines else "no output"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    maintenance_db: str
    username: str

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "maintenance_db": self.maintenance_db,
            "username": self.username,
        }


@dataclass(frozen=True)
class BootResult:
    server: Server
    changed: list[str]


def read_password(path: Path, minimum: int = MIN_PASSWORD_LENGTH) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ToolError(f"cannot read the pgAdmin password file {path}: {e.strerror}") from e
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise UsageError(f"the pgAdmin password file {path} is not UTF-8 text") from e
    password = text.removesuffix("\n").removesuffix("\r")
    if "\n" in password:
        raise UsageError(f"the pgAdmin password file {path} holds more than one line")
    if len(password) < minimum:
        raise UsageError(
            f"the password in {path} has {len(password)} characters, but pgAdmin needs at "
            f"least {minimum}; nothing was changed"
        )
    return password


def parse_db_uri(uri: str) -> Target:
    """pgAdmin's CONFIG_DATABASE_URI (SQLAlchemy style) as a libpq connection for dbinit."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise UsageError(
            f"--db-uri {uri!r} is not a PostgreSQL URI: use e.g. "
            "postgresql://pgadmin@/pgadmin?host=/run/postgresql"
        )
    try:
        params = conninfo_to_dict(f"postgresql://{rest}")
    except ProgrammingError as e:
        raise UsageError(f"--db-uri is not a valid URI: {describe(e)}") from e
    if params.get("password"):
        raise UsageError(
            "--db-uri holds a password, which would show in the process list and the journal: "
            "pgAdmin on the box logs in by peer authentication (or use a ~/.pgpass file)"
        )
    if not params.get("dbname"):
        raise UsageError(f"--db-uri {uri!r} names no database")
    if not params.get("user"):
        raise UsageError(
            f"--db-uri {uri!r} names no role; name the one pgAdmin logs in as, "
            "e.g. postgresql://pgadmin@/pgadmin?host=/run/postgresql"
        )
    return Target({k: str(v) for k, v in params.items() if v is not None})


def _config_file(folder: Path, db_uri: str, data_dir: Path) -> Path:
    path = folder / "config_distro.py"
    path.write_text(
        "# Written by dbinit pgadmin-boot for one run of pgadmin4-cli; removed afterwards.\n"
        "SERVER_MODE = True\n"
        f"CONFIG_DATABASE_URI = {db_uri!r}\n"
        f"DATA_DIR = {str(data_dir)!r}\n"
    )
    return path


class PgAdminBoot:
    def __init__(
        self,
        *,
        email: str,
        password_file: Path,
        db_uri: str,
        data_dir: Path,
        pgadmin_cli: str = "pgadmin4-cli",
        server_name: str = "local",
        server_user: str | None = None,
        maintenance_db: str = "odoo",
        group: str = "Servers",
        min_password_length: int = MIN_PASSWORD_LENGTH,
        report: Callable[[str], None] = lambda _: None,
    ) -> None:
        if not _EMAIL.fullmatch(email):
            raise UsageError(f"--email {email!r} is not an e-mail address")
        self.email = email
        self.password = read_password(password_file, min_password_length)
        self.db_uri = db_uri
        self.target = parse_db_uri(db_uri)
        self.data_dir = data_dir
        cli = shutil.which(pgadmin_cli)
        if cli is None:
            raise ToolError(
                f"pgAdmin's command {pgadmin_cli!r} was not found: install pgadmin4, or pass "
                "--pgadmin-cli with its path"
            )
        self.cli = cli
        self.server_name = server_name
        self.server_user = server_user or self.target.params.get("user") or _login_name()
        self.maintenance_db = maintenance_db
        self.group = group
        self.report = report

    def run(self) -> BootResult:
        with connect(self.target) as conn:
            host, port = self._socket(conn)
            self._same_account(conn)
        wanted = Server(host, port, self.maintenance_db, self.server_user)
        with tempfile.TemporaryDirectory(prefix="dbinit-pgadmin-") as tmp:
            config = _config_file(Path(tmp), self.db_uri, self.data_dir)
            self.report(
                f"running pgAdmin's setup-db on database {self.target.dbname} "
                "(makes or upgrades its tables and, the first time, the account)"
            )
            self._pgadmin("setup-db", config=config)
            with connect(self.target) as conn:
                user_id = self._user_id(conn)
                rows = self._servers(conn, user_id)
            if not rows:
                servers = Path(tmp) / "servers.json"
                servers.write_text(json.dumps(self._servers_json(wanted)))
                self._pgadmin("load-servers", str(servers), "--user", self.email, config=config)
                self.report(f"added pgAdmin server {self.server_name!r}: {_shown(wanted)}")
                with connect(self.target) as conn:
                    rows = self._servers(conn, user_id)
                if not rows:
                    raise ToolError(
                        f"pgAdmin's load-servers did not add the server {self.server_name!r}"
                    )
                return BootResult(wanted, [f"added server {self.server_name}"])
        changed: list[str] = []
        with connect(self.target, autocommit=False) as conn:
            for server_id, current in rows:
                if current == wanted:
                    continue
                conn.execute(
                    "UPDATE server SET host = %s, port = %s, maintenance_db = %s, username = %s"
                    " WHERE id = %s",
                    [wanted.host, wanted.port, wanted.maintenance_db, wanted.username, server_id],
                )
                message = (
                    f"pointed pgAdmin server {self.server_name!r} at {_shown(wanted)} "
                    f"(was {_shown(current)})"
                )
                self.report(message)
                changed.append(message)
            conn.commit()
        return BootResult(wanted, changed)

    def _socket(self, conn: psycopg.Connection[Any]) -> tuple[str, int]:
        import psycopg

        from dbinit.plan.pgadmin_db import PARAMS_FUNCTION

        try:
            row = conn.execute(f"SELECT {PARAMS_FUNCTION}").fetchone()
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName) as e:
            raise ToolError(
                f"database {self.target.dbname} has no connection_params() function: "
                "run `dbinit setup` first"
            ) from e
        except psycopg.errors.InsufficientPrivilege as e:
            raise ToolError(
                f"{self.target.params.get('user') or 'this role'} may not run connection_params() "
                f"in {self.target.dbname}: run `dbinit setup` with the same --pgadmin-role"
            ) from e
        assert row is not None
        params = row[0]
        host = str(params.get("host") or "")
        if not host.startswith("/"):
            raise ToolError(
                "the server listens on no Unix socket (unix_socket_directories is empty); "
                "pgAdmin on the box connects only over the socket"
            )
        return host, int(params["port"])

    def _pgadmin(self, *args: str, config: Path) -> None:
        env = {
            **os.environ,
            "CONFIG_DISTRO_FILE_PATH": str(config),
            "PGADMIN_SETUP_EMAIL": self.email,
            "PGADMIN_SETUP_PASSWORD": self.password,
        }
        try:
            child = subprocess.Popen(
                [self.cli, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # no terminal, so pgAdmin never prompts; one group to kill
            )
        except OSError as e:
            raise ToolError(f"cannot run {self.cli}: {e.strerror}") from e
        try:
            stdout, stderr = child.communicate(timeout=SETUP_TIMEOUT)
        except BaseException as e:  # the timeout, Ctrl-C, SIGTERM: leave no pgAdmin behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            if isinstance(e, subprocess.TimeoutExpired):
                raise ToolError(
                    f"pgAdmin's {args[0]} did not finish within {SETUP_TIMEOUT} s"
                ) from e
            raise
        if child.returncode != 0:
            raise PgAdminFailed(args[0], child.returncode, f"{stdout}\n{stderr}")

    def _same_account(self, conn: psycopg.Connection[Any]) -> None:
        """Before pgAdmin runs: an existing pgAdmin database must know --email."""
        has_users = conn.execute("SELECT to_regclass('public.\"user\"') IS NOT NULL").fetchone()
        if has_users and has_users[0]:
            self._user_id(conn)

    def _user_id(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute('SELECT id FROM "user" WHERE email = %s', [self.email]).fetchone()
        if row is None:
            raise ToolError(
                f"pgAdmin's database already has its accounts and none is {self.email}: "
                "pass the e-mail address of the first account (pgAdmin sets it up only once)"
            )
        return int(row[0])

    def _servers(self, conn: psycopg.Connection[Any], user_id: int) -> list[tuple[int, Server]]:
        rows = conn.execute(
            "SELECT id, host, port, maintenance_db, username FROM server"
            " WHERE user_id = %s AND name = %s ORDER BY id",
            [user_id, self.server_name],
        ).fetchall()
        return [
            (int(r[0]), Server(str(r[1] or ""), int(r[2] or 0), str(r[3] or ""), str(r[4] or "")))
            for r in rows
        ]

    def _servers_json(self, server: Server) -> dict[str, Any]:
        return {
            "Servers": {
                "1": {
                    "Name": self.server_name,
                    "Group": self.group,
                    "Host": server.host,
                    "Port": server.port,
                    "MaintenanceDB": server.maintenance_db,
                    "Username": server.username,
                    "ConnectionParameters": {"sslmode": "disable", "connect_timeout": 10},
                }
            }
        }


def _shown(server: Server) -> str:
    return (
        f"{server.host} port {server.port}, database {server.maintenance_db}, "
        f"role {server.username}"
    )


def _login_name() -> str:
    import getpass

    return getpass.getuser()
