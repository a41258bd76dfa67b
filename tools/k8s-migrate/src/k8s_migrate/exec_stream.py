"""An exec's stdout as a stream (`ExecStream`), and what its stderr says went wrong.

The client's own `stream()` helper decodes stdout as UTF-8 and keeps a copy of
everything it received (`capture_all`); `Cluster.exec` hands the raw WebSocket to this
class instead, which reads bytes as they come and keeps nothing once read. The exit
status comes from the channel-3 Status the API server sends at the end; a connection
that ends without one is a cut stream, never a success.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import socket
import time
from typing import Any

from k8s_migrate.kube import CommandFailed, StreamCut

STDERR_KEPT = 16 << 10  # the start and the end of a command's stderr, for the error line
# The line of stderr that says what went wrong: GNU tar and pg_dump end with a summary
# (`tar: Exiting with failure status due to previous errors`, `pg_dump: detail: …`).
ERROR_LINE = re.compile(
    r"\b(error|fatal|cannot|failed|denied|no such|not found|permission)\b", re.IGNORECASE
)
SUMMARY_LINE = re.compile(r"Exiting with failure status|^\S+: (detail|hint): ")
DETAIL_LINE = re.compile(r"^\S+: (detail|hint): ")
OURS = "k8s-migrate-"  # our own lines on stderr (the dump's byte count: database.py)


class ExecStream(io.RawIOBase):
    """An exec's stdout as a binary stream; stderr kept (its end) for the error line.

    `finish()` after the last read checks the exit status. A connection that drops, a
    stream that ends without the API server's Status, or `idle_timeout` seconds without
    a byte raise StreamCut: a short stream is never taken for a whole one.
    """

    def __init__(self, ws: Any, what: str, idle_timeout: float) -> None:
        super().__init__()
        self.ws = ws
        self.what = what
        self.idle_timeout = idle_timeout
        self.received = 0
        self._pending = b""
        self._offset = 0
        self._stderr_head = bytearray()
        self._stderr = bytearray()
        self._ended = False
        self._cut: Exception | None = None  # the connection dropped: after what is buffered

    def readable(self) -> bool:
        return True

    @property
    def stderr(self) -> str:
        """Its first STDERR_KEPT bytes, and its last (with `…` between when some were dropped)."""
        head = self._stderr_head.decode(errors="replace")
        if not self._stderr:
            return head
        return f"{head}\n…\n{self._stderr.decode(errors='replace')}"

    def _keep_stderr(self, data: bytes) -> None:
        if not data:
            return
        room = STDERR_KEPT - len(self._stderr_head)
        if room > 0:
            self._stderr_head += data[:room]
            data = data[room:]
        self._stderr += data
        del self._stderr[:-STDERR_KEPT]

    def _frames(self) -> None:
        """Read frames until stdout has bytes or the stream ended.

        Reading an empty channel makes the client read one more frame, which raises when
        the connection is gone; a stdout frame that came in before it is still buffered,
        so it is taken before the cut is reported: the byte count of the error is exact."""
        from websocket import WebSocketException

        if self._cut is not None:
            why = str(self._cut) or type(self._cut).__name__
            raise StreamCut(
                f"{self.what}: the connection dropped after {self.received} bytes ({why})"
            ) from self._cut
        idle_since = time.monotonic()
        while not self._pending and not self._ended:
            try:
                if not self.ws.is_open():
                    self._pending = self.ws.read_stdout(timeout=0)
                    self._keep_stderr(self.ws.read_stderr(timeout=0))
                    self._ended = True
                    break
                self.ws.update(timeout=1)
                if err := self.ws.read_stderr(timeout=0):
                    self._keep_stderr(err)
                    idle_since = time.monotonic()  # alive: a heartbeat, or a long warning
                self._pending = self.ws.read_stdout(timeout=0)
            except (WebSocketException, OSError) as e:
                self._cut = e
                with contextlib.suppress(WebSocketException, OSError):
                    self._pending = self.ws.read_stdout(timeout=0)  # buffered: no read
                if not self._pending:
                    return self._frames()
                break
            if not self._pending and time.monotonic() - idle_since > self.idle_timeout:
                raise StreamCut(
                    f"{self.what}: no data for {self.idle_timeout:.0f} s "
                    f"after {self.received} bytes"
                )
        self._offset = 0

    def readinto(self, buffer: Any) -> int:
        if self._offset >= len(self._pending):
            self._pending = b""
            self._frames()
            if not self._pending:
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending) - self._offset)
        view[:n] = self._pending[self._offset : self._offset + n]
        self._offset += n
        self.received += n
        return n

    def write_stdin(self, data: bytes) -> None:
        from websocket import WebSocketException

        try:
            self.ws.write_stdin(data)
        except (WebSocketException, OSError) as e:
            raise StreamCut(f"{self.what}: the connection dropped while sending ({e})") from e

    def close_stdin(self) -> None:
        from kubernetes.stream.ws_client import STDIN_CHANNEL

        self.ws.close_channel(STDIN_CHANNEL)  # the v5 protocol only; v4 has no way

    def finish(self) -> None:
        """After stdout's end: the exit status; a failure is CommandFailed, no status StreamCut."""
        while self.readinto(bytearray(1 << 16)):
            pass  # output nobody read: the status comes after it
        raw = self.ws.read_channel(3)
        if not raw:
            raise StreamCut(
                f"{self.what}: the stream ended after {self.received} bytes "
                "without the command's exit status"
            )
        try:
            status = json.loads(raw)
        except ValueError as e:
            raise StreamCut(f"{self.what}: an unreadable exit status {raw[:80]!r}") from e
        if status.get("status") == "Success":
            return
        causes = (status.get("details") or {}).get("causes") or []
        code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
        said = f": {why}" if (why := stderr_reason(self.stderr)) else ""
        if code is not None:
            number = int(code) if str(code).isdigit() else None
            raise CommandFailed(f"{self.what} failed with exit status {code}{said}", number)
        raise CommandFailed(f"{self.what} failed: {status.get('message') or status}{said}")

    def close(self) -> None:
        if not self.closed:
            # Closing a connection that may be half gone: whatever it raises, it is closed.
            # The socket is shut down first: websocket-client's close() sends a close frame
            # under the lock a blocked sender (the tar file list) holds, and would wait for
            # ever; with the socket shut, both return at once.
            raw = getattr(getattr(self.ws, "sock", None), "sock", None)
            with contextlib.suppress(Exception):
                if raw is not None:
                    raw.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                self.ws.close()
                if self.ws.sock is not None:
                    self.ws.sock.shutdown()
        super().close()


def stderr_reason(text: str) -> str:
    """What a command's stderr says went wrong, in one line: its first error line with the
    detail and hint lines that follow it (pg_dump's), else its last three lines (not the
    scan's heartbeat dots)."""
    said = [line.strip() for line in text.splitlines()
            if line.strip() not in ("", ".") and not line.startswith(OURS)]  # fmt: skip
    for i, line in enumerate(said):
        if ERROR_LINE.search(line) and not SUMMARY_LINE.search(line):
            details = itertools.takewhile(DETAIL_LINE.search, said[i + 1 : i + 3])
            return "; ".join([line, *details])
    return " / ".join(said[-3:])
