"""One file back: `ls`, `dump` and `restore --only`, on a folder and on S3 (moto)."""

from __future__ import annotations

import json
import random
import shutil
import stat

import psycopg
from pyrage import x25519

from odbox_backup.attachments import parse_attachments
from tests.backup.helpers import backup, backup_ok, backup_run
from tests.helpers import one_error_line
from tests.odoo_data import filestore_digest, store_file, table_checksums


def _attachment(dsn, filestore, content, name, model, res_id):
    store_fname, checksum = store_file(filestore, content)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO ir_attachment (name, res_model, res_id, mimetype, store_fname, "
            "checksum, file_size) VALUES (%s, %s, %s, 'application/pdf', %s, %s, %s)",
            (name, model, res_id, store_fname, checksum, len(content)),
        )
    return store_fname


def _encrypted(env, backend, tmp_path):
    key = x25519.Identity.generate()
    identity = tmp_path / "key.txt"
    identity.write_text(str(key) + "\n")
    backup_ok(env, "init", "--repo", backend, "--recipient", str(key.to_public()))
    return str(identity)


def test_ls_and_dump_give_one_file_and_its_attachment_without_a_restore(
    odoo, backend, env, tmp_path
):
    _, dsn, filestore = odoo
    big = random.Random(1).randbytes(5 << 20)  # several objects, stored alone
    small = b"%PDF-1.4 invoice\n"
    big_path = _attachment(dsn, filestore, big, "scan\tof 2026.pdf", "account.move", 42)
    small_path = _attachment(dsn, filestore, small, "Facture n°7.pdf", "res.partner", 3)
    identity = _encrypted(env, backend, tmp_path)
    backup_run(env, backend, odoo)

    listed = json.loads(backup_ok(env, "ls", "--repo", backend, "latest", "--identity", identity,
                                  "--json"))  # fmt: skip
    assert {e["path"] for e in listed} == set(filestore_digest(filestore))
    by_path = {e["path"]: e for e in listed}
    assert by_path[big_path]["size"] == len(big)
    assert by_path[big_path]["attachments"] == [
        {"id": by_path[big_path]["attachments"][0]["id"], "name": "scan\tof 2026.pdf",
         "res_model": "account.move", "res_id": 42}]  # fmt: skip
    [one] = json.loads(backup_ok(env, "ls", "--repo", backend, "latest", small_path,
                                 "--identity", identity, "--json"))  # fmt: skip
    assert one["path"] == small_path and one["attachments"][0]["name"] == "Facture n°7.pdf"
    folder = small_path.split("/")[0]
    in_folder = json.loads(backup_ok(env, "ls", "--repo", backend, "latest", folder + "/",
                                     "--identity", identity, "--json", "--no-names"))  # fmt: skip
    assert small_path in {e["path"] for e in in_folder}
    assert all(e["path"].startswith(folder + "/") and "attachments" not in e for e in in_folder)
    text = backup_ok(env, "ls", "--repo", backend, "latest", small_path, "--identity", identity)
    assert small_path in text and "Facture n°7.pdf (res.partner,3)" in text

    out = tmp_path / "out" / "scan.pdf"
    out.parent.mkdir()
    backup_ok(env, "dump", "--repo", backend, "latest", small_path, "--identity", identity,
              "--out", str(out))  # fmt: skip
    assert out.read_bytes() == small and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["scan.pdf"]  # no temp file left beside it
    backup_ok(env, "dump", "--repo", backend, "latest", big_path, "--identity", identity,
              "--out", str(out))  # fmt: skip
    assert out.read_bytes() == big


def test_dump_writes_the_exact_bytes_to_stdout(odoo, backend, env, tmp_path):
    import subprocess

    from tests.backup.helpers import ODBOX_BACKUP

    _, dsn, filestore = odoo
    content = random.Random(2).randbytes(6 << 20) + b"\n\x00end"
    path = _attachment(dsn, filestore, content, "big.bin", "res.partner", 1)
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    out = subprocess.run([str(ODBOX_BACKUP), "dump", "--repo", backend, "latest", path],
                         capture_output=True, env=env)  # fmt: skip
    assert out.returncode == 0 and out.stdout == content
    missing = backup(env, "dump", "--repo", backend, "latest", "ab/" + "0" * 40)
    assert missing.returncode == 1 and "holds no file" in one_error_line(missing)
    outside = backup(env, "dump", "--repo", backend, "latest", "../etc/passwd")
    assert outside.returncode == 2 and "no '..'" in one_error_line(outside)
    failed = backup(env, "dump", "--repo", backend, "latest", path, "--out",
                    str(tmp_path / "no-such-folder" / "x"))  # fmt: skip
    assert failed.returncode == 1 and "cannot write" in one_error_line(failed)


def test_restore_only_puts_back_one_lost_file_and_touches_nothing_else(
    odoo, backend, env, tmp_path, postgres
):
    name, dsn, filestore = odoo
    lost = _attachment(dsn, filestore, b"the contract, signed", "contract.pdf", "res.partner", 1)
    filestore.chmod(0o750)
    backup_ok(env, "init", "--repo", backend)
    backup_run(env, backend, odoo)
    # After the backup: one file is lost, another changes, one is new, the database moves on.
    changed = next(p for p in sorted(filestore_digest(filestore)) if p[:2] != lost[:2])
    (filestore / changed).write_bytes(b"changed since")
    shutil.rmtree((filestore / lost).parent)  # its folder too: restore --only makes it again
    new_path = _attachment(dsn, filestore, b"new since the backup", "new.pdf", "res.partner", 2)
    with psycopg.connect(dsn) as conn:
        before_db = table_checksums(conn)
    before_fs = filestore_digest(filestore)

    out = backup_ok(env, "restore", "--repo", backend, "latest", "--db", name, "--filestore",
                    str(filestore), "--only", lost)  # fmt: skip
    assert f"restored {filestore / lost}" in out
    assert (filestore / lost).read_bytes() == b"the contract, signed"
    assert stat.S_IMODE((filestore / lost).stat().st_mode) == 0o640  # the folder's, without x
    assert stat.S_IMODE((filestore / lost).parent.stat().st_mode) == 0o750
    after = filestore_digest(filestore)
    assert {p: d for p, d in after.items() if p != lost} == before_fs  # nothing else changed
    assert new_path in after
    with psycopg.connect(dsn) as conn:
        assert table_checksums(conn) == before_db  # the database untouched
    assert not [p for p in filestore.parent.iterdir() if p.name != filestore.name]

    again = backup_ok(env, "restore", "--repo", backend, "latest", "--db", name, "--filestore",
                      str(filestore), "--only", lost)  # fmt: skip
    assert "already as in snapshot" in again

    # A file whose content differs is refused, and then nothing at all is written.
    (filestore / lost).unlink()
    refused = backup(env, "restore", "--repo", backend, "latest", "--db", name, "--filestore",
                     str(filestore), "--only", lost, "--only", changed)  # fmt: skip
    assert refused.returncode == 1
    assert "exists with other content" in one_error_line(refused)
    assert "--overwrite" in refused.stderr
    assert not (filestore / lost).exists()
    assert (filestore / changed).read_bytes() == b"changed since"
    backup_ok(env, "restore", "--repo", backend, "latest", "--db", name, "--filestore",
              str(filestore), "--only", lost, "--only", changed, "--overwrite")  # fmt: skip
    assert (filestore / changed).read_bytes() != b"changed since"
    assert (filestore / lost).exists()
    unknown = backup(env, "restore", "--repo", backend, "latest", "--db", name, "--filestore",
                     str(filestore), "--only", "zz/" + "0" * 40)  # fmt: skip
    assert unknown.returncode == 1 and "holds no file" in one_error_line(unknown)


def test_copy_rows_are_read_as_copy_writes_them():
    lines = [
        "SET x = 1;\n",
        "COPY public.ir_attachment (id, name, res_model, res_id, store_fname) FROM stdin;\n",
        "1\ta\\tb\\\\c\\nd\tres.partner\t7\tab/ab12\n",
        "2\tno file\t\\N\t\\N\t\\N\n",
        "3\tsame file\tproject.task\t\\N\tab/ab12\n",
        "\\.\n",
        "4\tafter the block\tx\t1\tcd/cd34\n",
    ]
    found = parse_attachments(lines)
    assert list(found) == ["ab/ab12"]
    first, second = found["ab/ab12"]
    assert (first.name, first.res_model, first.res_id) == ("a\tb\\c\nd", "res.partner", 7)
    assert (second.name, second.res_id) == ("same file", None)


def test_only_the_rows_of_the_files_asked_for_are_parsed():
    lines = [
        "COPY public.ir_attachment (id, name, res_model, res_id, store_fname) FROM stdin;\n",
        "1\ta\tres.partner\t7\tab/ab12\n",
        "2\tb\tres.partner\t8\tcd/cd34\n",
        "3\tbroken row without its fields\n",  # not asked for: never split
        "\\.\n",
    ]
    assert list(parse_attachments(lines, {"cd/cd34"})) == ["cd/cd34"]


def test_the_rows_searched_for_are_found_across_blocks_of_pg_restore_output():
    """More than a MiB of rows (read a MiB at a time): searching each block for the paths
    finds what parsing every row finds, at the start, the middle, a block's edge, the end."""
    import io

    from odbox_backup.attachments import _copy_lines

    rows = [f"{i}\tfile {i}.pdf\tres.partner\t{i}\t{i % 256:02x}/{i:040x}\n" for i in range(40000)]
    text = ("--\n-- PostgreSQL database dump\n--\nSET x = 1;\n\n"
            "COPY public.ir_attachment (id, name, res_model, res_id, store_fname) FROM stdin;\n"
            + "".join(rows) + "\\.\n\n\n")  # fmt: skip
    every = parse_attachments(_copy_lines(io.BytesIO(text.encode()), None))
    assert len(every) == 40000
    edge = text.encode()[: 1 << 20].rsplit(b"\n", 2)[1].split(b"\t")[-1].decode()
    wanted = {f"{0:02x}/{0:040x}", f"{20000 % 256:02x}/{20000:040x}", edge,
              f"{39999 % 256:02x}/{39999:040x}"}  # fmt: skip
    found = parse_attachments(_copy_lines(io.BytesIO(text.encode()), wanted), wanted)
    assert found == {path: every[path] for path in wanted}


def test_restore_only_refuses_a_folder_that_leads_out_of_the_filestore(odoo, local_env, tmp_path):
    """A live filestore whose `ab/` was swapped for a symlink to elsewhere: restore --only
    writes nothing there (it would write outside the filestore, as whoever runs it)."""
    name, dsn, filestore = odoo
    path = _attachment(dsn, filestore, b"the file", "a.pdf", "res.partner", 1)
    repo = str(tmp_path / "repo")
    backup_ok(local_env, "init", "--repo", repo)
    backup_run(local_env, repo, odoo)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(filestore / path.split("/")[0])
    (filestore / path.split("/")[0]).symlink_to(outside)
    refused = backup(local_env, "restore", "--repo", repo, "latest", "--db", name,
                     "--filestore", str(filestore), "--only", path)  # fmt: skip
    assert refused.returncode == 1 and "leads out of" in one_error_line(refused)
    assert list(outside.iterdir()) == []
