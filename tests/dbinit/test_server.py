"""`dbinit status` and `dbinit wait` on real servers: down, starting up, ready, started late."""

from __future__ import annotations

import json
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import new_postgres_cluster
from tests.dbinit.helpers import dbinit, one_error_line


def dsn_for(socket_dir: Path, port: int = 5432) -> str:
    return f"host={socket_dir} port={port} user=postgres dbname=postgres"


def test_status_of_a_ready_server(postgres):
    result = dbinit(postgres, "status")
    assert result.returncode == 0
    assert result.stdout.rstrip().endswith(": ready")
    document = json.loads(dbinit(postgres, "status", "--json").stdout)
    assert document["state"] == "ready"
    assert document["server"] == f"{postgres.socket_dir}/.s.PGSQL.{postgres.port}"


def test_status_of_a_server_that_is_down(tmp_path):
    result = dbinit(None, "status", dsn=dsn_for(tmp_path))
    assert result.returncode == 1
    assert ": down (" in result.stdout and "No such file or directory" in result.stdout


@pytest.fixture
def starting_up_server() -> Iterator[Path]:
    """A socket that answers like a PostgreSQL still starting up (SQLSTATE 57P03), on the wire."""
    folder = Path(tempfile.mkdtemp(prefix="odbox-fake-pg-"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(folder / ".s.PGSQL.5432"))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                (length,) = struct.unpack("!i", conn.recv(4))
                conn.recv(length - 4)
                fields = b"".join(
                    code + text + b"\0"
                    for code, text in ((b"S", b"FATAL"), (b"V", b"FATAL"), (b"C", b"57P03"),
                                       (b"M", b"the database system is starting up"))
                ) + b"\0"  # fmt: skip
                conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield folder
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_status_of_a_server_that_is_starting_up(starting_up_server):
    result = dbinit(None, "status", dsn=dsn_for(starting_up_server))
    assert result.returncode == 1
    assert ": running (the database system is starting up)" in result.stdout


def test_wait_returns_as_soon_as_a_late_server_is_ready():
    with new_postgres_cluster() as stopped:
        socket_dir = stopped.cluster.socket_dir
        starter = threading.Timer(3, stopped.start)
        starter.start()
        began = time.monotonic()
        result = dbinit(None, "wait", "--timeout", "60", dsn=dsn_for(socket_dir))
        waited = time.monotonic() - began
        starter.join()
        assert result.returncode == 0, result.stderr
        assert "ready after" in result.stdout
        assert 3 <= waited < 15


def test_wait_gives_up_after_the_timeout_with_one_clear_line(tmp_path):
    began = time.monotonic()
    result = dbinit(None, "wait", "--timeout", "1.5", dsn=dsn_for(tmp_path))
    assert 1.5 <= time.monotonic() - began < 10
    assert result.returncode == 1
    line = one_error_line(result)
    assert "was not ready within 1.5 s; it is down" in line


def test_wait_on_a_server_stuck_starting_up_says_so(starting_up_server):
    result = dbinit(None, "wait", "--timeout", "0.5", dsn=dsn_for(starting_up_server))
    assert result.returncode == 1
    assert "it is running (the database system is starting up)" in one_error_line(result)
