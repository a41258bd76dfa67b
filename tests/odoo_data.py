"""An Odoo-shaped database and filestore, seeded and scalable, for the tests and the benchmarks.

The tables are the ones that matter to a backup of a real Odoo:
`ir_module_module` (base and its `latest_version`, read for Odoo's dump
manifest), `ir_attachment` (`store_fname`, `checksum`, `file_size`: the link
from the database to the filestore), and `res_partner` and `mail_message`
for volume. Filestore files are named `<sha1[:2]>/<sha1>` of their content,
as Odoo names them, with sizes from empty to tens of MB.

    from tests.odoo_data import Shape, create_schema, fill
    with psycopg.connect(dsn) as conn:
        create_schema(conn)
        fill(conn, filestore, Shape.small(), seed=1)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ODOO_VERSION = "17.0"

SCHEMA = """
CREATE TABLE ir_module_module (
    id serial PRIMARY KEY,
    name varchar NOT NULL UNIQUE,
    state varchar NOT NULL,
    latest_version varchar
);
CREATE TABLE res_partner (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    email varchar,
    street varchar,
    city varchar,
    create_date timestamp NOT NULL DEFAULT now(),
    write_date timestamp NOT NULL DEFAULT now()
);
CREATE TABLE mail_message (
    id serial PRIMARY KEY,
    model varchar,
    res_id integer,
    author_id integer REFERENCES res_partner (id),
    body text,
    date timestamp NOT NULL DEFAULT now()
);
CREATE TABLE ir_attachment (
    id serial PRIMARY KEY,
    name varchar NOT NULL,
    res_model varchar,
    res_id integer,
    mimetype varchar,
    store_fname varchar,
    checksum varchar(40),
    file_size integer,
    create_date timestamp NOT NULL DEFAULT now()
);
CREATE INDEX ir_attachment_store_fname_idx ON ir_attachment (store_fname);
"""

MODULES = [
    ("base", "17.0.1.3"), ("web", "17.0.1.0"), ("mail", "17.0.1.15"),
    ("contacts", "17.0.1.0"), ("sale", "17.0.1.2"), ("account", "17.0.1.2"),
]  # fmt: skip

WORDS = [
    "invoice", "order", "delivery", "partner", "quotation", "payment", "reminder", "meeting",
    "project", "task", "customer", "vendor", "product", "stock", "warehouse", "price",
    "discount", "contract", "renewal", "offer",
]  # fmt: skip
CITIES = ["Bolzano", "Trento", "Zürich", "Genève", "Lyon", "Köln", "Porto", "Łódź"]


@dataclass(frozen=True)
class Shape:
    """How much data: rows per table, and how many attachments of which sizes."""

    partners: int
    messages: int
    attachments: int
    # (weight, min bytes, max bytes): a file's size is drawn from one band
    sizes: tuple[tuple[int, int, int], ...] = (
        (5, 0, 0), (60, 1, 64 << 10), (30, 64 << 10, 1 << 20), (5, 1 << 20, 8 << 20),
    )  # fmt: skip

    @classmethod
    def small(cls) -> Shape:
        """A few of everything, one file of every kind: quick tests."""
        return cls(partners=60, messages=200, attachments=24)

    @classmethod
    def with_large_files(cls) -> Shape:
        """Includes files of tens of MB (cut into several objects)."""
        return cls(partners=20, messages=40, attachments=6,
                   sizes=((1, 0, 0), (2, 1, 4096), (3, 12 << 20, 24 << 20)))  # fmt: skip

    @classmethod
    def scaled(cls, filestore_bytes: int, files: int) -> Shape:
        """About `filestore_bytes` in about `files` files, and a database of similar size."""
        mean = max(1, filestore_bytes // max(1, files))
        return cls(
            partners=max(10, filestore_bytes // 4000),
            messages=max(10, filestore_bytes // 900),
            attachments=files,
            sizes=((1, 0, 0), (70, 1, mean), (28, mean, 2 * mean), (1, 4 * mean, 16 * mean)),
        )


def create_schema(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SCHEMA)  # type: ignore[arg-type]
    with conn.cursor().copy("COPY ir_module_module (name, state, latest_version) FROM STDIN") as cp:
        for name, version in MODULES:
            cp.write_row((name, "installed", version))
    conn.commit()


def _file_content(rng: random.Random, size: int) -> bytes:
    """Half the files compress (text, like XML and CSV), half do not (PDF, images)."""
    if size == 0:
        return b""
    if rng.random() < 0.5:
        return rng.randbytes(size)
    line = " ".join(rng.choice(WORDS) for _ in range(12)).encode() + b"\n"
    return (line * (size // len(line) + 1))[:size]


def _size(rng: random.Random, shape: Shape) -> int:
    _, low, high = rng.choices(shape.sizes, weights=[b[0] for b in shape.sizes])[0]
    return rng.randint(low, high)


def store_file(filestore: Path, content: bytes) -> tuple[str, str]:
    """Write `content` where Odoo would; its store_fname and checksum."""
    checksum = hashlib.sha1(content).hexdigest()  # noqa: S324 (Odoo's own naming)
    store_fname = f"{checksum[:2]}/{checksum}"
    path = filestore / store_fname
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return store_fname, checksum


def fill(conn: psycopg.Connection[Any], filestore: Path, shape: Shape, seed: int) -> None:
    """Add rows and files in the proportions of `shape`; the same seed gives the same data."""
    rng = random.Random(seed)
    filestore.mkdir(parents=True, exist_ok=True)
    start = _count(conn, "res_partner")
    with conn.cursor().copy(
        "COPY res_partner (name, email, street, city, create_date, write_date) FROM STDIN"
    ) as cp:
        for i in range(shape.partners):
            name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {start + i}"
            when = _when(rng)
            cp.write_row((name, f"p{start + i}@example.com", f"Via {rng.randint(1, 200)}",
                          rng.choice(CITIES), when, when))  # fmt: skip
    partners = _count(conn, "res_partner")
    with conn.cursor().copy(
        "COPY mail_message (model, res_id, author_id, body, date) FROM STDIN"
    ) as cp:
        for _ in range(shape.messages):
            body = "<p>" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 80))) + "</p>"
            cp.write_row(("res.partner", rng.randint(1, partners), rng.randint(1, partners), body,
                          _when(rng)))  # fmt: skip
    add_attachments(conn, filestore, shape.attachments, rng, shape)
    conn.commit()


def add_attachments(
    conn: psycopg.Connection[Any],
    filestore: Path,
    count: int,
    rng: random.Random,
    shape: Shape | None = None,
) -> list[str]:
    """Store `count` new files and their ir_attachment rows; their store_fnames."""
    shape = shape or Shape.small()
    fnames = []
    with conn.cursor().copy(
        "COPY ir_attachment (name, res_model, res_id, mimetype, store_fname, checksum, file_size,"
        " create_date) FROM STDIN"
    ) as cp:
        for i in range(count):
            content = _file_content(rng, _size(rng, shape))
            store_fname, checksum = store_file(filestore, content)
            fnames.append(store_fname)
            name = f"file-{rng.getrandbits(32):08x}-{i}.bin"
            cp.write_row((name, "res.partner", 1, "application/octet-stream", store_fname,
                          checksum, len(content), _when(rng)))  # fmt: skip
    return fnames


def _when(rng: random.Random) -> dt.datetime:
    """A timestamp in 2024, from the seed (so the same seed gives the same rows)."""
    return dt.datetime(2024, 1, 1) + dt.timedelta(seconds=rng.randint(0, 365 * 86400))


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def table_checksums(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """An md5 of every row of every user table, in primary key order: equal data, equal sums."""
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        )
    ]
    sums = {}
    for table in tables:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"  # type: ignore[arg-type]
            f" FROM {table} t"
        ).fetchone()
        assert row is not None
        sums[table] = f"{row[0]}:{row[1]}"
    return sums


def filestore_digest(root: Path) -> dict[str, str]:
    """The SHA-256 of every file under `root`, by relative path."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(_files(root))
    }


def _files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def store_fnames(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("SELECT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL")
    return {str(r[0]) for r in rows}


def fingerprint(conn: psycopg.Connection[Any], filestore: Path) -> str:
    """One line that changes when any row or file does: for people comparing states."""
    both = json.dumps([table_checksums(conn), filestore_digest(filestore)], sort_keys=True)
    return hashlib.sha256(both.encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.odoo_data fill|change|summary DSN FILESTORE`: for the demo."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.odoo_data", description=main.__doc__)
    parser.add_argument("action", choices=["fill", "change", "summary"])
    parser.add_argument("dsn", help="libpq connection string of the Odoo database")
    parser.add_argument("filestore", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with psycopg.connect(args.dsn) as conn:
        if args.action == "fill":
            create_schema(conn)
            fill(conn, args.filestore, Shape.small(), seed=args.seed)
        elif args.action == "change":
            add_attachments(conn, args.filestore, 3, random.Random(args.seed))
            conn.execute("UPDATE res_partner SET city = 'Changed' WHERE id % 10 = 0")
            conn.commit()
        partners, attachments = _count(conn, "res_partner"), _count(conn, "ir_attachment")
        files = sum(1 for _ in _files(args.filestore))
        print(f"{partners} partners, {attachments} attachments, {files} files; "
              f"fingerprint {fingerprint(conn, args.filestore)}")  # fmt: skip


if __name__ == "__main__":
    main()
