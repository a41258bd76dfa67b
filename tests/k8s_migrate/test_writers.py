"""Other writers of Odoo's data: a second deployment on the PVC, sessions on the database,
and Odoo scaled back up mid-pull (a GitOps self-heal, a colleague)."""

from __future__ import annotations

import psycopg

from tests.helpers import one_error_line
from tests.k8s_migrate.shop import NS, Shop, changes, is_dump, is_tar


def test_a_second_deployment_on_the_pvc_is_named_and_stops_a_pull(shop: Shop) -> None:
    """Cron or queue workers split out of Odoo mount the same PVC: plan names their pod and
    the command that stops them; a pull stops before it changes anything; --force pulls."""
    shop.k8s.add_deployment(NS, "odoo-cron", {"app": "odoo-cron"}, replicas=1)
    cron = next(p["metadata"]["name"] for p in shop.k8s.pods(NS)
                if p["metadata"]["name"].startswith("odoo-cron-"))  # fmt: skip
    plan = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert plan.returncode == 0, plan.stderr
    assert f"pod {cron} (deployment odoo-cron) mounts PVC odoo-data" in plan.stdout
    assert "`kubectl -n shop scale deployment odoo-cron --replicas=0`" in plan.stdout
    done = shop.pull()
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert f"other writers of Odoo's data: pod {cron} (deployment odoo-cron) mounts" in line
    assert "nothing was changed" in line and "--force" in line
    assert changes(shop.k8s.requests) == [] and shop.k8s.replicas(NS, "odoo") == 2
    done = shop.pull("--force")
    assert done.returncode == 0, done.stderr
    assert "warning: pulling while other writers run (--force)" in done.stdout + done.stderr
    assert len(shop.snapshots()) == 1


def test_a_session_on_the_database_stops_a_pull_and_one_that_comes_later_too(
    shop: Shop,
) -> None:
    with psycopg.connect(shop.dsn, application_name="odoo-queue-worker"):
        done = shop.pull()
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "(application odoo-queue-worker)" in line and "nothing was changed" in line
    assert changes(shop.k8s.requests) == []

    # One that connects while the filestore comes, and stays: no snapshot.
    held: list[psycopg.Connection] = []
    shop.k8s.on_exec(is_tar, lambda: held.append(
        psycopg.connect(shop.dsn, application_name="late-worker")))  # fmt: skip
    try:
        done = shop.pull()
    finally:
        for conn in held:
            conn.close()
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "other writers of Odoo's data appeared: a session of " in line
    assert "(application late-worker)" in line and "no snapshot was written" in line
    assert shop.snapshots() == []
    shop.assert_put_back(replicas=2)


def test_odoo_scaled_back_up_mid_pull_writes_no_snapshot(shop: Shop) -> None:
    """Argo CD's self-heal (or a colleague) scales Odoo back to 2 while the dump runs: the
    pull fails before its snapshot; with --force it writes it, and says so."""
    shop.k8s.on_exec(is_dump, lambda: shop.k8s.scale(NS, "odoo", 2))
    done = shop.pull()
    assert done.returncode == 1, done.stderr
    line = one_error_line(done)
    assert "deployment shop/odoo was scaled back up to 2 during the pull" in line
    assert "no snapshot was written" in line
    assert shop.snapshots() == []
    shop.assert_put_back(replicas=2)
    done = shop.pull("--force")
    assert done.returncode == 0, done.stderr
    assert "the snapshot is written all the same (--force)" in done.stdout + done.stderr
    assert len(shop.snapshots()) == 1


def test_plan_names_autoscalers_and_gitops_owners_and_how_to_pause_them(shop: Shop) -> None:
    shop.k8s.add_hpa(NS, "odoo-hpa", "odoo", 2, 6)
    shop.k8s.add_hpa(NS, "other-hpa", "something-else", 1, 3)
    shop.k8s.annotate(NS, "odoo", {"argocd.argoproj.io/tracking-id":
                                   "shop-odoo:apps/Deployment:shop/odoo"})  # fmt: skip
    shop.k8s.annotate(NS, "odoo", {"kustomize.toolkit.fluxcd.io/name": "apps",
                                   "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
                      field="labels")  # fmt: skip
    done = shop.migrate("plan", *shop.args("--repo", str(shop.repo)))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "managed by Argo CD application shop-odoo" in out
    assert "argocd app set shop-odoo --sync-policy none" in out
    assert "Flux Kustomization flux-system/apps" in out
    assert "flux suspend kustomization apps -n flux-system" in out
    assert "horizontal pod autoscaler odoo-hpa scales deployment odoo (2 to 6)" in out
    assert "other-hpa" not in out
