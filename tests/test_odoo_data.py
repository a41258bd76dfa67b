"""The Odoo-shaped data generator the backup tests and benchmarks share."""

from __future__ import annotations

import hashlib

import psycopg

from tests.odoo_data import (
    MODULES,
    Shape,
    add_attachments,
    create_schema,
    filestore_digest,
    fill,
    store_fnames,
    table_checksums,
)


def _fresh_db(postgres, name: str) -> str:
    postgres.psql(f"DROP DATABASE IF EXISTS {name}")
    postgres.psql(f"CREATE DATABASE {name}")
    return postgres.dsn.replace("dbname=postgres", f"dbname={name}")


def test_the_same_seed_gives_the_same_data_and_files_are_named_like_odoos(postgres, tmp_path):
    sums = []
    for run in ("a", "b"):
        with psycopg.connect(_fresh_db(postgres, f"gen_{run}")) as conn:
            create_schema(conn)
            fill(conn, tmp_path / run, Shape.small(), seed=7)
            sums.append((table_checksums(conn), filestore_digest(tmp_path / run)))
            fnames = store_fnames(conn)
            modules = dict(conn.execute("SELECT name, latest_version FROM ir_module_module"))
    assert sums[0] == sums[1]
    files = {p.relative_to(tmp_path / "a").as_posix(): p for p in (tmp_path / "a").rglob("*")
             if p.is_file()}  # fmt: skip
    assert set(files) == fnames
    for name, path in files.items():
        assert name == f"{name[:2]}/" + hashlib.sha1(path.read_bytes()).hexdigest()  # noqa: S324
    assert modules == dict(MODULES) and modules["base"].startswith("17.0")
    sizes = [p.stat().st_size for p in files.values()]
    assert 0 in sizes and max(sizes) > 64 << 10


def test_more_attachments_add_rows_and_files(postgres, tmp_path):
    import random

    with psycopg.connect(_fresh_db(postgres, "gen_c")) as conn:
        create_schema(conn)
        fill(conn, tmp_path, Shape.small(), seed=1)
        before = filestore_digest(tmp_path)
        new = add_attachments(conn, tmp_path, 5, random.Random(2))
        conn.commit()
        after = filestore_digest(tmp_path)
        assert set(new) <= set(after) and set(before) <= set(after)
        assert store_fnames(conn) == set(after)
