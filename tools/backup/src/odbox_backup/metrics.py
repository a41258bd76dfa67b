"""What each `run`, `verify` and `prune` leaves for monitoring: node_exporter textfile metrics
(`--metrics-file`) and the last result of each command in the cache, for `status`.

A command calls `begin` once it has parsed its options and `note` with what it did; the
command line's `run_cli` calls `finish` with the exit code whatever happened (an error, exit
4, Ctrl-C), so a failed run is recorded as surely as a good one. The metrics file holds the
metrics of every command that wrote to it (a run and a prune usually share one): a command
rewrites its own lines and keeps the others', so the time of the last success survives a
failure. No secret goes into either: the repository's URL, times, sizes and counts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbox_common.files import fsync_dir, write_private

PREFIX = "odbox_backup_"
# name, help; every one a gauge with the labels command and repository
METRICS = {
    "last_run_timestamp_seconds": "When the command last finished, whatever its result.",
    "last_success_timestamp_seconds": "When the command last succeeded.",
    "last_failure_timestamp_seconds": "When the command last failed (0: never here).",
    "last_success": "1 when the command's last run succeeded, else 0.",
    "last_exit_code": "The exit status of the command's last run.",
    "last_duration_seconds": "How long the command's last run took.",
    "last_bytes_added": "Bytes the last successful run (or copy) added to the repository.",
    "last_bytes_read": "Bytes the last successful verify read.",
    "last_objects_deleted": "Objects the last successful prune deleted.",
    "snapshots": "Snapshots in the repository after the command's last successful run.",
}
LINE = re.compile(r'odbox_backup_(\w+)\{command="([^"\\]*)",repository="((?:[^"\\]|\\.)*)"\} (\S+)')


@dataclass
class Record:
    command: str
    repository: str
    metrics_file: Path | None
    cache_dir: Path | None
    started: float = field(default_factory=time.monotonic)
    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


_current: Record | None = None


def begin(command: str, repository: str, metrics_file: Path | None,
          cache_dir: Path | None = None) -> None:  # fmt: skip
    """Start recording this command (`finish` writes what it did)."""
    global _current
    if cache_dir is None:
        from odbox_backup.cache import default_dir

        cache_dir = default_dir()
    _current = Record(command, repository, metrics_file, cache_dir)


def note(**values: Any) -> None:
    """What the command did: numbers become metrics, everything goes into the record."""
    if _current is None:
        return
    for key, value in values.items():
        if key in METRICS and isinstance(value, int | float):
            _current.values[key] = float(value)
        _current.details[key] = value


def finish(exit_code: int, error: str | None = None) -> list[str]:
    """Write the metrics file and the cache's record of the command begun; the warnings of
    what could not be written (monitoring must not turn a good backup into a failed one)."""
    global _current
    record, _current = _current, None
    if record is None:
        return []
    now = time.time()
    ok = exit_code == 0
    values = {"last_run_timestamp_seconds": now, "last_exit_code": float(exit_code),
              "last_success": 1.0 if ok else 0.0,
              "last_duration_seconds": round(time.monotonic() - record.started, 3)}  # fmt: skip
    values["last_success_timestamp_seconds" if ok else "last_failure_timestamp_seconds"] = now
    if ok:
        values |= record.values
    warnings = []
    if record.metrics_file is not None:
        try:
            write_metrics(record.metrics_file, record.command, record.repository, values)
        except OSError as e:
            warnings.append(
                f"cannot write the metrics file {record.metrics_file}: {e.strerror or e}"
            )
    if record.cache_dir is not None:
        entry = {"command": record.command, "repository": record.repository, "ok": ok,
                 "exit_code": exit_code, "error": error, "host": socket.gethostname(),
                 "finished": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
                 "seconds": values["last_duration_seconds"], **record.details}  # fmt: skip
        try:
            save_last(record.cache_dir, entry)
        except OSError as e:
            warnings.append(f"cannot keep the result in {record.cache_dir}: {e.strerror or e}")
    return warnings


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def read_metrics(path: Path) -> dict[tuple[str, str, str], float]:
    """(name, command, repository) → value of every line this module wrote into `path`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        match = LINE.fullmatch(line.strip())
        if match and match[1] in METRICS:
            with contextlib.suppress(ValueError):
                repository = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], match[3])
                found[(match[1], match[2], repository)] = float(match[4])
    return found


def write_metrics(path: Path, command: str, repository: str, values: dict[str, float]) -> None:
    """Merge `values` of (command, repository) into the textfile at `path`, atomically (a
    temp file in its folder, fsynced, renamed: node_exporter never reads half a file)."""
    merged = read_metrics(path)
    for name, value in values.items():
        merged[(name, command, repository)] = value
    lines = []
    for name, text in METRICS.items():
        rows = sorted((k, v) for k, v in merged.items() if k[0] == name)
        if not rows:
            continue
        lines += [f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} gauge"]
        lines += [f'{PREFIX}{name}{{command="{cmd}",repository="{_escape(repo)}"}} {_number(v)}'
                  for (_, cmd, repo), v in rows]  # fmt: skip
    _write_atomically(path, ("\n".join(lines) + "\n").encode(), 0o644)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """odbox_common.files.write_private, but of any mode (the textfile is read by node_exporter)."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # whatever the umask: node_exporter reads it as another user
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def last_path(cache_dir: Path, repository: str) -> Path:
    """The cache's record of the last commands on `repository` (named by its URL: a run that
    failed before it could open the repository has no repository ID to go by)."""
    digest = hashlib.sha256(repository.encode()).hexdigest()[:16]
    return cache_dir / f"last-{digest}.json"


def save_last(cache_dir: Path, entry: dict[str, Any]) -> None:
    """Keep `entry` as the last result of its command (the others' kept), 0600."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = last_path(cache_dir, str(entry["repository"]))
    results = load_last(cache_dir, str(entry["repository"]))
    results[str(entry["command"])] = entry
    write_private(path, (json.dumps(results, indent=1, default=str) + "\n").encode())


def load_last(cache_dir: Path, repository: str) -> dict[str, dict[str, Any]]:
    """command → its last result on `repository`, as `finish` kept it ({} when none)."""
    try:
        document = json.loads(last_path(cache_dir, repository).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


@contextlib.contextmanager
def errors_seen() -> Iterator[list[str]]:
    """The error lines the command line prints meanwhile (the last is the command's error,
    for the record `finish` keeps)."""
    from odbox_common import console

    seen: list[str] = []
    printed = console.error

    def error(message: str) -> None:
        seen.append(message)
        printed(message)

    console.error = error  # runner.run prints through the module
    try:
        yield seen
    finally:
        console.error = printed
