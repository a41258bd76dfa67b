"""odbox_common.memory: a stream of megabyte buffers, allocated and freed in turn as a backup
does (a chunk, its frame, its age file), takes fresh pages from the kernel for every buffer
under glibc's default thresholds, and reuses the same pages once they are raised."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"),
    reason="the thresholds are glibc's; elsewhere keep_freed_memory does nothing",
)

STREAM = """
import os, resource, sys
from odbox_common.memory import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
frame = os.urandom(1 << 20)
before = faults()
for i in range(200):  # as a chunk's sealing goes: its age file made in a buffer, then copied
    sealed = bytearray(len(frame) + 4096 + i)  # every chunk a little larger (CDC sizes vary)
    sealed[: len(frame)] = frame
    stored = bytes(sealed)
    del sealed, stored
print(faults() - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", STREAM, mode], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return int(done.stdout)


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    pages = 2 * 200 * (1 << 20) // 4096  # two buffers of 1 MiB each time: 102,400 pages
    assert page_faults("default") > pages // 2  # glibc's defaults: fresh pages nearly every time
    assert page_faults("kept") < pages // 50  # kept: the same pages, faulted in once
