"""The helper pod is started and checked before Odoo is scaled down: an image that cannot be
pulled, or an admission that refuses it, costs Odoo no downtime."""

from __future__ import annotations

import time

from tests.helpers import one_error_line
from tests.k8s_migrate.shop import NS, Shop, is_dump

HELPERS = {"app.kubernetes.io/name": "k8s-migrate"}


def _scaled(shop: Shop) -> list[str]:
    return [r.path for r in shop.k8s.requests if r.method == "PATCH" and r.path.endswith("/scale")]


def test_a_helper_image_that_cannot_be_pulled_fails_before_odoo_stops(shop: Shop) -> None:
    """It used to scale Odoo down, run the whole dump, then wait --timeout and fail without
    the reason."""
    shop.k8s.fail_image("registry.example/odoo:typo")
    done = shop.pull("--helper-image", "registry.example/odoo:typo", "--timeout", "120")
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "cannot start: ImagePullBackOff: Back-off pulling image" in line
    assert '"registry.example/odoo:typo"' in line and "check --helper-image" in line
    assert _scaled(shop) == [] and shop.k8s.replicas(NS, "odoo") == 2
    assert not [r for r in shop.k8s.exec_log if is_dump(r)]
    assert shop.helpers_left() == [] and shop.snapshots() == []


def test_plan_shows_what_podsecurity_admission_would_refuse(shop: Shop) -> None:
    """plan creates the helper with dryRun=All: a namespace that enforces `restricted`
    refuses a pod that does not say runAsNonRoot (Odoo's template does not), and plan says
    so, as a pull would, before anything changes."""
    shop.k8s.set_pod_security(NS, "restricted")
    for command in ("plan", "pull"):
        done = shop.migrate(command, *shop.args("--repo", str(shop.repo)))
        assert done.returncode == 1, done.stderr
        line = one_error_line(done)
        assert "the helper pod would not be admitted: cannot create the helper pod" in line
        assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true' in line
        # the helper asks for nothing else restricted forbids
        assert "allowPrivilegeEscalation" not in line and "seccompProfile" not in line
    assert shop.k8s.pods(NS) and shop.helpers_left() == [] and _scaled(shop) == []
    creates = [r for r in shop.k8s.requests if r.method == "POST"]
    assert creates and all(r.query.get("dryRun") == ["All"] for r in creates)


def _odoo_running(shop: Shop, n: int) -> list[str]:
    """The names of Odoo's pods once `n` of them run (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        pods = [p for p in shop.k8s.pods(NS) if p["metadata"]["name"].startswith("odoo-")
                and "deletionTimestamp" not in p["metadata"]]  # fmt: skip
        running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        if len(running) == n == len(pods):
            return running
        assert time.monotonic() < deadline, pods
        time.sleep(0.1)


def _attach_events(shop: Shop, prefix: str) -> list[str]:
    return [e["message"] for e in shop.k8s.events(NS) if e["reason"] == "FailedAttachVolume"
            and e["involvedObject"]["name"].startswith(prefix)]  # fmt: skip


def test_odoo_comes_back_after_a_pull_whose_helper_ran_on_another_node(shop: Shop) -> None:
    """Odoo's ReadWriteOnce volume is attached to node-1 and the helper pod lands on node-2:
    it waits (Multi-Attach) until Odoo's pods are gone. Then it is deleted with a grace
    period, not forced: gracePeriodSeconds=0 forgets the pod before its node has unmounted
    the volume, which stays attached there for minutes, and Odoo's pods, scaled back on
    node-1, would wait ContainerCreating with a Multi-Attach error of their own."""
    shop.k8s.place(HELPERS, "node-2")
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    waited = _attach_events(shop, "k8s-migrate-")
    assert waited and all("Volume is already used by pod(s) odoo-" in m for m in waited), waited
    deletes = [r.query.get("gracePeriodSeconds") for r in shop.k8s.requests
               if r.method == "DELETE"]  # fmt: skip
    assert deletes == [["1"]]
    _odoo_running(shop, 2)
    assert _attach_events(shop, "odoo-") == []


def test_odoo_pods_that_wait_for_their_volume_after_a_pull_are_named(shop: Shop) -> None:
    """A volume that stays on the helper's node after the pull (a CSI driver slow to detach;
    a forced delete by someone): the pull worked, but Odoo's pods wait, ContainerCreating.
    The error line names them, with the attach/detach controller's words."""
    shop.k8s.place(HELPERS, "node-2")
    shop.k8s.detach_delay["node-2"] = 3600.0
    done = shop.pull("--scale-back")
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "the pull worked, but deployment shop/odoo was scaled back to 2 replicas, yet its " in (
        line
    )
    assert "pod odoo-" in line and ': FailedAttachVolume: Multi-Attach error for volume "pvc-' in (
        line
    )
    assert "Volume is already exclusively attached to one node and can't be attached to" in line
    assert len(shop.snapshots()) == 1
    waiting = [p for p in shop.k8s.pods(NS) if p["metadata"]["name"].startswith("odoo-")]
    assert waiting and all(
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        for p in waiting
    )
