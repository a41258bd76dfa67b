"""`copy --limit-upload KiB/s`: an offsite copy that leaves a small office line usable."""

from __future__ import annotations

import random
import time

from odbox_backup.store import TokenBucket, limit_uploads
from tests.backup.conftest import moto_for
from tests.backup.helpers import backup_ok, backup_run, open_repo
from tests.odoo_data import store_file


class FakeClock:
    """Simulated time: `sleep` moves it on, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Counting(TokenBucket):
    """A bucket that notes (simulated time, bytes) of every take, once it returns."""

    def __init__(self, rate: float, clock: FakeClock) -> None:
        super().__init__(rate, clock=clock, sleep=clock.sleep)
        self.taken: list[tuple[float, int]] = []

    def take(self, n: int) -> None:
        super().take(n)
        self.taken.append((self.clock(), n))


def _worst_second(taken: list[tuple[float, int]]) -> int:
    """The most bytes sent in any one simulated second (windows starting at each take)."""
    worst = 0
    for i, (start, _) in enumerate(taken):
        worst = max(worst, sum(n for t, n in taken[i:] if t < start + 1.0))
    return worst


def test_the_token_bucket_holds_every_simulated_second_to_the_rate_and_one_burst():
    clock = FakeClock()
    rate = 100 << 10
    bucket = Counting(rate, clock)
    start = clock()
    rng = random.Random(1)
    total = 0
    for _ in range(400):
        n = rng.choice([1, 4096, 16 << 10, 64 << 10])
        bucket.take(n)
        total += n
    elapsed = clock() - start
    assert total / elapsed <= rate * 1.01 + bucket.burst / elapsed
    assert elapsed >= (total - bucket.burst) / rate - 1e-6
    # after the first burst, no second carries more than the rate and one piece
    assert _worst_second([t for t in bucket.taken if t[0] > start + 1]) <= rate + (64 << 10)
    assert _worst_second(bucket.taken) <= rate + bucket.burst + (64 << 10)


def test_an_idle_bucket_refills_only_up_to_its_burst():
    clock = FakeClock()
    bucket = Counting(1000, clock)
    clock.now += 3600  # an hour without uploads does not buy an hour at full speed
    bucket.take(int(bucket.burst))
    before = clock()
    bucket.take(1000)
    assert clock() - before == 1.0


def test_a_limited_put_sends_its_body_once_at_the_rate_on_both_backends(store):
    clock = FakeClock()
    bucket = Counting(256 << 10, clock)
    limit_uploads(store, 256)
    store.limit = bucket  # the same bucket, counting, on a simulated clock
    data = random.Random(2).randbytes(3 << 20)
    start = clock()
    store.put("objects/ab/limited", data)
    assert store.get("objects/ab/limited") == data
    # read once, as it is sent (botocore was given the checksum, so it did not read it first)
    assert sum(n for _, n in bucket.taken) == len(data)
    assert clock() - start >= (len(data) - bucket.burst) / bucket.rate - 1e-6
    assert _worst_second([t for t in bucket.taken if t[0] > start + 1]) <= bucket.rate + (64 << 10)


def test_copy_with_limit_upload_takes_at_least_the_time_the_limit_sets(
    odoo, backend, env, request, tmp_path
):
    """The one real-time check: a lower bound only (sleep never returns early)."""
    rng = random.Random(3)
    for _ in range(2):
        store_file(odoo[2], rng.randbytes(1_200_000))
    local = str(tmp_path / "local")
    backup_ok(env, "init", "--repo", local)
    backup_run(env, local, odoo)
    backup_ok(env, "init", "--repo", backend)
    kib = 1024
    started = time.monotonic()
    backup_ok(env, "copy", "--repo", local, "latest", "--to", backend, "--limit-upload", str(kib))
    elapsed = time.monotonic() - started
    store = open_repo(backend, moto_for(backend, request)).store
    sent = sum(size for _, size in store.sizes(""))
    assert sent > 2_400_000
    assert elapsed >= (sent - kib * 1024) / (kib * 1024)
