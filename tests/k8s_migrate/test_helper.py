"""The helper pod is started and checked before Odoo is scaled down: an image that cannot be
pulled, or an admission that refuses it, costs Odoo no downtime."""

from __future__ import annotations

from tests.helpers import one_error_line
from tests.k8s_migrate.shop import NS, Shop


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
    assert not [r for r in shop.k8s.exec_log if r.command[0] == "pg_dump" and len(r.command) > 2]
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


def test_the_helper_pod_is_deleted_with_a_grace_period_not_forced(shop: Shop) -> None:
    """gracePeriodSeconds=0 removes the object before kubelet has stopped the pod and
    unmounted the PVC: Odoo's pods, scaled back on another node, would meet Multi-Attach.
    One second lets kubelet finish first (the emulator does not model the attachment)."""
    done = shop.pull("--scale-back")
    assert done.returncode == 0, done.stderr
    deletes = [r.query.get("gracePeriodSeconds") for r in shop.k8s.requests
               if r.method == "DELETE"]  # fmt: skip
    assert deletes == [["1"]]
