"""`prune` keeps what restic's `forget` keeps: a hand-checked table, and restic itself as oracle."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess

import pytest

from odbox_backup.prune import KINDS, Policy, apply_policy
from odbox_common.errors import UsageError

UTC = dt.UTC


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# Newest first: G F E D C B A. 2026-01-01 is a Thursday, so ISO week 2026-W01 holds
# A, B (Jan 1) and C (Jan 2); D is Monday of W02, E Monday of W03.
SERIES = {
    "A": _t("2026-01-01T10:00:00"),
    "B": _t("2026-01-01T22:00:00"),
    "C": _t("2026-01-02T09:00:00"),
    "D": _t("2026-01-05T09:00:00"),
    "E": _t("2026-01-12T09:00:00"),
    "F": _t("2026-02-03T09:00:00"),
    "G": _t("2026-03-01T09:00:00"),
}

TABLE = [
    # (policy, kept, why)
    (Policy(last=2), "GF", "the two newest"),
    (Policy(hourly=3), "GFE", "three different hours, then no place left"),
    (Policy(daily=3), "GFE", "three different days"),
    (Policy(daily=10), "GFEDCBA", "B is Jan 1's newest; A is the oldest and places are left"),
    (Policy(weekly=2), "GF", "W09 and W06"),
    (Policy(weekly=5), "GFEDC", "W09 W06 W03 W02 W01 (C is W01's newest)"),
    (Policy(monthly=2), "GF", "March and February"),
    (Policy(monthly=5), "GFEA", "E is January's newest; A is kept as the oldest"),
    (Policy(last=1, monthly=3), "GFE", "G by both; then February and January"),
    (Policy(yearly=1), "G", "2026's newest"),
    (Policy(yearly=3), "GA", "2026's newest, and the oldest while places are left"),
    (Policy(last=1, daily=2, weekly=2), "GF", "G and F fill both the daily and weekly places"),
]


@pytest.mark.parametrize(("policy", "kept", "why"), TABLE, ids=[p.describe() for p, _, _ in TABLE])
def test_policy_table(policy, kept, why):
    decisions = apply_policy(SERIES, policy, zone=UTC)
    assert [d.id for d in decisions] == list("GFEDCBA")  # newest first
    assert "".join(d.id for d in decisions if d.keep) == kept, why


def test_reasons_name_every_bucket_and_the_oldest():
    decisions = {d.id: d for d in apply_policy(SERIES, Policy(last=1, monthly=5), zone=UTC)}
    assert decisions["G"].reasons == ["last", "monthly"]
    assert decisions["A"].reasons == ["oldest monthly"]
    assert decisions["B"].reasons == [] and not decisions["B"].keep


def test_no_policy_is_refused_not_read_as_keep_nothing():
    with pytest.raises(UsageError, match="at least one --keep"):
        apply_policy(SERIES, Policy())


def _series(n: int, seed: int) -> dict[str, dt.datetime]:
    """n snapshots over about 14 months, irregular: bursts on some days, gaps of weeks."""
    rng = random.Random(seed)
    t = _t("2025-09-28T02:00:00")
    times = {}
    for i in range(n):
        t += dt.timedelta(hours=rng.choice([1, 3, 7, 20, 24, 24, 30, 50, 170, 400]),
                          minutes=rng.randrange(60))  # fmt: skip
        times[f"s{i:03d}"] = t
    return times


ORACLE_POLICIES = [
    Policy(last=5),
    Policy(hourly=6),
    Policy(daily=7),
    Policy(weekly=4),
    Policy(monthly=6),
    Policy(yearly=2),
    Policy(daily=7, weekly=4, monthly=12),
    Policy(last=3, daily=5, weekly=8, monthly=3, yearly=1),
    Policy(monthly=40),  # more places than months: the oldest rule decides
    Policy(daily=1000),
]


def _restic_version(restic: str) -> tuple[int, int]:
    out = subprocess.run([restic, "version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"restic (\d+)\.(\d+)", out)
    assert found, out
    return int(found[1]), int(found[2])


@pytest.mark.timeout(600)
def test_restic_forget_keeps_the_same_snapshots(tmp_path):
    """The same dates into a real restic repository (`backup --time`), then
    `forget --dry-run --json` with each policy: the kept times must be ours.

    restic before 0.16 lacks the "keep the oldest while places are left" rule
    (restic PR 4366): against such a restic, our decisions without the reasons
    that rule alone gives are compared.
    """
    restic = shutil.which("restic")
    assert restic, "restic is in .ci/debian-packages.txt: install it with apt-get install restic"
    version = _restic_version(restic)
    times = _series(40, seed=11)
    env = {**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "restic"), "TZ": "UTC",
           "RESTIC_PASSWORD": "test", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    subprocess.run([restic, "init"], env=env, check=True, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    for t in times.values():
        subprocess.run([restic, "backup", "--quiet", "--host", "box", "--time",
                        t.strftime("%Y-%m-%d %H:%M:%S"), str(data)],
                       env=env, check=True, capture_output=True)  # fmt: skip
    by_time = {t: name for name, t in times.items()}
    for policy in ORACLE_POLICIES:
        flags = [f"--keep-{k}={getattr(policy, k)}" for k in KINDS if getattr(policy, k)]
        forget = [restic, "forget", "--dry-run", "--json", *flags]
        out = subprocess.run(forget, env=env, check=True, capture_output=True, text=True).stdout
        [group] = json.loads(out)
        restic_kept = {by_time[dt.datetime.fromisoformat(s["time"]).astimezone(UTC)
                               .replace(microsecond=0)] for s in group["keep"]}  # fmt: skip
        decisions = apply_policy(times, policy, zone=UTC)
        if version < (0, 16):
            ours = {d.id for d in decisions
                    if any(not r.startswith("oldest ") for r in d.reasons)}  # fmt: skip
        else:
            ours = {d.id for d in decisions if d.keep}
        assert ours == restic_kept, f"{policy.describe()}: restic {version} kept another set"
        assert len(restic_kept) < len(times) or policy == Policy(daily=1000)
