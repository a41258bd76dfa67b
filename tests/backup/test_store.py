"""The storage layer, the same tests on a local folder and on S3 (moto in server mode)."""

from __future__ import annotations

import os

import pytest

from odbox_backup.store import LocalStore, NotFound, S3Store, StoreError


def test_put_get_list_delete(store):
    store.put("objects/ab/abcd", b"\x00\x01 every byte \xff")
    store.put("snapshots/20261122T020000Z-00000000", b"{}")
    assert store.get("objects/ab/abcd") == b"\x00\x01 every byte \xff"
    assert store.exists("objects/ab/abcd") and not store.exists("objects/ab/nope")
    assert list(store.list("objects")) == ["objects/ab/abcd"]
    assert sorted(store.list("")) == ["objects/ab/abcd", "snapshots/20261122T020000Z-00000000"]
    store.put("objects/ab/abcd", b"replaced")
    assert store.get("objects/ab/abcd") == b"replaced"
    store.delete("objects/ab/abcd")
    store.delete("objects/ab/abcd")  # deleting what is gone is fine
    assert not store.exists("objects/ab/abcd")
    with pytest.raises(NotFound):
        store.get("objects/ab/abcd")


def test_an_empty_value_and_a_large_one(store):
    big = os.urandom(5 << 20)
    store.put("objects/00/empty", b"")
    store.put("objects/ff/big", big)
    assert store.get("objects/00/empty") == b""
    assert store.get("objects/ff/big") == big


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "."])
def test_keys_cannot_leave_the_repository(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_local_writes_leave_no_temp_file_and_ignore_leftovers(tmp_path):
    store = LocalStore(tmp_path / "repo")
    store.put("objects/ab/abcd", b"data")
    assert list(store.temp_files()) == []
    (tmp_path / "repo/objects/ab/abce.tmp-12345678").write_bytes(b"half")
    assert list(store.list("objects")) == ["objects/ab/abcd"]
    assert [p.name for p in store.temp_files()] == ["abce.tmp-12345678"]


def test_a_full_disk_fails_cleanly_and_leaves_no_partial_file(small_filesystems):
    root = small_filesystems.mount("1m")
    store = LocalStore(root / "repo")
    store.put("objects/aa/small", b"x" * 1000)
    with pytest.raises(StoreError, match="disk is full"):
        store.put("objects/bb/big", os.urandom(2 << 20))
    assert not store.exists("objects/bb/big")
    assert list(store.temp_files()) == []
    assert store.get("objects/aa/small") == b"x" * 1000


def test_a_missing_bucket_is_one_clear_line(moto_server):
    store = S3Store("no-such-bucket-here", "repo", moto_server.client("s3"))
    with pytest.raises(StoreError, match="the bucket does not exist"):
        store.put("config.json", b"{}")
    with pytest.raises(StoreError, match="the bucket does not exist"):
        list(store.list("snapshots"))
