"""The database: psql and pg_dump, run in the database's pod (--db-pod) or, for a server
with no pod (RDS, Cloud SQL: --db-host), in the helper pod against that host.

Every command goes through one `sh -c` script (DB_SCRIPT) that can take the role's
password on stdin (PGPASSWORD, never in an argv: not in the exec request's URL, the API
server's audit log, nor `ps` in the pod) and, for the dump, counts the bytes pg_dump
wrote, in the pod. That count ends stderr (`k8s-migrate-sent N`), and the pull compares it
with what arrived before any snapshot is written: an exec stream can lose the end of
stdout and still end with Success (kubernetes issue 124571).

Why a count, not a check of the dump's format: a custom-format archive streamed to a pipe
has its table of contents first and the data blocks after, so "ends where its TOC says"
is checkable, but the TOC's layout changes with the archive version (1.14 in PostgreSQL
12 to 15, 1.15 in 16, 1.16 in 17...): a parser would refuse the dumps of a pg_dump newer
than itself, and plain SQL (the Odoo zip) has no TOC at all. The count needs only `sh`,
`tee`, `wc` and /dev/fd in the pod (every PostgreSQL and Odoo image has them), is the
same for both formats, and compares exactly what left pg_dump with exactly what arrived.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from k8s_migrate.kube import Cluster, CommandFailed, lines
from odbox_backup.backup import pg_version_text
from odbox_common.errors import ToolError, UsageError

FATAL = re.compile(r'FATAL:\s+((?:database|role) "[^"]*" does not exist)')
# libpq without a user name for the process's uid (Bitnami's images run as 1001, unnamed)
NO_LOCAL_USER = re.compile(r"local user with ID \d+ does not exist")
NEEDS_PASSWORD = re.compile(r"fe_sendauth: no password supplied|password authentication failed")
NO_CONNECTION = re.compile(r"connection to server .* failed|could not translate host name")
# $1 `pw` (a line with PGPASSWORD comes on stdin) or `-`; $2 `count` (the command's stdout
# is counted in the pod, the count written last on stderr) or `-`; then the command. The
# command's exit status is the script's (through fd 3, since a pipeline's is its last's).
DB_SCRIPT = (
    # a server that does not answer (a NetworkPolicy dropping packets) fails in 15 s
    '[ -n "$PGCONNECT_TIMEOUT" ] || export PGCONNECT_TIMEOUT=15; '
    'if [ "$1" = pw ]; then IFS= read -r PGPASSWORD; export PGPASSWORD; fi; '
    'if [ "$2" != count ]; then shift 2; exec "$@"; fi; shift 2; exec 4>&1; '
    'st=$( { { "$@" 3>&- 4>&-; echo $? >&3; } '
    '| { n=$(tee /dev/fd/4 | wc -c); echo "k8s-migrate-sent $n" >&2; } 3>&-; } 3>&1 ); '
    'exit "${st:-1}"'
)
SENT = re.compile(r"^k8s-migrate-sent\s+(\d+)\s*$", re.M)
LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|::1|\[::1\])$", re.I)
PG_DUMP_VERSION = re.compile(r"\)\s*(\d+)(?:\.(\d+))?")


class DatabaseError(ToolError):
    """The database could not be read, or its dump did not arrive whole."""


@dataclass
class Database:
    """Where the database's commands run and how they connect."""

    namespace: str
    pod: str  # the database's pod, or (--db-host) the helper pod
    container: str
    name: str
    user: str | None = None
    password: str | None = None
    host: str | None = None  # --db-host: the server is not in `pod`
    port: int = 5432

    @property
    def place(self) -> str:
        """`pod shop/postgres-0`, or `db.example:5432 from helper pod shop/k8s-migrate-…`."""
        if self.host:
            return f"{self.host}:{self.port} from helper pod {self.namespace}/{self.pod}"
        return f"pod {self.namespace}/{self.pod}"

    def connection(self) -> list[str]:
        """psql's and pg_dump's options for the server and role."""
        options = ["-h", self.host, "-p", str(self.port)] if self.host else []
        return options + (["-U", self.user] if self.user else [])

    def psql(self, sql: str, *more: str) -> list[str]:
        command = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *self.connection(),
                   "-d", self.name, "-c", sql]  # fmt: skip
        for query in more:
            command += ["-c", query]
        return command

    def command(self, command: list[str], *, count: bool = False) -> tuple[list[str], bytes | None]:
        """The command to exec (in DB_SCRIPT), and what to send on its stdin."""
        if self.password is None and not count and not self.host:
            return command, None
        pw = "pw" if self.password is not None else "-"
        wrapped = ["sh", "-c", DB_SCRIPT, "sh", pw, "count" if count else "-", *command]
        return wrapped, None if self.password is None else f"{self.password}\n".encode()

    def run(self, cluster: Cluster, command: list[str], limit: int = 1 << 20) -> bytes:
        wrapped, feed = self.command(command)
        return cluster.run(self.namespace, self.pod, self.container, wrapped, limit=limit,
                           what=f"run {command[0]} in {self.place}", feed=feed)  # fmt: skip

    def failed(self, e: CommandFailed) -> ToolError:
        """A database or role that does not exist, or a password that is missing or wrong,
        is the command line's fault: one usage line with the server's reason; anything else
        stays a failure with psql's own words."""
        where = self.place
        if match := FATAL.search(str(e)):
            option = "--db-name" if match[1].startswith("database") else "--db-user"
            return UsageError(f"{match[1]} in {where} (check {option})")
        if match := NO_LOCAL_USER.search(str(e)):
            return UsageError(
                f"psql in {where} cannot tell which role to connect as ({match[0]}: the "
                "container runs as a user with no name, as Bitnami's images do): give --db-user "
                "(e.g. postgres), and --db-password-secret NAME/KEY if the server asks for a "
                "password"
            )
        if NEEDS_PASSWORD.search(str(e)):
            given = (
                "the password of --db-password-secret was refused"
                if self.password
                else (
                    "the server asks for a password: give --db-password-secret NAME/KEY "
                    "(Bitnami's chart keeps it in the Secret of its release, key "
                    "postgres-password or password)"
                )
            )
            return UsageError(f"cannot connect to database {self.name} in {where}: {given}")
        if self.host and NO_CONNECTION.search(str(e)):
            return DatabaseError(
                f"cannot reach database {self.name} at {where}: {e}; the helper pod must reach "
                f"{self.host}:{self.port} (a NetworkPolicy that admits only Odoo's pods, or a "
                "security group, would stop it)"
            )
        return DatabaseError(f"cannot read database {self.name} in {where}: {e}")

    def check(self, cluster: Cluster, *queries: str) -> tuple[str, int, int, list[str]]:
        """pg_dump's version here, then in one psql session the server's version, the
        database's size and the lines of `queries` (the sessions on it: with one session,
        no earlier one of ours, ending, shows up). pg_dump older than the server is refused."""
        try:
            version = cluster.run(self.namespace, self.pod, self.container,
                                  ["pg_dump", "--version"])  # fmt: skip
        except CommandFailed as e:
            raise DatabaseError(f"pg_dump does not run in {self._pod_text()}: {e}") from e
        try:
            first, *rest = lines(self.run(cluster, self.psql(
                "SELECT pg_database_size(current_database()), "
                "current_setting('server_version_num')", *queries,
            )))  # fmt: skip
        except CommandFailed as e:
            raise self.failed(e) from e
        size, _, server = first.partition("|")
        pg_dump = version.decode(errors="replace").strip()
        self.check_pg_dump(pg_dump, int(server))
        return pg_dump, int(server), int(size.strip() or 0), rest

    def _pod_text(self) -> str:
        return f"helper pod {self.namespace}/{self.pod}" if self.host else f"pod {self.pod}"

    def check_pg_dump(self, pg_dump: str, server_version_num: int) -> None:
        """pg_dump refuses a server of a later major version than its own (`aborting because
        of server version mismatch`): found before the dump, not after Odoo is down."""
        match = PG_DUMP_VERSION.search(pg_dump)
        if match is None:
            return  # an unknown text: pg_dump itself will say
        mine = (int(match[1]), int(match[2] or 0) if int(match[1]) < 10 else 0)
        server = major(server_version_num)
        if mine >= server:
            return
        shown = ".".join(map(str, server)) if server[0] < 10 else str(server[0])
        fix = (
            f"give --helper-image an image with pg_dump {shown} or later, e.g. postgres:{shown}"
            if self.host
            else "check --db-container, or the pod's image"
        )
        raise UsageError(
            f"{pg_dump} in {self._pod_text()} cannot dump its server, PostgreSQL "
            f"{pg_version_text(server_version_num)}: pg_dump must be of major version {shown} "
            f"or later ({fix})"
        )

    def dump(self, cluster: Cluster, options: list[str], into: Any) -> int:
        """pg_dump's output through `into(stream)`; its byte count, checked against the
        count made in the pod (a stream cut short while it ended with Success is an error,
        raised before anything is written from it)."""
        command = ["pg_dump", *self.connection(), *options, "-d", self.name]
        wrapped, feed = self.command(command, count=True)
        what = f"run pg_dump in {self.place}"
        with cluster.exec(self.namespace, self.pod, self.container, wrapped,
                          stdin=feed is not None, what=what) as stream:  # fmt: skip
            if feed is not None:
                stream.write_stdin(feed)
                stream.close_stdin()
            into(stream)
            stream.finish()
            got, said = stream.received, SENT.findall(stream.stderr)
        if not said:
            raise DatabaseError(
                f"pg_dump in {self.place} ended without the byte count k8s-migrate asked the "
                f"pod for, after {got} bytes: the dump cannot be known to be whole, so no "
                "snapshot was written (the pod needs sh, tee, wc and /dev/fd)"
            )
        if int(said[-1]) != got:
            raise DatabaseError(
                f"the dump of {self.name} from {self.place} was cut short: {got} of the "
                f"{said[-1]} bytes pg_dump wrote arrived, though the exec ended with Success "
                "(kubernetes issue 124571); no snapshot was written: pull again"
            )
        return got

    def facts(self, cluster: Cluster) -> tuple[int, dict[str, str]]:
        """The server's version number, and the installed Odoo modules with their versions."""
        version = int(self.run(cluster, self.psql("SHOW server_version_num")))
        has = self.run(cluster, self.psql("SELECT to_regclass('ir_module_module') IS NOT NULL"))
        modules: dict[str, str] = {}
        if has.strip() == b"t":
            sql = (
                "SELECT name || '=' || coalesce(latest_version, '') FROM ir_module_module "
                "WHERE state = 'installed' ORDER BY name"
            )
            for line in lines(self.run(cluster, self.psql(sql), 16 << 20)):
                name, _, latest = line.partition("=")
                modules[name] = latest
        return version, modules


def major(server_version_num: int) -> tuple[int, int]:
    """(16, 0) for 160002; (9, 6) for 90624: before 10 a major version had two numbers."""
    n = server_version_num
    return (n // 10000, 0) if n >= 100000 else (n // 10000, n // 100 % 100)


def check_host(host: str) -> None:
    """--db-host is reached from the helper pod: its own loopback is not Odoo's."""
    if LOOPBACK.match(host.strip()):
        raise UsageError(
            f"--db-host {host} would be the helper pod itself: pg_dump runs there, not in "
            "Odoo's pods; a database Odoo reaches through a sidecar (the Cloud SQL Auth "
            "Proxy) needs its private address, or a Service in front of such a proxy"
        )
    if not host.strip() or host.startswith("/"):
        raise UsageError(f"--db-host {host!r} is not a host name or address")
