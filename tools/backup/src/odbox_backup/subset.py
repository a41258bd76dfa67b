"""`verify --read-data-subset`: which packs and objects to read, so that checks a bucket can
afford (a few percent a day) cover the whole repository over time.

The forms are restic's: `n/t` reads the n-th of t fixed parts (a pack or object alone is in
part `int(ID[:8], 16) % t + 1`), so t runs with n = 1…t read everything once, whatever
was added meanwhile; `N%` (`2.5%` too) and a size (`500M`, `2G`: K, M, G, T are powers of
1024) read that share, or that many stored bytes, of the repository, least recently read
first: each run's reads are kept in the cache (`verified-<digest>.json`), so repeated runs
go round the whole repository, the new packs first (never read).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from odbox_common.errors import UsageError

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
FORM = "N%, a size like 500M, or n/t (restic's --read-data-subset forms)"


@dataclass(frozen=True)
class Subset:
    text: str
    part: tuple[int, int] | None = None  # (n, t)
    share: float | None = None  # 0 < share <= 1
    size: int | None = None

    @classmethod
    def parse(cls, text: str) -> Subset:
        spec = text.strip()
        if m := re.fullmatch(r"(\d+)/(\d+)", spec):
            n, t = int(m[1]), int(m[2])
            if not 1 <= n <= t:
                raise UsageError(f"--read-data-subset {spec}: n/t needs 1 <= n <= t")
            return cls(spec, part=(n, t))
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)%", spec):
            share = float(m[1]) / 100
            if not 0 < share <= 1:
                raise UsageError(f"--read-data-subset {spec}: a share is above 0% and at most 100%")
            return cls(spec, share=share)
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)i?B?", spec, flags=re.IGNORECASE):
            size = int(float(m[1]) * UNITS[m[2].upper()])
            if size <= 0:
                raise UsageError(f"--read-data-subset {spec}: a size is more than 0")
            return cls(spec, size=size)
        raise UsageError(f"--read-data-subset takes {FORM}, not {text!r}")

    def choose(self, holders: dict[str, int], last_read: dict[str, float]) -> set[str]:
        """The keys (packs, objects alone) to read, of `holders` (key → stored size)."""
        if self.part is not None:
            n, t = self.part
            return {k for k in holders if int(k.rsplit("/", 1)[1][:8], 16) % t == n - 1}
        target = self.size if self.size is not None else self.share * sum(holders.values())  # type: ignore[operator]
        shuffle = random.Random()  # noqa: S311 (an order, not a secret)  among keys read at the same time (or never): any order
        order = sorted(holders, key=lambda k: (last_read.get(k, 0.0), shuffle.random()))
        chosen: set[str] = set()
        total = 0
        for key in order:
            if total >= target:
                break
            chosen.add(key)
            total += holders[key]
        return chosen


def record_path(cache_dir: Path, url: str) -> Path:
    return cache_dir / f"verified-{hashlib.sha256(url.encode()).hexdigest()[:16]}.json"


def load_reads(cache_dir: Path, url: str, repository_id: str) -> dict[str, float]:
    """Key → when a verify last read it whole and found it right."""
    try:
        document = json.loads(record_path(cache_dir, url).read_text())
        if document.get("repository") != repository_id:
            return {}
        return {str(k): float(v) for k, v in document["read"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return {}


def save_reads(cache_dir: Path, url: str, repository_id: str, reads: dict[str, float],
               holders: dict[str, int], read_now: set[str]) -> None:  # fmt: skip
    """Keep when each key still in the repository was last read (the cache only saves work)."""
    from odbox_common.files import write_private

    now = time.time()
    kept = {k: v for k, v in reads.items() if k in holders} | dict.fromkeys(read_now, now)
    body = json.dumps({"repository": repository_id, "read": kept}).encode()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(record_path(cache_dir, url), body)
    except OSError:
        pass


class Rotation:
    """One verify's subset: chooses with the cache's record of reads, then records its own."""

    def __init__(self, spec: Subset, cache_dir: Path, url: str, repository_id: str) -> None:
        self.spec, self.cache_dir, self.url, self.repository_id = (
            spec,
            cache_dir,
            url,
            repository_id,
        )
        self.reads = load_reads(cache_dir, url, repository_id)
        self.holders: dict[str, int] = {}

    def __call__(self, holders: dict[str, int]) -> set[str]:
        self.holders = holders
        return self.spec.choose(holders, self.reads)

    def done(self, read_whole: set[str]) -> None:
        """`read_whole`: the keys read and found right."""
        save_reads(self.cache_dir, self.url, self.repository_id, self.reads, self.holders,
                   read_whole)  # fmt: skip
