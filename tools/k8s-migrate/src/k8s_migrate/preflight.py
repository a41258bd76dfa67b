"""Step 1 of a pull, and all of `plan`'s looking: what the pull is of (`Target`) and what
preflight found (`Found`), read-only: the deployment, its scale and its lease, the PVC it
mounts, the database (its pod and container, `pg_dump` and `psql` there; with --db-host
the helper pod checks it once it runs), the filestore's folder and its symlinks (from a
running Odoo pod), other writers, the controllers that scale Odoo back up, helper pods a
killed pull left, and the helper pod as admission would take it (a dry-run create).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate import filestore, writers
from k8s_migrate.database import Database
from k8s_migrate.filestore import NO_FOLDER
from k8s_migrate.kube import Cluster, CommandFailed, KubeError
from k8s_migrate.lease import PULLING, Owner, held
from odbox_backup.backup import pg_version_text
from odbox_common.errors import ToolError, UsageError

# The deployment's replica count, noted on it before it is scaled to 0: a pull killed
# where it cannot clean up (SIGKILL, a lost laptop) leaves it for the next pull and humans.
ANNOTATION = "k8s-migrate.odbox/replicas"


class PullFailed(ToolError):
    """The pull stopped; the cluster was put back as it was."""


@dataclass
class Target:
    namespace: str
    deployment: str
    db_pod: str
    db_name: str
    pvc: str
    db_container: str | None = None
    db_user: str | None = None
    filestore_path: str | None = None  # inside the PVC; default filestore/<db_name>
    helper_image: str | None = None
    timeout: float = 300.0
    force: bool = False  # pull even with other writers, or Odoo back up, seen
    db_password_secret: str | None = None  # NAME/KEY of a Secret with the role's password
    db_password: str | None = field(default=None, repr=False)  # read from it (never shown)
    db_host: str | None = None  # a server with no pod (RDS, Cloud SQL): pg_dump in the helper
    db_port: int = 5432

    def database(self, pod: str, container: str) -> Database:
        return Database(self.namespace, pod, container, self.db_name, self.db_user,
                        self.db_password, self.db_host, self.db_port)  # fmt: skip

    @property
    def filestore(self) -> str:
        """The folder inside the PVC (an absolute --filestore-path is made relative to the
        PVC by `resolve_filestore`, which needs the deployment's mount path)."""
        path = (self.filestore_path or f"filestore/{self.db_name}").strip("/")
        if not path or ".." in path.split("/"):
            raise UsageError(f"--filestore-path {self.filestore_path!r} is not a path in the PVC")
        return path


@dataclass
class Found:
    """What preflight found."""

    replicas: int  # the deployment's count: its scale, or at 0 what ANNOTATION says
    current: int  # its scale now
    odoo_pods: list[str]
    mount: str  # where the Odoo container mounts the PVC
    mount_sub: str  # the PVC's folder it mounts there (subPath; "" for all of it)
    image: str  # the helper pod's image
    db: Database  # where psql and pg_dump run (--db-host: the helper pod, once it exists)
    pg_dump: str  # its --version ("" until checked: --db-host, in the helper pod)
    server_version: str  # the server's, e.g. 16.2
    db_bytes: int
    pods: list[Any] = field(default_factory=list)  # Odoo's, as preflight found them
    leftovers: list[str] = field(default_factory=list)  # helper pods of a killed pull
    resource_version: str | None = None  # the deployment's, as read: the lease is taken at it
    lease: str | None = None  # the PULLING annotation's value, as read
    owner: Owner | None = None  # its owner, if alive (then a pull refuses; plan says so)
    dead_owner: Owner | None = None  # its owner, gone (this host): a pull takes over
    remembered: str | None = None  # the line saying the count came from ANNOTATION
    stopped: bool = False  # at 0 by a pull that was stopped (PULLING), not left there on purpose
    filestore_checked: bool = False  # its folder was seen from a running Odoo pod
    filestore_bytes: int | None = None  # known when an Odoo pod runs (plan) or after listing
    filestore_files: int | None = None
    steps: list[str] = field(default_factory=list)
    template: Any = None  # the deployment's pod template spec (the helper borrows from it)
    writers: writers.Writers = field(default_factory=writers.Writers)  # others on PVC and DB
    controllers: list[str] = field(default_factory=list)  # what scales Odoo back, how to pause


def no_folder(target: Target, cluster: Cluster, pod: str, container: str,
               root: str | None) -> UsageError:  # fmt: skip
    """A missing filestore folder: what the PVC holds (from `root`, its mount path in `pod`)
    and the folder that looks right (Bitnami's chart keeps it in data/filestore/<db>)."""
    said, then = "", "check --filestore-path"
    if root is not None:
        with contextlib.suppress(KubeError):
            said, found = filestore.suggest(cluster, target.namespace, pod, container, root,
                                            target.db_name)  # fmt: skip
            if found is not None:
                then = f"{found} is there: pass --filestore-path {found}"
    return UsageError(f"no folder {target.filestore} in PVC {target.pvc}{said}; {then}")


def _annotated_count(annotations: dict[str, str] | None) -> int:
    value = (annotations or {}).get(ANNOTATION, "")
    return int(value) if value.isdigit() else 0


def _db_container(target: Target, pod: Any) -> str:
    """--db-container, else the pod's `kubectl.kubernetes.io/default-container` (as kubectl
    picks it), else its first container."""
    from k8s_migrate.kube import DEFAULT_CONTAINER

    names = [c.name for c in pod.spec.containers]
    if target.db_container:
        if target.db_container not in names:
            raise UsageError(
                f"pod {target.db_pod} has no container {target.db_container} "
                f"(it has {', '.join(names)})"
            )
        return target.db_container
    default = (pod.metadata.annotations or {}).get(DEFAULT_CONTAINER)
    return str(default) if default in names else str(names[0])


def _db_pod(cluster: Cluster, target: Target, odoo_pods: list[Any]) -> str:
    """The database pod's container, once the pod is found running and not Odoo's own."""
    ns = target.namespace
    pod = cluster.exists(
        f"read pod {ns}/{target.db_pod}", cluster.core.read_namespaced_pod, target.db_pod, ns
    )
    if pod is None:
        raise UsageError(f"there is no pod {target.db_pod} in namespace {ns}")
    if pod.metadata.name in {p.metadata.name for p in odoo_pods}:
        raise UsageError(
            f"pod {target.db_pod} is one of deployment {target.deployment}'s own pods, which "
            "the pull scales to 0: give --db-pod the pod of the PostgreSQL server (its "
            "StatefulSet's, e.g. postgres-0), or --db-host for a server with no pod"
        )
    container = _db_container(target, pod)
    if (pod.status.phase if pod.status else None) != "Running":
        raise UsageError(f"pod {target.db_pod} is not running ({pod.status.phase})")
    return container


def _read_deployment(cluster: Cluster, target: Target) -> Any:
    ns = target.namespace
    if cluster.exists(f"read namespace {ns}", cluster.core.read_namespace, ns) is None:
        raise UsageError(f"there is no namespace {ns} in context {cluster.context}")
    deployment = cluster.exists(
        f"read deployment {ns}/{target.deployment}",
        cluster.apps.read_namespaced_deployment,
        target.deployment,
        ns,
    )
    if deployment is None:
        raise UsageError(f"there is no deployment {target.deployment} in namespace {ns}")
    return deployment


def _pvc_mount(target: Target, deployment: Any) -> tuple[Any, Any]:
    """The container of the deployment that mounts the PVC, and that mount."""
    spec = deployment.spec.template.spec
    volumes = {
        v.name
        for v in spec.volumes or []
        if v.persistent_volume_claim and v.persistent_volume_claim.claim_name == target.pvc
    }
    mounted = [(c, m) for c in spec.containers for m in c.volume_mounts or [] if m.name in volumes]
    if not mounted:
        raise UsageError(
            f"deployment {target.deployment} does not mount PVC {target.pvc}: "
            "give the PVC that holds Odoo's data (its filestore)"
        )
    return mounted[0]


def resolve_filestore(cluster: Cluster, target: Target, deployment: Any = None) -> str | None:
    """An absolute --filestore-path under the Odoo container's mount path of the PVC becomes
    the path inside the PVC (the line saying so is returned); any other absolute path is a
    usage error. A relative one stays as it is (None)."""
    path = target.filestore_path
    if not path or not path.startswith("/"):
        return None
    if deployment is None:
        deployment = _read_deployment(cluster, target)
    _, mount = _pvc_mount(target, deployment)
    base = mount.mount_path.rstrip("/")
    clean = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    if not clean.startswith(base + "/") or ".." in clean.split("/"):
        raise UsageError(
            f"--filestore-path is a path inside the PVC (e.g. filestore/{target.db_name}), "
            f"or under the Odoo pod's mount path {base}"
        )
    inside = "/".join(p for p in ((mount.sub_path or "").strip("/"), clean[len(base) + 1 :]) if p)
    target.filestore_path = inside
    return (
        f"--filestore-path {path} is under the Odoo pod's mount path {base} of PVC "
        f"{target.pvc}: taken as {inside} inside the PVC"
    )


def preflight(
    cluster: Cluster, target: Target, *, sizes_from_odoo: bool, refuse_live: bool = False
) -> Found:
    """Check that everything exists, read-only; with `sizes_from_odoo`, the filestore's size
    from a running Odoo pod (plan; a pull only checks its folder there, and measures it in
    the helper pod). With `refuse_live` (a pull), another live pull's lease stops it at
    once (exit 4); plan notes it."""
    ns = target.namespace
    deployment = _read_deployment(cluster, target)
    if target.db_password_secret and target.db_password is None:
        target.db_password = cluster.secret(ns, target.db_password_secret)
    annotations = deployment.metadata.annotations or {}
    lease = annotations.get(PULLING)
    owner = Owner.parse(lease)
    live = owner if owner is not None and owner.alive() else None
    if live is not None and refuse_live:
        raise held(ns, target.deployment, live)
    notes = [note] if (note := resolve_filestore(cluster, target, deployment)) else []
    current = int(deployment.spec.replicas or 0)  # the scale subresource's value
    replicas, remembered, stopped = current, None, False
    if current == 0 and (noted := _annotated_count(annotations)):
        replicas, stopped = noted, lease is not None
        remembered = (
            f"deployment {ns}/{target.deployment} is at 0, scaled down by that pull; its "
            f"annotation {ANNOTATION} says {noted}"
            if live is not None
            else f"deployment {ns}/{target.deployment} is at 0, left there by a pull that was "
            f"stopped; its annotation {ANNOTATION} says {noted}: {noted} is taken as its "
            "replica count"
            if stopped
            else f"deployment {ns}/{target.deployment} is at 0, as an earlier pull left it; "
            f"its annotation {ANNOTATION} says {noted}"
        )
    if (
        cluster.exists(
            f"read PVC {ns}/{target.pvc}",
            cluster.core.read_namespaced_persistent_volume_claim,
            target.pvc,
            ns,
        )
        is None
    ):
        raise UsageError(f"there is no persistentvolumeclaim {target.pvc} in namespace {ns}")
    container, mount = _pvc_mount(target, deployment)
    pods = [p for p in cluster.pods_of(ns, deployment) if not p.metadata.deletion_timestamp]

    if (
        target.db_host
    ):  # checked in the helper pod, once it runs (see check_from_database_in_helper)
        db, pg_dump, server, size, sessions = target.database("", "helper"), "", 0, 0, None
    else:
        db = target.database(target.db_pod, _db_pod(cluster, target, pods))
        pg_dump, server, size, sessions = db.check(cluster, writers.SESSIONS_SQL)
    found = Found(
        replicas=replicas,
        current=current,
        odoo_pods=[p.metadata.name for p in pods],
        pods=pods,
        mount=mount.mount_path,
        mount_sub=(mount.sub_path or "").strip("/"),
        image=target.helper_image or container.image,
        db=db,
        pg_dump=pg_dump,
        server_version=pg_version_text(server) if server else "",
        db_bytes=size,
        writers=writers.find(cluster, ns, target.pvc, pods, sessions),
        controllers=writers.controllers(cluster, ns, deployment),
        template=deployment.spec.template.spec,
        # a live pull's helper pods are its own: only a dead (or removed) lease leaves any
        leftovers=[] if live is not None else cluster.helper_pods(ns, target.deployment),
        resource_version=deployment.metadata.resource_version,
        lease=lease,
        owner=live,
        dead_owner=owner if live is None else None,
        remembered=remembered,
        stopped=stopped,
        steps=notes,
    )
    try:  # admission (PodSecurity, quotas, policies) says now what it would say to a pull
        cluster.start_helper(ns, "k8s-migrate-dry-run", found.image, target.pvc,
                             helper_roots(found)[1:], like=found.template,
                             deployment=target.deployment, dry_run=True)  # fmt: skip
    except KubeError as e:
        raise PullFailed(f"the helper pod would not be admitted: {e}") from e
    running = [p.metadata.name for p in pods if p.status and p.status.phase == "Running"]
    sub = (mount.sub_path or "").strip("/")
    rel = target.filestore
    if running and sub and not (rel == sub or rel.startswith(sub + "/")):
        if sizes_from_odoo:
            found.steps.append(f"(the Odoo container mounts only {sub}/ of the PVC)")
    elif running:
        inside = rel[len(sub) :].lstrip("/") if sub else rel
        folder = f"{mount.mount_path.rstrip('/')}/{inside}"
        # Symlinks are checked only where the pod sees all of the PVC (else a link to
        # another folder of it looks like one that leaves it): the helper pod checks again.
        try:
            listing = filestore.scan(
                cluster, ns, running[0], container.name, folder,
                [mount.mount_path] if not sub else [],
                files=sizes_from_odoo,
                what=f"the {'file list' if sizes_from_odoo else 'check'} of {folder} in pod "
                f"{ns}/{running[0]}",
            )  # fmt: skip
        except CommandFailed as e:
            if e.code == NO_FOLDER:
                raise no_folder(target, cluster, running[0], container.name,
                                 None if sub else mount.mount_path) from e  # fmt: skip
            raise PullFailed(f"cannot read the filestore {folder} in pod {running[0]}: {e}") from e
        if not sub:
            filestore.check_links(listing, target.pvc, target.filestore)
        found.filestore_checked = True
        if sizes_from_odoo:
            found.filestore_bytes = listing.kib * 1024
            found.filestore_files = len(listing.files)
    return found


def helper_roots(found: Found) -> list[str]:
    """Where the helper pod mounts the PVC: /pvc, and Odoo's own mount path when Odoo mounts
    all of it (so a symlink made in an Odoo pod, absolute, resolves in the helper too)."""
    return ["/pvc"] + ([found.mount] if not found.mount_sub and found.mount != "/pvc" else [])
