"""Run k8s-migrate with every file open it makes written down, and its peak memory at exit.

`python audited.py LOG ARGS...` is `k8s-migrate ARGS...` with a `sys.addaudithook` hook
installed first: each `open` audit event (raised by `open()`, `io.open`, `os.open`, so by
`tempfile` and `pathlib` too) appends a line `W|R <path>` to LOG, W when opened for
writing. It is a record, not a sample: an open that lasts a microsecond is in it. At exit,
the last line is `peak <bytes>`: the process's VmHWM, read by the process itself, so no
sampling can miss the high-water mark. What it cannot see: opens made by C code that does
not raise the event (none of k8s-migrate's own dependencies write files that way).
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _writing(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def main() -> None:
    log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not args or isinstance(args[0], int):  # an fd: opened already
            return
        path, mode, flags = (*args, None, None)[:3]
        name = os.fsdecode(path) if isinstance(path, str | bytes) else str(path)
        absolute = os.path.abspath(name)  # noqa: PTH100 (pathlib would open nothing, but recurse)
        os.write(log, f"{'W' if _writing(mode, flags) else 'R'} {absolute}\n".encode())

    def peak() -> None:
        with open("/proc/self/status") as status:
            kib = int(status.read().split("VmHWM:")[1].split()[0])
        os.write(log, f"peak {kib * 1024}\n".encode())

    atexit.register(peak)
    sys.addaudithook(hook)
    from k8s_migrate.cli import run_cli

    sys.exit(run_cli(sys.argv[2:]))


if __name__ == "__main__":
    main()
