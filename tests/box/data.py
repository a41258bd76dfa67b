"""Data made by Odoo itself, over XML-RPC: partners with images, attachments from 10 B to
12 MB, messages with attachments, and a client that keeps committing attachments."""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import threading
import zlib
from dataclasses import dataclass, field

from tests.box.harness import Box

SIZES = [10, 1_000, 100_000, 1_000_000, 12 * 1024 * 1024]
PREFIX = "box-"  # the names of what these tests make
WRITER = "writer-"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour (Odoo checks and resizes partner images)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 (Odoo's checksum)


def make_shop(box: Box, seed: int = 16) -> dict[str, str]:
    """Partners with images, attachments of every size, messages with attachments; the
    attachments' names and their SHA-1."""
    rng = random.Random(seed)
    made: dict[str, str] = {}
    partners = []
    for n in range(3):
        image = b64(png(64 + n, 48, (n * 40 % 256, 90, 200)))
        values = {"name": f"{PREFIX}partner {n}", "email": f"p{n}@example.com",
                  "image_1920": image}  # fmt: skip
        partners.append(box.rpc("res.partner", "create", values))
    for n, size in enumerate(SIZES):
        content = rng.randbytes(size)
        name = f"{PREFIX}file-{size}"
        attachment = box.rpc("ir.attachment", "create", {
            "name": name, "datas": b64(content), "res_model": "res.partner",
            "res_id": partners[n % len(partners)],
        })  # fmt: skip
        made[name] = sha1(content)
        if n < 3:  # a message that carries it
            box.rpc("res.partner", "message_post", [partners[n]], body=f"see {name}",
                    attachment_ids=[attachment], message_type="comment")  # fmt: skip
    for n, partner in enumerate(partners):
        content = f"note {n} ".encode() * 50
        name = f"{PREFIX}message-{n}.txt"
        box.rpc("res.partner", "message_post", [partner], body=f"with {name}",
                attachments=[(name, content.decode())], message_type="comment")  # fmt: skip
        made[name] = sha1(content)
    return made


def served(box: Box, prefix: str = "") -> dict[str, str]:
    """Every attachment whose name starts with `prefix`, as Odoo serves it: name -> SHA-1 of
    its content, which must equal the checksum Odoo stored for it."""
    ids = box.rpc("ir.attachment", "search", [["name", "=like", f"{prefix}%"],
                                              ["type", "=", "binary"]])  # fmt: skip
    out: dict[str, str] = {}
    for attachment_id in ids:
        [record] = box.rpc("ir.attachment", "read", [attachment_id],
                           ["name", "datas", "checksum", "file_size"])  # fmt: skip
        content = base64.b64decode(record["datas"] or "")
        assert len(content) == record["file_size"], (record["name"], len(content))
        assert sha1(content) == record["checksum"], record["name"]
        out[record["name"]] = record["checksum"]
    return out


@dataclass
class Writer:
    """A client that commits one attachment after another until stopped; what Odoo acknowledged."""

    box: Box
    committed: list[tuple[str, str]] = field(default_factory=list)  # (name, sha1) in order
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _more: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                n += 1
                name = f"{WRITER}{n:05d}"
                content = f"{name} ".encode() * (n * 37 % 3000 + 1)
                self.box.rpc("ir.attachment", "create", {"name": name, "datas": b64(content)})
                with self._more:
                    self.committed.append((name, sha1(content)))
                    self._more.notify_all()
        except BaseException as e:
            self.error = e
            with self._more:
                self._more.notify_all()

    def wait_for(self, count: int, timeout: float = 600) -> int:
        """Until `count` attachments are committed; how many are."""
        with self._more:
            ok = self._more.wait_for(
                lambda: len(self.committed) >= count or self.error is not None, timeout
            )
        assert self.error is None, self.error
        assert ok, f"the writer committed {len(self.committed)} of {count}"
        return len(self.committed)

    def stop(self) -> list[tuple[str, str]]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=600)
        assert self.error is None, self.error
        return list(self.committed)
