"""Two pulls of one deployment, or into one zip, at once: the deployment's annotation
`k8s-migrate.odbox/pulling` is a lease with an owner, and the zip's temporary file is held
with a flock; the second pull exits 4 and touches nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import one_error_line
from tests.k8s_migrate.shop import ANNOTATION, K8S_MIGRATE, NS, PULLING, Shop, changes


def _gated_pod(shop: Shop, name: str) -> Path:
    """A database pod whose pg_dump waits until the returned file exists, then runs."""
    gate = shop.tmp / f"gate-{name}"
    real = shutil.which("pg_dump")
    shop.add_fake_dump_pod(name, (
        "import os, sys, time\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n"
    ))  # fmt: skip
    return gate


def _args(shop: Shop, pod: str, *extra: str) -> list[str]:
    args = shop.args(*extra)
    args[args.index("--db-pod") + 1] = pod
    return args


def _start(shop: Shop, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(K8S_MIGRATE), *args], env=shop.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _wait_for(what: object, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not (what() if callable(what) else what):
        assert time.monotonic() < deadline and child.poll() is None, child.communicate()
        time.sleep(0.05)


def _held_line(owner: str) -> str:
    return (
        f"error: another pull of deployment shop/odoo is under way ({owner}); wait for it, or "
        "if it was killed on another machine remove the annotation: "
        f"kubectl -n shop annotate deployment odoo {PULLING}-"
    )


def test_a_second_pull_while_one_runs_exits_4_and_touches_nothing(shop: Shop) -> None:
    gate = _gated_pod(shop, "gated-0")
    first = _start(shop, "pull", *_args(shop, "gated-0", "--repo", str(shop.repo),
                                        "--scale-back"))  # fmt: skip
    # leased, its helper pod made, scaled down
    _wait_for(lambda: shop.helpers_left() and shop.k8s.replicas(NS, "odoo") == 0, first)
    (helper,) = shop.helpers_left()
    owner = json.loads(shop.annotations()[PULLING])
    assert owner["pid"] == first.pid

    before = len(shop.k8s.requests)
    plan = shop.migrate("plan", *_args(shop, "gated-0", "--repo", str(shop.repo)))
    assert plan.returncode == 0, plan.stderr
    assert f"another pull of deployment shop/odoo is under way (pid {first.pid} on host " in (
        plan.stdout
    )
    assert "a pull now stops here (exit 4)" in plan.stdout
    assert "left by a pull that was killed" not in plan.stdout  # they are the live pull's

    second = shop.migrate("pull", *_args(shop, "gated-0", "--odoo-zip",
                                         str(shop.tmp / "second.zip")))  # fmt: skip
    assert second.returncode == 4, second.stdout + second.stderr
    line = one_error_line(second)
    assert line.endswith(_held_line(f"pid {first.pid} on host {owner['host']} since "
                                    f"{owner['since']}"))  # fmt: skip
    assert changes(shop.k8s.requests[before:]) == []
    assert shop.helpers_left() == [helper] and shop.k8s.replicas(NS, "odoo") == 0
    assert not any(p.name.startswith(".second.zip") for p in shop.tmp.iterdir())

    gate.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert len(shop.snapshots()) == 1
    shop.assert_put_back(replicas=2)  # as the first pull decided: --scale-back
    assert shop.annotations().keys().isdisjoint({ANNOTATION, PULLING})


def test_a_lease_from_another_host_refuses_until_removed(shop: Shop) -> None:
    lease = {
        "host": "laptop-of-someone-else",
        "pid": 4242,
        "start": 1,
        "since": "2024-05-01T09:00:00Z",
    }
    shop.k8s.annotate(NS, "odoo", {PULLING: json.dumps(lease), ANNOTATION: "2"})
    done = shop.pull()
    assert done.returncode == 4, done.stdout + done.stderr
    assert one_error_line(done).endswith(
        _held_line("pid 4242 on host laptop-of-someone-else since 2024-05-01T09:00:00Z")
    )
    assert changes(shop.k8s.requests) == []
    plan = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert plan.returncode == 0 and "under way (pid 4242 on host laptop-of" in plan.stdout

    shop.k8s.annotate(NS, "odoo", {PULLING: None})  # kubectl annotate … pulling-
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    shop.assert_put_back(replicas=2)


def test_a_lease_taken_between_read_and_write_loses_with_409(shop: Shop) -> None:
    """Two pulls read the deployment in the same instant; the other one writes its lease
    first. This one's PATCH carries the resourceVersion it read: 409, then exit 4. A change
    that is not a lease (the controller's, say) only makes it read again and retry."""
    from k8s_migrate.kube import Cluster
    from k8s_migrate.lease import LeaseHeld
    from k8s_migrate.preflight import Target, preflight
    from k8s_migrate.transfer import Changed, take_lease

    cluster = Cluster.connect(shop.k8s.kubeconfig, "test")
    target = Target(NS, "odoo", "postgres-0", shop.db, "odoo-data", "postgres")
    found = preflight(cluster, target, sizes_from_odoo=False, refuse_live=True)
    shop.k8s.annotate(NS, "odoo", {"example.com/touched": "yes"})  # a newer resourceVersion
    changed = Changed()
    take_lease(cluster, target, found, changed, print)
    assert changed.leased and json.loads(shop.annotations()[PULLING])["pid"] > 0
    conflicts = [r for r in shop.k8s.requests if r.method == "PATCH"]
    assert len(conflicts) == 2  # one 409, one retry at the new version

    shop.k8s.annotate(NS, "odoo", {PULLING: None, ANNOTATION: None})
    found = preflight(cluster, target, sizes_from_odoo=False, refuse_live=True)
    other = {"host": "other-host", "pid": 7, "start": None, "since": "2024-05-01T09:00:00Z"}
    shop.k8s.annotate(NS, "odoo", {PULLING: json.dumps(other)})  # the other pull won
    with pytest.raises(LeaseHeld) as held:
        take_lease(cluster, target, found, Changed(), print)
    assert held.value.exit_code == 4
    assert str(held.value).startswith(
        "another pull of deployment shop/odoo is under way (pid 7 on host other-host since "
    )
    assert json.loads(shop.annotations()[PULLING]) == other and shop.helpers_left() == []
    assert shop.k8s.replicas(NS, "odoo") == 2


def test_a_zip_pull_killed_with_sigkill_leaves_a_temp_file_the_next_one_removes(
    shop: Shop,
) -> None:
    gate = _gated_pod(shop, "gated-0")
    out = shop.tmp / "o.zip"
    child = _start(shop, "pull", *_args(shop, "gated-0", "--odoo-zip", str(out)))

    def temp_files() -> list[Path]:
        return sorted(shop.tmp.glob(".o.zip.tmp-*"))

    _wait_for(lambda: shop.helpers_left() and shop.k8s.replicas(NS, "odoo") == 0, child)
    (temp,) = temp_files()
    # Meanwhile another pull into the same zip: its temporary file is locked, exit 4.
    second = shop.migrate("pull", *shop.args("--odoo-zip", str(out)))
    assert second.returncode == 4, second.stderr
    assert f"another pull is writing {out} (its temporary file {temp} is in use)" in (
        one_error_line(second)
    )
    child.kill()
    child.wait()
    assert temp_files() == [temp] and shop.k8s.replicas(NS, "odoo") == 0

    plan = shop.migrate("plan", *shop.args("--odoo-zip", str(out)))
    assert plan.returncode == 0, plan.stderr
    assert f"{temp} (" in plan.stdout and "was left by a pull that was killed" in plan.stdout
    assert temp_files() == [temp]  # plan only says so

    gate.touch()
    done = shop.migrate("pull", *shop.args("--odoo-zip", str(out), "--scale-back"))
    assert done.returncode == 0, done.stderr
    assert f"deleted {temp} (" in done.stdout and "left by a pull that was killed" in done.stdout
    assert "writing the zip" in done.stdout and "writing the snapshot" not in done.stdout
    assert temp_files() == [] and out.is_file()
    shop.assert_put_back(replicas=2)
