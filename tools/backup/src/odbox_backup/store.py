"""Where a repository's bytes live: a local folder or an S3 prefix, behind one small interface.

Keys are `/`-separated paths relative to the repository root (FORMAT.md).
Every `put` is atomic: a reader sees the whole value or nothing. Values are
small (at most one chunk, a few MiB, or a manifest), so they travel as bytes.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from odbox_common.errors import ToolError
from odbox_common.files import AtomicFile, fsync_dir, sync_filesystem

TMP_MARK = ".tmp-"
PIECE = 64 << 10  # what a limited upload sends between two looks at its token bucket


class TokenBucket:
    """`--limit-upload`: at most `rate` bytes a second on average, and at most `burst` at
    once. `take(n)` returns once `n` more bytes may go: the bucket refills at `rate` up to
    `burst`, and a take it cannot cover waits for the difference (so one larger than the
    burst goes at once and the bytes after it wait). The clock and the sleep are injectable:
    the tests count bytes per simulated second, not wall time."""

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
        if rate <= 0:
            raise ValueError("an upload limit is more than 0 bytes a second")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate, PIECE))
        self.clock, self.sleep = clock, sleep
        self.tokens = self.burst
        self.last = clock()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:  # the dump's and the filestore's threads upload at once
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            if self.tokens < 0:
                self.sleep(-self.tokens / self.rate)  # the refill after it pays the debt


Body = bytes | bytearray | memoryview  # what `put` writes: a sealed object may be a view


class _Limited(io.BytesIO):
    """An upload body whose every read takes its bytes from a token bucket: http.client
    reads it a block at a time as it sends, so the line sees the limit, not a burst per PUT."""

    def __init__(self, data: bytes | bytearray, bucket: TokenBucket) -> None:
        super().__init__(data)
        self.bucket = bucket

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(PIECE if size is None or size < 0 else min(size, PIECE))
        if piece:
            self.bucket.take(len(piece))
        return piece


class StoreError(ToolError):
    """The repository's storage failed: the message says where and why."""


class NotFound(StoreError):
    """No value under that key."""


class Exists(StoreError):
    """A create-only write found a value under that key (S3, append-only layout)."""


class Store(Protocol):
    url: str

    def get(self, key: str) -> bytes: ...

    def put(self, key: str, data: Body, *, sync: bool = True, replace: bool = False) -> None: ...

    def flush(self) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def tags(self, prefix: str) -> Iterator[tuple[str, str]]: ...

    def delete(self, key: str) -> None: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad repository key {key!r}")
    return key


class LocalStore:
    """A folder: temp file in the final folder, fsync, rename, fsync the folder. Files are
    0600 and folders 0700: an unencrypted repository holds the database in clear.

    `put(..., sync=False)` skips both fsyncs (still temp file and rename, so a killed
    process leaves no half-written value); `flush()` then makes every such write durable
    with one syncfs. Objects are written so, and the manifest after a flush.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self.limit: TokenBucket | None = None  # copy --limit-upload

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(f"{self.url}: {key} is missing") from e
        except OSError as e:
            raise StoreError(f"cannot read {self._path(key)}: {e.strerror}") from e

    def put(self, key: str, data: Body, *, sync: bool = True, replace: bool = False) -> None:
        """Write `key` (a local write always replaces: a rename over the old value)."""
        path = self._path(key)
        file = None
        try:
            self._make_folder(path.parent)
            file = AtomicFile(path, 0o600, "{name}" + TMP_MARK + "{token}")
            view = memoryview(data)
            step = PIECE if self.limit is not None else max(len(view), 1)
            for at in range(0, len(view), step):
                if self.limit is not None:
                    self.limit.take(min(len(view) - at, PIECE))
                file.write(view[at : at + step])
            file.commit(sync=sync)
        except OSError as e:
            if file is not None:
                file.abort()
            hint = "; the repository's disk is full" if e.errno == errno.ENOSPC else ""
            raise StoreError(f"cannot write {path}: {e.strerror}{hint}") from e

    def flush(self) -> None:
        try:
            sync_filesystem(self.root)
        except OSError as e:
            hint = "; the repository's disk is full" if e.errno == errno.ENOSPC else ""
            raise StoreError(f"cannot flush {self.root} to disk: {e.strerror}{hint}") from e

    def mtimes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, modification time in ns) of every value under `prefix`, sorted by key."""
        return self._walk(prefix, with_mtime=True)

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every value under `prefix`, sorted by key."""
        return self._walk(prefix, with_mtime=False, with_size=True)

    def tags(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, its size and modification time) under `prefix`: a tag that changes when the
        value is written again (list's cache compares it)."""
        sizes = dict(self.sizes(prefix))
        for key, mtime in self.mtimes(prefix):
            if key in sizes:
                yield key, f"{sizes[key]}-{mtime}"

    def _make_folder(self, folder: Path) -> None:
        if folder.is_dir():
            return
        self._make_folder(folder.parent)
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            fsync_dir(folder.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        for key, _ in self._walk(prefix, with_mtime=False):
            yield key

    def _walk(
        self, prefix: str, *, with_mtime: bool, with_size: bool = False
    ) -> Iterator[tuple[str, int]]:
        """(key, mtime ns, or size with `with_size`, or 0) under `prefix`, sorted; plain
        strings and scandir, since a repository holds an object per filestore file (pathlib
        costs seconds there)."""
        base = f"{self.root}/{prefix}" if prefix else str(self.root)
        start = len(str(self.root)) + 1
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry.path[start:], with_mtime=with_mtime,
                                      with_size=with_size)  # fmt: skip
            elif TMP_MARK not in entry.name and entry.is_file(follow_symlinks=False):
                try:
                    if with_mtime or with_size:
                        st = entry.stat(follow_symlinks=False)
                        value = st.st_mtime_ns if with_mtime else st.st_size
                    else:
                        value = 0
                except FileNotFoundError:
                    continue
                yield entry.path[start:].replace(os.sep, "/"), value

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"cannot delete {self._path(key)}: {e.strerror}") from e

    def temp_files(self) -> Iterator[Path]:
        """Leftovers of writes that were killed (FORMAT.md, "Atomic writes")."""
        for folder, _, files in os.walk(self.root):
            for name in files:
                if TMP_MARK in name:
                    yield Path(folder, name)


class S3Store:
    """An S3 prefix; boto3 takes its settings from the standard AWS_* variables.

    `create_only` (how odbox-backup opens every S3 repository): every PUT outside `locks/`
    carries `If-None-Match: *`, so it never overwrites (S3 answers 412, raised as `Exists`)
    unless the caller says `replace` (repair, the admin's). The layout needs no overwrite
    but of locks (README, "Append-only offsite"), so a bucket policy that refuses a PUT
    without it, and credentials without DeleteObject outside `locks/`, let the box add and
    never destroy."""

    def __init__(
        self, bucket: str, prefix: str, client: Any = None, *, create_only: bool = False
    ) -> None:
        self.create_only = create_only
        self.limit: TokenBucket | None = None  # copy --limit-upload
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, e: Exception) -> StoreError:
        return StoreError(f"cannot {action} {self.url}/{key}: {describe_aws(e)}")

    def get(self, key: str) -> bytes:
        full = self._key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            return bytes(body.read())
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404"):
                raise NotFound(f"{self.url}: {key} is missing") from e
            raise self._fail("read", key, e) from e

    def put(self, key: str, data: Body, *, sync: bool = True, replace: bool = False) -> None:
        full = self._key(key)
        conditional = self.create_only and not replace and not key.startswith("locks/")
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        if isinstance(data, memoryview):
            data = data.tobytes()  # botocore takes bytes, bytearray or a file, not a view
        body: Any = data
        if self.limit is not None:
            # A body that reads itself out slowly; its checksum given, so botocore does not
            # read it all first to compute one (that read would spend the tokens for nothing).
            body = _Limited(data, self.limit)
            extra["ChecksumCRC32"] = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **extra)
        except Exception as e:
            if _code(e) in ("PreconditionFailed", "412"):
                raise Exists(f"{self.url}/{key} exists and is not overwritten") from e
            raise self._fail("write", key, e) from e

    def flush(self) -> None:
        """An S3 PUT is durable when it returns."""

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except Exception as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("look for", key, e) from e
        return True

    def _listing(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, the listing's item: Size, ETag…) of every object under `prefix`."""
        full = self._key(prefix) if prefix else self.prefix
        if full:
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield str(item["Key"])[strip:], item
        except Exception as e:
            raise self._fail("list", prefix or "", e) from e

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        for key, item in self._listing(prefix):
            yield key, int(item["Size"])

    def tags(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(key, its ETag and size) under `prefix`, from the listing: a tag that changes when
        the object is written again (list's cache compares it; no GET)."""
        for key, item in self._listing(prefix):
            yield key, f"{item['ETag']}-{item['Size']}"

    def list(self, prefix: str) -> Iterator[str]:
        for key, _ in self.sizes(prefix):
            yield key

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except Exception as e:
            raise self._fail("delete", key, e) from e


def limit_uploads(store: Store, kib_per_second: int) -> TokenBucket:
    """Hold what `store` is sent to `kib_per_second` KiB a second (1 s of it at once)."""
    bucket = TokenBucket(kib_per_second * 1024)
    if isinstance(store, LocalStore | S3Store):
        store.limit = bucket
    if isinstance(store, S3Store):
        # Over plain http botocore reads a body whole to sign its SHA-256 before sending it,
        # which would spend the tokens before a byte went. The body's CRC32 goes in a header
        # (S3 checks it), as botocore itself leaves the payload unsigned over https.
        config = store.client.meta.config
        config.s3 = {**(config.s3 or {}), "payload_signing_enabled": False}
    return bucket


def refuse_unless_deletable(store: Store, command: str) -> None:
    """Fail before anything is changed when `store` may not be deleted from: an append-only
    S3 repository, whose prune runs on the admin's machine. S3 answers a DELETE of a key
    that does not exist with 204 where deleting is allowed, and 403 where it is not, so the
    probe changes nothing either way."""
    if not isinstance(store, S3Store):
        return
    probe = "snapshots/.odbox-delete-probe"
    try:
        store.client.delete_object(Bucket=store.bucket, Key=store._key(probe))
    except Exception as e:
        if _code(e) in ("AccessDenied", "403"):
            raise StoreError(
                f"{command} deletes, and these credentials may not delete in {store.url} (an "
                "append-only repository): run it from the admin's machine with the admin's "
                "credentials; nothing was changed"
            ) from e
        raise store._fail("delete", probe, e) from e


def _code(e: Exception) -> str:
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_aws(e: Exception) -> str:
    """One line for a boto3/botocore error."""
    code = _code(e)
    if code == "NoSuchBucket":
        return "the bucket does not exist"
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access denied ({code}): check the AWS credentials and the bucket policy"
    name = type(e).__name__
    if name == "NoCredentialsError":
        return "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return f"cannot reach S3 ({str(e).splitlines()[0]})"
    return str(e).splitlines()[0] if str(e) else name


def open_store(url: str) -> Store:
    """`s3://bucket/prefix` or a local folder."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            raise ToolError(f"{url} names no bucket: use s3://bucket/prefix")
        return S3Store(bucket, prefix, create_only=True)
    return LocalStore(Path(url))
