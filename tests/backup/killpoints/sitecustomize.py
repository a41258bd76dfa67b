"""Kill points for tests: SIGKILL an odbox-backup process group at a chosen step, not a time.

Test-only: Python imports `sitecustomize` at start-up from the first folder of sys.path that
has one, so a test puts this folder on the child's PYTHONPATH (`killpoints.env`) and the
child counts, or dies at, the calls of its store and its dump reader. The product has no
hook of its own for this.

A step is `OP:WHAT`, counted per process:

- `get:K`, `put:K`, `delete:K`: a call of the store's method (local folder or S3) for a key
  whose first part is K (`config.json`, `locks`, `objects`, `packs`, `index`, `snapshots`);
- `rename:K`: a local store's rename of a written temp file onto its key under K (the
  temp file is whole and synced when sync was asked for, the key not there yet);
- `dump:read`: a read of pg_dump's output by the chunker (the dump read loop);
- `change:repository`: a `put` or `delete` of any key but a lock's (what prune changes).

ODBOX_TEST_KILL_AT=`OP:WHAT:N:before|after` kills the process group (odbox-backup and its
pg_dump, as systemd kills a service's cgroup) just before or just after the Nth such call;
ODBOX_TEST_PAUSE_AT=`OP:WHAT:N:before|after:FILE[,…]` pauses there instead: it creates
FILE.paused and waits until FILE exists (the test lets it go on when it has done what it
needed done meanwhile; after 300 s the step dies, so a test that forgets fails).
ODBOX_TEST_COUNT_TO=FILE writes, at exit, how many calls of each step the process made
(JSON), so a test can choose N from a run that was let finish.
"""

from __future__ import annotations

import atexit
import collections
import functools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

KILL_AT = "ODBOX_TEST_KILL_AT"
PAUSE_AT = "ODBOX_TEST_PAUSE_AT"
COUNT_TO = "ODBOX_TEST_COUNT_TO"

_counts: collections.Counter[str] = collections.Counter()
_guard = threading.Lock()
_target: tuple[str, int, str] | None = None
_pauses: dict[tuple[str, int, str], str] = {}


def _die() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _pause(release: str) -> None:
    Path(f"{release}.paused").touch()
    deadline = time.monotonic() + 300
    while not Path(release).exists():
        if time.monotonic() > deadline:
            _die()
        time.sleep(0.01)


def _step(steps: tuple[str, ...], call: Any) -> Any:
    """Count the call as each of `steps`, dying (or pausing) before or after it when it is
    the chosen one of one of them."""
    chosen = False
    pauses: dict[str, str] = {}
    with _guard:
        for step in steps:
            _counts[step] += 1
            if _target is not None and _target[:2] == (step, _counts[step]):
                chosen = True
            for when in ("before", "after"):
                if (step, _counts[step], when) in _pauses:
                    pauses[when] = _pauses[step, _counts[step], when]
    if chosen and _target is not None and _target[2] == "before":
        _die()
    if "before" in pauses:
        _pause(pauses["before"])
    result = call()
    if chosen:
        _die()
    if "after" in pauses:
        _pause(pauses["after"])
    return result


def _store_method(cls: type, op: str) -> None:
    original = getattr(cls, op)

    @functools.wraps(original)
    def counted(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        first = key.split("/", 1)[0]
        steps = (f"{op}:{first}",)
        if op != "get" and first != "locks":
            steps += ("change:repository",)
        return _step(steps, lambda: original(self, key, *args, **kwargs))

    setattr(cls, op, counted)


class _CountedReader:
    """pg_dump's stdout as the chunker reads it (pyfastcdc prefers readinto)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readinto(self, buffer: Any) -> int:
        return int(_step(("dump:read",), lambda: self._stream.readinto(buffer)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _install() -> None:
    from odbox_backup import backup, dump, store

    for cls in (store.LocalStore, store.S3Store):
        for op in ("get", "put", "delete"):
            _store_method(cls, op)

    replace = Path.replace
    root_of: dict[int, Path] = {}

    def renamed(self: Path, target: Any) -> Any:
        for root in root_of.values():
            try:
                first = Path(target).relative_to(root).parts[0]
            except ValueError:
                continue
            return _step((f"rename:{first}",), lambda: replace(self, target))
        return replace(self, target)

    local_init = store.LocalStore.__init__

    def remembered(self: Any, root: Path) -> None:
        local_init(self, root)
        root_of[id(self)] = Path(root)

    store.LocalStore.__init__ = remembered  # type: ignore[method-assign]
    Path.replace = renamed  # type: ignore[method-assign]

    store_dump = backup.store_dump

    @functools.wraps(store_dump)
    def counted_dump(repo: Any, stream: Any, *args: Any, **kwargs: Any) -> Any:
        return store_dump(repo, _CountedReader(stream), *args, **kwargs)

    # dump.py's own name is what `run` calls; backup's is what import and k8s-migrate import
    dump.store_dump = backup.store_dump = counted_dump


def _write_counts(path: str) -> None:
    Path(path).write_text(json.dumps(dict(_counts)))


if os.environ.get(KILL_AT) or os.environ.get(COUNT_TO) or os.environ.get(PAUSE_AT):
    spec = os.environ.get(KILL_AT)
    if spec:
        op, what, number, when = spec.split(":")
        assert when in ("before", "after"), spec
        _target = (f"{op}:{what}", int(number), when)
    for pause in filter(None, os.environ.get(PAUSE_AT, "").split(",")):
        op, what, number, when, release = pause.split(":", 4)
        assert when in ("before", "after"), pause
        _pauses[f"{op}:{what}", int(number), when] = release
    _install()
    if os.environ.get(COUNT_TO):
        atexit.register(_write_counts, os.environ[COUNT_TO])
