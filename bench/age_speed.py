"""Sealing a repository's packs: odbox_common.age_stream against pyrage and the real `age`.

Issue 17. odbox-backup encrypts every pack and chunk it stores to the repository's age
recipients (a full backup of the 1 GB + 1 GB bench dataset seals about 1.3 GB). Three
ways to encrypt the same 8 MiB of random bytes (a full pack) to one X25519 recipient,
each `--runs` times, round robin:

- pyrage: `pyrage.encrypt_io` into a buffer, as odbox-backup did before age_stream;
- age_stream: `Encryptor.encrypt` (cryptography's ChaCha20-Poly1305, OpenSSL's code);
- age: the real `age -r` (the Go reference), reading the pack on stdin: a new process
  each time, so its start is counted in (it is the baseline for correctness, not speed).

Printed: the median MiB/s of each, and whether another Python thread goes on while one
encrypts: a pure-Python loop is timed alone and then with a thread encrypting all the
time; "loop slowdown" is the ratio (1.0: the GIL is released; odbox-backup cuts, hashes
and compresses the next chunks on other threads meanwhile).

    uv run --locked python bench/age_speed.py
    uv run --locked python bench/age_speed.py --runs 5 --mib 1
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable

import pyrage

from odbox_common.age_stream import Encryptor, x25519_public_key


def _loop() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - start


def _slowdown(encrypt: Callable[[], object]) -> float:
    alone = statistics.median(_loop() for _ in range(5))
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            encrypt()

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        beside = statistics.median(_loop() for _ in range(5))
    finally:
        stop.set()
        thread.join()
    return beside / alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="encryptions of each (20)")
    parser.add_argument("--mib", type=int, default=8, help="size encrypted, MiB (8: a pack)")
    args = parser.parse_args()

    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    data = os.urandom(args.mib << 20)
    ours = Encryptor([x25519_public_key(recipient)])

    def with_pyrage() -> bytes:
        sealed = io.BytesIO()
        pyrage.encrypt_io(io.BytesIO(data), sealed, [identity.to_public()])
        return sealed.getvalue()

    def with_age() -> bytes:
        return subprocess.run(["age", "-r", recipient], input=data, capture_output=True,
                              check=True).stdout  # fmt: skip

    rows: dict[str, tuple[Callable[[], bytes | bytearray], bool]] = {
        "pyrage.encrypt_io": (with_pyrage, True),
        "age_stream.Encryptor": (lambda: ours.encrypt(data), True),
        "age -r (the Go reference, a process each)": (with_age, False),
    }
    for encrypt, _ in rows.values():  # each output must be one the others read
        assert pyrage.decrypt(bytes(encrypt()), [identity]) == data
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.runs):
        for name, (encrypt, _) in rows.items():
            start = time.perf_counter()
            encrypt()
            samples[name].append(time.perf_counter() - start)

    print(f"age encryption of {args.mib} MiB to one X25519 recipient, {args.runs} runs each, "
          f"round robin ({os.cpu_count()} CPUs)\n")  # fmt: skip
    base = statistics.median(samples["pyrage.encrypt_io"])
    print(f"{'encryption':<44} {'median':>9} {'MiB/s':>8} {'vs pyrage':>10} {'loop slowdown':>14}")
    for name, (encrypt, in_process) in rows.items():
        median = statistics.median(samples[name])
        slowdown = f"{_slowdown(encrypt):.2f}x" if in_process else "-"
        print(f"{name:<44} {median * 1000:>7.1f}ms {args.mib / median:>8.0f} "
              f"{median / base:>9.2f}x {slowdown:>14}")  # fmt: skip


if __name__ == "__main__":
    main()
