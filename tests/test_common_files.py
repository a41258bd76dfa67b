"""The shared atomic writes of tools/common: `atomic_file` (odbox-backup's local store,
vaultgen's files, the keys) and `OdooZipWriter` (odbox-backup export and k8s-migrate pull
--odoo-zip). What a reader can find at the path while and after they write."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from odbox_common.files import atomic_file
from odbox_common.odoozip import OdooZipWriter, leftover_pattern


def test_an_atomic_file_replaces_the_old_content_whole_and_is_private(tmp_path: Path):
    target = tmp_path / "value"
    target.write_bytes(b"old")
    old_umask = os.umask(0)  # the most permissive umask must not loosen the mode
    try:
        with atomic_file(target) as f:
            f.write(b"new ")
            assert target.read_bytes() == b"old"  # nothing shows before the rename
            f.write(b"content")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value"]


def test_an_atomic_file_whose_writer_fails_leaves_the_old_content_and_no_temp_file(tmp_path):
    target = tmp_path / "value"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target, 0o644) as f:
        f.write(b"half")
        raise RuntimeError("the disk is full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["value"]


def test_the_odoo_zip_has_odoos_layout_and_is_private_from_its_first_byte(tmp_path: Path):
    out = tmp_path / "shop.zip"
    old_umask = os.umask(0o022)  # k8s-migrate's zip was 0644 under the usual umask
    try:
        writer = OdooZipWriter(out)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(writer.temp.stat().st_mode) == 0o600
    assert list(tmp_path.glob(leftover_pattern(out))) == [writer.temp] and not out.exists()
    with writer.dump() as sink:
        sink.write(b"CREATE TABLE t ();\n")
    with writer.file("ab/ab12", 5) as sink:
        sink.write(b"hello")
    writer.commit({"odoo_dump": "1", "db_name": "shop"})
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(leftover_pattern(out)))
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["dump.sql", "filestore/ab/ab12", "manifest.json"]
        assert zf.read("filestore/ab/ab12") == b"hello"
        assert json.loads(zf.read("manifest.json"))["db_name"] == "shop"
        assert zf.testzip() is None


def test_an_odoo_zip_aborted_half_way_leaves_nothing(tmp_path: Path):
    out = tmp_path / "shop.zip"
    writer = OdooZipWriter(out)
    with writer.dump() as sink:
        sink.write(b"SELECT 1;\n")
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_k8s_migrates_zip_is_as_private_as_odbox_backups_export(tmp_path: Path):
    """Both write through OdooZipWriter now; k8s-migrate's own writer made its temporary
    file (and so the zip: the whole database in clear) 0644 under the usual umask."""
    from k8s_migrate.sinks import ZipSink

    old_umask = os.umask(0o022)
    try:
        sink = ZipSink(tmp_path / "shop.zip")
    finally:
        os.umask(old_umask)
    try:
        assert stat.S_IMODE(sink.tmp.stat().st_mode) == 0o600
    finally:
        sink.abort()
    assert list(tmp_path.iterdir()) == []
