"""Who else writes Odoo's data: pods that mount the PVC, sessions on the database, and the
controllers that scale Odoo back up (autoscalers, Argo CD, Flux).

A pull scales one deployment to 0; Odoo's cron or queue workers are often a second
deployment on the same PVC and database, and a GitOps controller with self-heal puts the
replica count back. Before scaling, a pull lists the pods that mount the PVC (other than
Odoo's own and its helpers) and the sessions on the database that do not come from Odoo's
pods; any of them stops it (unless --force). Before the snapshot is written it looks again:
Odoo's replicas and pods, those pods, those sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate.kube import HELPER_LABELS, Cluster, KubeError

ARGO_ANNOTATION = "argocd.argoproj.io/tracking-id"  # Argo CD 3's default tracking
# The label Argo CD can track by instead (`application.instanceLabelKey`); its older
# default, app.kubernetes.io/instance, is also set by Helm charts, so it proves nothing.
ARGO_LABEL = "argocd.argoproj.io/instance"
FLUX_KINDS = {
    "kustomize.toolkit.fluxcd.io": ("Kustomization", "kustomization"),
    "helm.toolkit.fluxcd.io": ("HelmRelease", "helmrelease"),
}
SESSIONS_SQL = (
    "SELECT coalesce(host(client_addr), 'local') || ' ' || usename || ' ' || "
    "coalesce(nullif(application_name, ''), '-') FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' ORDER BY 1"
)


@dataclass
class Writers:
    """What else may write, as phrases for plan and the error line."""

    pods: list[str] = field(default_factory=list)  # pods mounting the PVC, not Odoo's
    sessions: list[str] = field(default_factory=list)  # on the database, not from Odoo's pods
    kubectl: list[str] = field(default_factory=list)  # commands that stop them

    def __bool__(self) -> bool:
        return bool(self.pods or self.sessions)

    def text(self) -> str:
        said = "; ".join([*self.pods, *self.sessions])
        if self.kubectl:
            said += f" (stop them: {'; '.join(dict.fromkeys(self.kubectl))})"
        return said


def _owner(pod: Any) -> tuple[str, str] | None:
    """(kind, name) of what runs the pod: a ReplicaSet's deployment, a StatefulSet, a Job…"""
    for ref in pod.metadata.owner_references or []:
        if ref.kind == "ReplicaSet" and (template := (pod.metadata.labels or {}).get(
                "pod-template-hash")) and ref.name.endswith(f"-{template}"):  # fmt: skip
            return "deployment", ref.name[: -len(template) - 1]
        return ref.kind.lower(), ref.name
    return None


def _is_helper(pod: Any) -> bool:
    labels = pod.metadata.labels or {}
    return all(labels.get(k) == v for k, v in HELPER_LABELS.items())


def find(
    cluster: Cluster,
    namespace: str,
    pvc: str,
    odoo_pods: Sequence[Any],
    sessions: list[str] | None,
    *,
    allow: Sequence[str] = (),
) -> Writers:
    """The pods of `namespace` that mount `pvc` (not `odoo_pods`, not helper pods, not
    `allow`), and the `sessions` (SESSIONS_SQL's lines; None: not read) that come from no
    Odoo pod, each named with its pod when its address is a pod's."""
    pods = cluster.call(f"list the pods in namespace {namespace}",
                        cluster.core.list_namespaced_pod, namespace).items  # fmt: skip
    odoo = {p.metadata.name for p in odoo_pods}
    found = Writers()
    by_ip = {p.status.pod_ip: p for p in pods if p.status and p.status.pod_ip}
    for pod in pods:
        name = pod.metadata.name
        if name in odoo or name in allow or _is_helper(pod) or pod.metadata.deletion_timestamp:
            continue
        if (pod.status.phase if pod.status else None) in ("Failed", "Succeeded"):
            continue
        claims = {v.persistent_volume_claim.claim_name for v in pod.spec.volumes or []
                  if v.persistent_volume_claim}  # fmt: skip
        if pvc in claims:
            owner = _owner(pod)
            found.pods.append(f"pod {name}" + (f" ({owner[0]} {owner[1]})" if owner else "")
                              + f" mounts PVC {pvc}")  # fmt: skip
            found.kubectl.append(_stop(namespace, name, owner))
    odoo_ips = {p.status.pod_ip for p in odoo_pods if p.status and p.status.pod_ip}
    for line in sessions or []:
        address, user, application = [*line.split(" ", 2), "", ""][:3]
        if address in odoo_ips:
            continue
        pod = by_ip.get(address)
        source = f"pod {pod.metadata.name}" if pod is not None else address
        found.sessions.append(f"a session of {user} from {source} (application {application})")
        if pod is not None:
            found.kubectl.append(_stop(namespace, pod.metadata.name, _owner(pod)))
    return found


def _stop(namespace: str, pod: str, owner: tuple[str, str] | None) -> str:
    if owner is not None and owner[0] in ("deployment", "statefulset"):
        return f"`kubectl -n {namespace} scale {owner[0]} {owner[1]} --replicas=0`"
    return f"`kubectl -n {namespace} delete pod {pod}`"


def controllers(cluster: Cluster, namespace: str, deployment: Any) -> list[str]:
    """What scales the deployment besides a pull, each with how to pause it: HPAs that
    target it, and the Argo CD application or Flux object its labels name."""
    name = deployment.metadata.name
    said = []
    labels = deployment.metadata.labels or {}
    annotations = deployment.metadata.annotations or {}
    if app := annotations.get(ARGO_ANNOTATION, "").split(":", 1)[0] or labels.get(ARGO_LABEL):
        said.append(_argo(app, name))
    for group, (kind, command) in FLUX_KINDS.items():
        if flux := labels.get(f"{group}/name"):
            where = labels.get(f"{group}/namespace", namespace)
            said.append(
                f"deployment {name} is applied by Flux {kind} {where}/{flux}, which puts its "
                f"replica count back: suspend it first (`flux suspend {command} {flux} -n "
                f"{where}`; `flux resume {command} {flux} -n {where}` after)"
            )
    try:
        from kubernetes import client

        hpas = cluster.call(
            f"list the horizontal pod autoscalers in namespace {namespace}",
            client.AutoscalingV2Api(cluster.api_client).list_namespaced_horizontal_pod_autoscaler,
            namespace,
        ).items
    except KubeError as e:  # no such API, or no right to list them: said, not fatal
        said.append(f"(could not look for autoscalers of deployment {name}: {e})")
        hpas = []
    for hpa in hpas:
        ref = hpa.spec.scale_target_ref
        if ref.kind == "Deployment" and ref.name == name:
            said.append(
                f"horizontal pod autoscaler {hpa.metadata.name} scales deployment {name} "
                f"({hpa.spec.min_replicas or 1} to {hpa.spec.max_replicas}); it leaves a "
                "deployment at 0 alone, but scales it again once anything brings it above 0: "
                f"`kubectl -n {namespace} delete hpa {hpa.metadata.name}` to stop it (and "
                "apply it again after)"
            )
    return said


def _argo(app: str, deployment: str) -> str:
    return (
        f"deployment {deployment} is managed by Argo CD application {app}: with self-heal it "
        "scales Odoo back up during the pull; turn automated sync off first (`argocd app set "
        f"{app} --sync-policy none`, or `kubectl -n argocd patch application {app} --type "
        'merge -p \'{"spec":{"syncPolicy":{"automated":null}}}\'`)'
    )
