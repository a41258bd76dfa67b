"""restic's retention, all of it: --keep-within(-hourly/…), --keep-tag and local days (DST),
checked by hand and against the real restic as the oracle."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
from zoneinfo import ZoneInfo

import pytest

from odbox_backup.prune import KINDS, Duration, Policy, apply_policy, local_zone
from odbox_common.errors import UsageError
from tests.backup.test_prune_policy import _restic_version

UTC = dt.UTC
BRUSSELS = ZoneInfo("Europe/Brussels")  # CET/CEST: DST from 2026-03-29 01:00Z to 2026-10-25 01:00Z


def _u(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", Duration(days=7)), ("36h", Duration(hours=36)), ("1y5m7d2h", Duration(1, 5, 7, 2)),
     ("2h1y", Duration(years=1, hours=2)), ("0d", Duration())],
)  # fmt: skip
def test_durations_are_restics(text, expected):
    assert Duration.parse(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7w", "1d1d", "-1d", "1.5d", "7d ", "1y 2m"])
def test_a_duration_restic_would_not_read_is_refused(text):
    with pytest.raises(UsageError, match="--keep-within takes a duration like 7d"):
        Duration.parse(text)


@pytest.mark.parametrize(
    ("latest", "duration", "cutoff", "why"),
    [
        # 12:00Z is 14:00 in Brussels (CEST): the date goes back at 14:00 local (CET then).
        ("2026-03-31T12:00:00", "1m", "2026-03-03T13:00:00", "Feb 31 is carried into March, as Go"),
        ("2028-03-31T12:00:00", "1m", "2028-03-02T13:00:00", "2028 is a leap year"),
        ("2026-01-15T12:00:00", "2m", "2025-11-15T12:00:00", "months across the year"),
        ("2026-03-29T12:00:00", "1d", "2026-03-28T13:00:00", "a day across DST is 23 hours"),
        ("2026-03-29T12:00:00", "24h", "2026-03-28T12:00:00", "hours are absolute"),
        ("2026-03-29T12:00:00", "1d2h", "2026-03-28T11:00:00", "the date first, then the hours"),
    ],
)
def test_keep_within_counts_back_as_restic_does(latest, duration, cutoff, why):
    assert Duration.parse(duration).before(_u(latest), BRUSSELS) == _u(cutoff), why


def test_days_are_the_boxs_local_days():
    """23:30Z on Jan 1 is 00:30 on Jan 2 in Brussels: one day with the 00:30Z snapshot."""
    times = {"A": _u("2026-01-01T22:30:00"), "B": _u("2026-01-01T23:30:00"),
             "C": _u("2026-01-02T00:30:00")}  # fmt: skip
    kept = lambda zone: {d.id for d in apply_policy(times, Policy(daily=2), zone=zone) if d.keep}  # noqa: E731
    assert kept(UTC) == {"C", "B"}
    assert kept(BRUSSELS) == {"C", "A"}


def test_the_local_zone_is_tz_else_etc_localtime(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Brussels")
    assert local_zone().utcoffset(dt.datetime(2026, 7, 1)) == dt.timedelta(hours=2)
    times = {"A": _u("2026-01-01T22:30:00"), "B": _u("2026-01-01T23:30:00"),
             "C": _u("2026-01-02T00:30:00")}  # fmt: skip
    assert {d.id for d in apply_policy(times, Policy(daily=2)) if d.keep} == {"C", "A"}
    monkeypatch.setenv("TZ", "UTC")
    assert {d.id for d in apply_policy(times, Policy(daily=2)) if d.keep} == {"C", "B"}


HAND = {  # newest first: G F E D C B A (UTC)
    "A": _u("2026-01-01T10:00:00"),
    "B": _u("2026-02-20T10:00:00"),
    "C": _u("2026-02-27T09:00:00"),
    "D": _u("2026-02-28T08:00:00"),
    "E": _u("2026-02-28T20:00:00"),
    "F": _u("2026-03-01T07:00:00"),
    "G": _u("2026-03-01T09:00:00"),
}
HAND_TABLE = [
    (Policy(within=Duration(days=1)), "GFE", "after Feb 28 09:00: E, F, G (D at 08:00 is older)"),
    (Policy(within=Duration(hours=3)), "GF", "07:00 is within three hours of 09:00"),
    (Policy(within=Duration(hours=2)), "G", "07:00 is two hours before: not after, so not within"),
    (Policy(within_daily=Duration(days=3)), "GEC", "the newest of Mar 1, Feb 28 and Feb 27"),
    (Policy(within_daily=Duration(days=2)), "GE", "C is exactly two days older: not within"),
    (Policy(within_weekly=Duration(months=1)), "GB", "W09 (Feb 23 to Mar 1) and W08"),
    (Policy(within_monthly=Duration(years=1)), "GEA", "March, February, January"),
    (Policy(within_hourly=Duration(hours=3)), "GF", "three hours, each the newest of its hour"),
    (Policy(last=1, within_daily=Duration(days=1)), "GE", "G by both, then Feb 28's newest"),
    (Policy(tags=(("keep",),), last=1), "GDB", "B and D have the tag; G is the last"),
    (Policy(tags=(("keep", "x"),), last=1), "GD", "only D has both tags"),
]
HAND_TAGS = {"B": ["keep"], "D": ["keep", "x"]}


@pytest.mark.parametrize(("policy", "kept", "why"), HAND_TABLE,
                         ids=[p.describe() for p, _, _ in HAND_TABLE])  # fmt: skip
def test_within_and_tag_table(policy, kept, why):
    decisions = apply_policy(HAND, policy, HAND_TAGS, zone=UTC)
    assert "".join(d.id for d in decisions if d.keep) == kept, why


def test_keep_within_counts_from_the_newest_snapshot_not_dated_in_the_future():
    times = {**HAND, "Z": _u("2099-01-01T00:00:00")}
    decisions = apply_policy(times, Policy(within=Duration(days=1)), zone=UTC,
                             now=_u("2026-06-01T00:00:00"))  # fmt: skip
    assert "".join(d.id for d in decisions if d.keep) == "ZGFE"
    assert [r for d in decisions if d.id == "G" for r in d.reasons] == ["within 1d"]


def _dst_series(seed: int) -> dict[str, dt.datetime]:
    """Snapshots from February to December 2026 in Brussels: irregular days, bursts of hourly
    ones across both DST changes and around local midnight (a UTC day apart), none in the
    hour of October 25 that is 02:00 twice (restic's `--time` could not tell which)."""
    rng = random.Random(seed)
    times = []
    t = _u("2026-02-10T03:00:00")
    while t < _u("2026-11-26T00:00:00"):
        t += dt.timedelta(hours=rng.choice([1, 2, 5, 11, 22, 23, 24, 26, 49, 170]),
                          minutes=rng.randrange(60))  # fmt: skip
        if t < _u("2026-11-26T00:00:00"):
            times.append(t)
    for start in (
        "2026-03-28T20:10:00",
        "2026-10-24T20:10:00",
        "2026-06-30T20:20:00",
        "2026-11-27T20:10:00",
    ):
        times += [_u(start) + dt.timedelta(minutes=40 * i) for i in range(14)]
    ambiguous = (_u("2026-10-25T00:00:00"), _u("2026-10-25T02:00:00"))
    times = sorted({x for x in times if not ambiguous[0] <= x < ambiguous[1]})
    return {f"s{i:03d}": x for i, x in enumerate(times)}


ORACLE = [
    Policy(hourly=30),
    Policy(daily=20),
    Policy(weekly=10, daily=3),
    Policy(within=Duration(days=3)),
    Policy(within=Duration(months=2, days=3, hours=5)),
    Policy(within_hourly=Duration(days=2)),
    Policy(within_daily=Duration(months=1)),
    Policy(within_weekly=Duration(months=3)),
    Policy(within_monthly=Duration(years=1)),
    Policy(within_yearly=Duration(years=2)),
    Policy(last=2, within_daily=Duration(days=10), within_weekly=Duration(months=2),
           within_monthly=Duration(years=1)),
    Policy(daily=7, tags=(("pre-upgrade",),)),
    Policy(last=1, tags=(("pre-upgrade", "odoo-17"), ("import",))),
]  # fmt: skip


def _flags(policy: Policy) -> list[str]:
    flags = [f"--keep-{k}={getattr(policy, k)}" for k in KINDS if getattr(policy, k)]
    if not policy.within.zero:
        flags.append(f"--keep-within={policy.within}")
    for kind in ("hourly", "daily", "weekly", "monthly", "yearly"):
        d = getattr(policy, f"within_{kind}")
        if not d.zero:
            flags.append(f"--keep-within-{kind}={d}")
    flags += [f"--keep-tag={','.join(t)}" for t in policy.tags]
    return flags


@pytest.mark.timeout(900)
def test_restic_keeps_the_same_snapshots_in_a_zone_with_dst(tmp_path):
    """Every kind of rule, against a real restic repository whose snapshots were made at
    the same instants (`backup --time` in local time, TZ=Europe/Brussels) with the same
    tags: `forget --dry-run --json` must keep what we keep. restic before 0.16 lacks the
    "oldest while places are left" rule (restic PR 4366): against it, ours without the
    reasons that rule alone gives."""
    restic = shutil.which("restic")
    assert restic, "restic is in .ci/debian-packages.txt: install it with apt-get install restic"
    version = _restic_version(restic)
    times = _dst_series(seed=5)
    rng = random.Random(6)
    tags = {i: sorted(rng.sample(["pre-upgrade", "odoo-17", "import"], rng.choice([0, 0, 1, 2])))
            for i in times}  # fmt: skip
    env = {**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "restic"), "TZ": "Europe/Brussels",
           "RESTIC_PASSWORD": "test", "RESTIC_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    subprocess.run([restic, "init"], env=env, check=True, capture_output=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "file").write_text("x")
    for name, t in times.items():
        local = t.astimezone(BRUSSELS).strftime("%Y-%m-%d %H:%M:%S")
        tag_flags = [f"--tag={t}" for t in tags[name]]
        backup = [restic, "backup", "--quiet", "--host", "box", "--time", local, *tag_flags]
        subprocess.run([*backup, str(data)], env=env, check=True, capture_output=True)
    by_time = {t: name for name, t in times.items()}
    zone_matters = 0
    for policy in ORACLE:
        forget = [restic, "forget", "--dry-run", "--json", *_flags(policy)]
        out = subprocess.run(forget, env=env, check=True, capture_output=True, text=True).stdout
        [group] = json.loads(out)
        restic_kept = {by_time[dt.datetime.fromisoformat(s["time"]).astimezone(UTC)
                               .replace(microsecond=0)] for s in group["keep"]}  # fmt: skip
        decisions = apply_policy(times, policy, tags, zone=BRUSSELS)
        if version < (0, 16):
            ours = {d.id for d in decisions
                    if any(not r.startswith("oldest ") for r in d.reasons)}  # fmt: skip
        else:
            ours = {d.id for d in decisions if d.keep}
        assert ours == restic_kept, f"{policy.describe()}: restic {version} kept another set"
        assert 0 < len(restic_kept) < len(times), policy.describe()
        in_utc = {d.id for d in apply_policy(times, policy, tags, zone=UTC) if d.keep}
        zone_matters += in_utc != ours
    assert zone_matters >= 5  # in UTC, days (not hours) would keep other sets


def test_group_by_tags_applies_the_policy_to_each_set_of_tags():
    from odbox_backup.prune import apply_grouped, group_of, parse_group_by

    fields = parse_group_by("db,tags")
    manifests = {"A": ["nightly"], "B": ["nightly"], "C": [], "D": []}
    groups = {i: group_of({"database": {"name": "odoo"}, "tags": t}, fields)
              for i, t in manifests.items()}  # fmt: skip
    assert groups["A"] == "db=odoo tags=nightly" and groups["C"] == "db=odoo tags="
    times = {i: _u(f"2026-01-0{n + 1}T10:00:00") for n, i in enumerate("ABCD")}
    kept = [d.id for d in apply_grouped(times, groups, Policy(last=1), zone=UTC) if d.keep]
    assert kept == ["D", "B"]
    with pytest.raises(UsageError, match="host, db, tags"):
        parse_group_by("paths")
