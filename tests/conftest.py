"""Fixtures shared by every tool's tests: a throwaway PostgreSQL cluster and an unprivileged user.

The cluster is real: `initdb` and `pg_ctl` from the PostgreSQL 15+ binaries on
PATH or under /usr/lib/postgresql/*/bin, listening only on a Unix socket in a
private temp folder, trust auth on that socket so tests can connect as any role.
PostgreSQL refuses to run as root, so under root the server runs as an
unprivileged user (`postgres` if it exists, else `nobody`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MIN_PG_MAJOR = 15


@dataclass(frozen=True)
class Unprivileged:
    """A user other than root, for the programs that refuse to run as root."""

    name: str
    uid: int
    gid: int


def _unprivileged_user() -> Unprivileged | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Unprivileged(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError("running as root but neither a postgres nor a nobody user exists")


def find_pg_bindir() -> Path:
    """PostgreSQL's server binaries: PATH first, then Debian's versioned folders, newest first."""
    candidates: list[Path] = []
    if on_path := shutil.which("pg_ctl"):
        candidates.append(Path(on_path).resolve().parent)  # Debian links into its bin dirs
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versioned, key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        if not (bindir / "initdb").exists():
            continue
        out = subprocess.run(
            [bindir / "pg_ctl", "--version"], capture_output=True, text=True, check=True
        ).stdout
        if (m := re.search(r"(\d+)", out)) and int(m.group(1)) >= MIN_PG_MAJOR:
            return bindir
    raise RuntimeError(
        f"no PostgreSQL {MIN_PG_MAJOR}+ server binaries (initdb, pg_ctl) on PATH or under "
        "/usr/lib/postgresql/*/bin: apt-get install postgresql"
    )


@dataclass(frozen=True)
class PostgresCluster:
    bindir: Path
    datadir: Path
    socket_dir: Path
    port: int
    superuser: str

    @property
    def env(self) -> dict[str, str]:
        """libpq's standard variables pointing at this cluster."""
        return {
            **os.environ,
            "PGHOST": str(self.socket_dir),
            "PGPORT": str(self.port),
            "PGUSER": self.superuser,
            "PGDATABASE": "postgres",
        }

    @property
    def dsn(self) -> str:
        return f"host={self.socket_dir} port={self.port} user={self.superuser} dbname=postgres"

    def psql(self, sql: str, *, user: str | None = None, db: str = "postgres") -> str:
        result = subprocess.run(
            [self.bindir / "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-U",
             user or self.superuser, "-d", db, "-c", sql],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return result.stdout.strip()


@contextlib.contextmanager
def new_postgres_cluster(port: int = 5432) -> Iterator[StoppedCluster]:
    """initdb a cluster in a new temp folder, not started; removed afterwards, whatever happens."""
    bindir = find_pg_bindir()
    user = _unprivileged_user()
    base = Path(tempfile.mkdtemp(prefix="odbox-pg-"))
    datadir, socket_dir = base / "data", base / "socket"
    socket_dir.mkdir()
    if user is not None:
        base.chmod(0o755)
        os.chown(base, user.uid, user.gid)
        os.chown(socket_dir, user.uid, user.gid)
    cluster = StoppedCluster(PostgresCluster(bindir, datadir, socket_dir, port, "postgres"), user)
    try:
        cluster.run(
            [bindir / "initdb", "-D", datadir, "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
        )  # fmt: skip
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class StoppedCluster:
    """A cluster made by initdb, started and stopped on demand (for tests of waiting)."""

    cluster: PostgresCluster
    user: Unprivileged | None

    def run(self, command: list[str | Path], check: bool = True) -> None:
        as_user = (
            {"user": self.user.uid, "group": self.user.gid, "extra_groups": []} if self.user else {}
        )
        subprocess.run(
            command, capture_output=True, text=True, check=check,
            cwd=self.cluster.datadir.parent, **as_user,  # type: ignore[call-overload]
        )  # fmt: skip

    def start(self) -> PostgresCluster:
        c = self.cluster
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{c.socket_dir}' -p {c.port} -F"
        )
        self.run(
            [c.bindir / "pg_ctl", "-D", c.datadir, "-o", options,
             "-l", c.datadir.parent / "server.log", "-w", "-t", "60", "start"],
        )  # fmt: skip
        return c

    def stop(self) -> None:
        c = self.cluster
        if (c.datadir / "postmaster.pid").exists():
            self.run([c.bindir / "pg_ctl", "-D", c.datadir, "-m", "immediate", "-w", "stop"],
                     check=False)  # fmt: skip


@contextlib.contextmanager
def start_postgres_cluster(port: int = 5432) -> Iterator[PostgresCluster]:
    """Start a cluster in a new temp folder and remove it afterwards, whatever happens."""
    with new_postgres_cluster(port) as stopped:
        yield stopped.start()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the whole session (Unix socket only, in a temp folder)."""
    with start_postgres_cluster() as cluster:
        yield cluster


class SmallFilesystems:
    """Real, small file systems (tmpfs) for disk-full and read-only tests; needs root."""

    def __init__(self) -> None:
        self.mounts: list[Path] = []

    def mount(self, size: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix="odbox-tmpfs-"))
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
            check=True,
            capture_output=True,
        )
        self.mounts.append(path)
        return path

    @staticmethod
    def remount_read_only(path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", path], check=True, capture_output=True)

    def cleanup(self) -> None:
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path], capture_output=True)
            with contextlib.suppress(OSError):
                path.rmdir()


@pytest.fixture
def small_filesystems() -> Iterator[SmallFilesystems]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    filesystems = SmallFilesystems()
    try:
        yield filesystems
    finally:
        filesystems.cleanup()


@dataclass(frozen=True)
class MotoServer:
    """moto in server mode on 127.0.0.1; boto3 reaches it through AWS_ENDPOINT_URL."""

    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing every boto3 client at this server."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def reset(self) -> None:
        """Forget every resource (moto's own reset endpoint)."""
        import urllib.request

        url = f"{self.endpoint}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 (loopback)
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 (our loopback server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_moto(env: dict[str, str] | None = None) -> Iterator[MotoServer]:
    """A moto server on a free port of 127.0.0.1, stopped afterwards."""
    import sys
    import time
    import urllib.request

    port = _free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env or dict(os.environ),
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield MotoServer(endpoint)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session, on a free port of 127.0.0.1, stopped afterwards."""
    # ec2-install's tests need the official NixOS images (and an impostor): moto
    # loads them from this file instead of its own AMI list, in every region.
    env = {**os.environ, "MOTO_AMIS_PATH": str(Path(__file__).with_name("fake-nixos-amis.json"))}
    with running_moto(env) as server:
        yield server
