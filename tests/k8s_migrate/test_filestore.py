"""What a real PVC holds besides plain files: symlinks (inside it and out), hardlinks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.backup.helpers import odoo_state
from tests.helpers import one_error_line
from tests.k8s_migrate.emulator import ExecCall, ExecRecord
from tests.k8s_migrate.shop import NS, Shop, is_dump


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_files_symlinked_to_another_folder_of_the_pvc_arrive(shop: Shop) -> None:
    """Big attachments moved to another folder of the volume and linked back (a file, and a
    whole folder) are files like any other: all of them arrive, with their content."""
    source = odoo_state(shop.dsn, shop.filestore)
    moved = shop.filestore.parent.parent / "big-attachments"
    moved.mkdir()
    one, folder = _files(shop.filestore)[0], sorted(shop.filestore.iterdir())[-1]
    one.rename(moved / one.name)
    one.symlink_to(os.path.relpath(moved / one.name, one.parent))
    folder.rename(moved / folder.name)
    folder.symlink_to(os.path.relpath(moved / folder.name, folder.parent))
    done = shop.pull()
    assert done.returncode == 0, done.stderr
    assert shop.restore(f"{shop.db}_restored", shop.tmp / "restored") == source


def test_a_symlink_that_leaves_the_pvc_is_refused_by_name_before_odoo_stops(shop: Shop) -> None:
    outside = shop.tmp / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_text("not Odoo's\n")
    link = shop.filestore / "ab" / "linked"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(outside / "secret")
    (shop.filestore / "ab" / "dangling").symlink_to("../../../no-such-file")
    for command in ("plan", "pull"):
        done = shop.migrate(command, *shop.args("--repo", str(shop.repo)))
        assert done.returncode == 2, done.stderr
        line = one_error_line(done)
        assert "2 symlinks in filestore/" in line and "point outside PVC odoo-data" in line
        assert f"ab/linked -> {outside / 'secret'}" in line and "ab/dangling -> " in line
    assert shop.k8s.replicas(NS, "odoo") == 2  # found from the Odoo pod: nothing changed
    assert shop.snapshots() == [] and shop.helpers_left() == []


def test_a_symlink_out_is_refused_by_the_helper_pod_when_odoo_is_down(shop: Shop) -> None:
    """With Odoo at 0 no Odoo pod can look first: the helper pod refuses before the dump,
    and the deployment stays as it was found."""
    assert shop.pull().returncode == 0  # leaves Odoo at 0
    assert shop.k8s.replicas(NS, "odoo") == 0
    (shop.filestore / "linked").symlink_to("/etc/hostname")
    done = shop.pull()
    assert done.returncode == 2, done.stderr
    assert "1 symlink in filestore/" in one_error_line(done)
    assert "linked -> /etc/hostname" in done.stderr
    assert len(shop.snapshots()) == 1 and shop.helpers_left() == []
    dumps = [r for r in shop.k8s.exec_log if is_dump(r)]
    assert len(dumps) == 1  # the first pull's; the second stopped before its dump


def test_a_hardlinked_file_arrives_under_both_names(shop: Shop) -> None:
    """GNU tar sends a second name of a file as a link member, without content: the pull
    asks for files (--hard-dereference), and both names arrive whole."""
    first = _files(shop.filestore)[0]
    twin = shop.filestore / "zz" / first.name
    twin.parent.mkdir(exist_ok=True)
    os.link(first, twin)
    source = odoo_state(shop.dsn, shop.filestore)
    done = shop.pull()
    assert done.returncode == 0, done.stderr
    state = shop.restore(f"{shop.db}_restored", shop.tmp / "restored")
    assert state == source
    restored = shop.tmp / "restored" / "zz" / first.name
    assert restored.read_bytes() == first.read_bytes()


def _is_scan(call: ExecCall | ExecRecord) -> bool:
    return call.pod.startswith("k8s-migrate-") and "du -s -k -L" in " ".join(call.command)


def test_the_scan_heartbeat_keeps_a_silent_du_past_an_idle_timeout(shop: Shop) -> None:
    """`du -s` of a big NFS or EFS filestore says nothing for minutes, and a stream with no
    frame for a while is cut (a load balancer's idle timeout, kubelet's streaming one). Here
    du stays silent until the emulator has seen the scan's exec outlive two idle windows:
    without a heartbeat it is cut after one; with the scan's dots on stderr it lives on."""
    gate = shop.tmp / "du-gate"
    bin_dir = shop.tmp / "silent-du"
    bin_dir.mkdir()
    real = shutil.which("du")
    (bin_dir / "du").write_text(
        f'#!/bin/sh\nwhile [ ! -e {gate} ]; do sleep 0.05; done\nexec {real} "$@"\n'
    )
    (bin_dir / "du").chmod(0o755)
    shop.k8s.image_env("odoo:17.0", {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    shop.k8s.stream_idle_timeout = 5.0
    shop.k8s.on_idle_window(_is_scan, gate.touch)
    env = shop.env
    shop.env = {**env, "K8S_MIGRATE_HEARTBEAT": "0"}
    done = shop.pull()
    assert done.returncode == 1, done.stderr
    assert "the connection dropped" in one_error_line(done)
    assert [r.outcome for r in shop.k8s.exec_log if _is_scan(r)] == ["idle"]
    shop.assert_put_back(replicas=2)
    assert shop.snapshots() == [] and not gate.exists()

    shop.env = {**env, "K8S_MIGRATE_HEARTBEAT": "0.25"}  # 20 s unless told
    done = shop.pull()
    assert done.returncode == 0, done.stderr
    assert gate.exists()  # du answered only once its exec had outlived two idle windows
    assert [r.outcome for r in shop.k8s.exec_log if _is_scan(r)] == ["idle", "exited"]
    assert len(shop.snapshots()) == 1
