"""`verify --read-data-subset`: checks a bucket can afford, covering the repository over time."""

from __future__ import annotations

import random

import pytest

from odbox_backup.subset import Subset
from tests.backup.conftest import moto_for
from tests.backup.helpers import backup, backup_ok, backup_run, store_for, verify_json
from tests.helpers import one_error_line
from tests.odoo_data import store_file

FILES = 30  # of about 1.2 MB each, stored alone: the repository is about 40 MB in 60-odd keys


@pytest.fixture
def repository(odoo, backend, env, tmp_path):
    rng = random.Random(21)
    for _ in range(FILES):
        store_file(odoo[2], rng.randbytes(rng.randrange(1_100_000, 1_300_000)))
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    return backend, ["--cache-dir", str(tmp_path / "cache")]


def _subset(env, repo, spec, cache):
    code, report = verify_json(env, repo, "--read-data-subset", spec, *cache)
    assert code == 0, report["problems"]
    return report


def test_n_of_t_reads_each_pack_and_object_once_in_t_runs(repository, env):
    repo, cache = repository
    _, whole = verify_json(env, repo, "--read-data")
    parts = [_subset(env, repo, f"{n}/3", cache) for n in (1, 2, 3)]
    keys = [set(p["subset"]["keys"]) for p in parts]
    assert all(keys) and not (keys[0] & keys[1] or keys[1] & keys[2] or keys[0] & keys[2])
    assert sum(p["objects"]["bytes_read"] for p in parts) == whole["objects"]["bytes_read"]
    assert sum(p["objects"]["read"] for p in parts) == whole["objects"]["read"]
    assert _subset(env, repo, "2/3", cache)["subset"]["keys"] == parts[1]["subset"]["keys"]


def test_a_share_reads_the_least_recently_read_first_so_repeated_runs_go_round(repository, env):
    repo, cache = repository
    everything = None
    seen: set[str] = set()
    for _ in range(4):  # 4 x 30 %: everything is read, and the fourth run starts round again
        report = _subset(env, repo, "30%", cache)
        keys = set(report["subset"]["keys"])
        if everything is None:
            everything = set(_subset(env, repo, "1/1", ["--cache-dir", "/nonexistent/x"])
                             ["subset"]["keys"])  # fmt: skip
        unseen = everything - seen
        assert keys <= unseen or unseen <= keys, "a key read before was read while some never were"
        seen |= keys
    assert seen == everything


def _largest(store):
    return max(size for prefix in ("packs", "objects") for _, size in store.sizes(prefix))


def test_5_percent_reads_about_5_percent_of_the_bytes(repository, env, request):
    repo, cache = repository
    largest = _largest(store_for(repo, moto_for(repo, request)))  # one key at most past the target
    report = _subset(env, repo, "5%", cache)["subset"]
    share = report["stored_bytes"] / report["of_stored_bytes"]
    assert 0.05 <= share <= 0.05 + largest / report["of_stored_bytes"], share
    out = backup_ok(env, "verify", "--repo", repo, "--read-data-subset", "5%", *cache)
    assert "packs and objects alone" in out and "%)" in out
    sized = _subset(env, repo, "2M", cache)["subset"]
    assert 2 << 20 <= sized["stored_bytes"] < (2 << 20) + largest


@pytest.mark.parametrize("spec", ["0/3", "4/3", "0%", "150%", "soon", "0M"])
def test_a_bad_subset_is_one_usage_line(local_env, tmp_path, spec):
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    result = backup(local_env, "verify", "--repo", repo, "--read-data-subset", spec)
    assert result.returncode == 2 and "--read-data-subset" in one_error_line(result)


def test_subset_forms_parse_as_restics():
    assert Subset.parse("2/5").part == (2, 5)
    assert Subset.parse("2.5%").share == 0.025
    assert Subset.parse("500M").size == 500 << 20 and Subset.parse("1G").size == 1 << 30
    assert Subset.parse("10k").size == 10 << 10
