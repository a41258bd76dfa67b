"""`plan` and `pull`: the seed's "Loading Odoo Data" procedure, as one command that cleans up.

Steps of a pull (`plan` shows them, with sizes, and changes nothing):
1. preflight: the deployment, its scale, the PVC it mounts, the database pod and
   its container, `pg_dump` and `psql` there, the database, and the filestore's
   folder (from a running Odoo pod; with none running, in the helper pod before
   the dump); helper pods a killed pull left behind;
2. the lease: `k8s-migrate.odbox/pulling` set to this pull (host, pid; see lease.py),
   with the deployment's replica count in `k8s-migrate.odbox/replicas`, in one PATCH
   at the resourceVersion preflight read (another pull under way, or one that took
   the lease meanwhile: exit 4, nothing changed); then helper pods a killed pull left
   are deleted (so a pull killed with SIGKILL loses nothing: the next one finds both
   annotations, its owner gone, and puts that count back as the killed one would
   have), the deployment is scaled to 0 and its pods waited for;
3. a helper pod that mounts the PVC read-only starts while `pg_dump` runs in the
   database pod, its output streamed into the sink (an odbox-backup repository's
   objects, or the zip's `dump.sql`);
4. in the helper pod, the filestore's file list, then a `tar` of the files not
   already in the repository, streamed and unpacked file by file into the sink
   (no tarball anywhere);
5. the snapshot's manifest (or the zip's `manifest.json`) last;
6. whatever happened: the helper pod is deleted, and the deployment is scaled
   back to its replica count (and the annotations removed) unless the pull
   succeeded without --scale-back; then Odoo stays at 0, deliberately, and
   `k8s-migrate.odbox/replicas` keeps the count (for a later --scale-back, or a
   human): a later pull that fails leaves it at 0, as it found it.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate import filestore, writers
from k8s_migrate.filestore import NO_FOLDER, Counting, Listing, Sent
from k8s_migrate.kube import Cluster, CommandFailed, KubeError, conflict, lines, refused
from k8s_migrate.lease import PULLING, STOPPED, Owner, held
from k8s_migrate.sinks import Facts, Sink, plural
from odbox_backup.backup import Progress, odoo_version_of, pg_version_text
from odbox_common.console import count_of, human_size
from odbox_common.errors import ExitCode, ToolError, UsageError
from odbox_common.signals import interrupts_as_exceptions, uninterrupted

# The deployment's replica count, noted on it before it is scaled to 0: a pull killed
# where it cannot clean up (SIGKILL, a lost laptop) leaves it for the next pull and humans.
ANNOTATION = "k8s-migrate.odbox/replicas"
LEASE_TRIES = 5  # a 409 on taking the lease, with nobody else's lease: read it again, retry
CLEANUP_TRIES = 5  # scale-back attempts, 1+2+4+8 s apart


class PullFailed(ToolError):
    """The pull stopped; the cluster was put back as it was."""


class Interrupted(ToolError):
    """Ctrl-C, SIGTERM or SIGHUP; the line says whether the cluster was touched."""

    exit_code = ExitCode.INTERRUPTED


class CleanupFailed(ToolError):
    """The pull stopped (or worked), and putting the cluster back failed too."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
    odoo_container: str
    mount: str  # where the Odoo container mounts the PVC
    mount_sub: str  # the PVC's folder it mounts there (subPath; "" for all of it)
    image: str  # the helper pod's image
    db_container: str
    pg_dump: str  # its --version
    server_version: str  # the server's, e.g. 16.2
    db_bytes: int
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


def _psql(target: Target, sql: str, *more: str) -> list[str]:
    command = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", target.db_name, "-c", sql]
    for query in more:
        command += ["-c", query]
    if target.db_user:
        command[1:1] = ["-U", target.db_user]
    return command


FATAL = re.compile(r'FATAL:\s+((?:database|role) "[^"]*" does not exist)')
# libpq without a user name for the process's uid (Bitnami's images run as 1001, unnamed)
NO_LOCAL_USER = re.compile(r"local user with ID \d+ does not exist")
NEEDS_PASSWORD = re.compile(r"fe_sendauth: no password supplied|password authentication failed")
# The password reaches psql and pg_dump as PGPASSWORD, read from stdin: never in an argv
# (the exec request's URL, the API server's audit log, `ps` in the pod).
PASSWORD_SCRIPT = 'IFS= read -r PGPASSWORD; export PGPASSWORD; exec "$@"'  # noqa: S105 (no secret)


def _db_command(target: Target, command: list[str]) -> tuple[list[str], bytes | None]:
    """The command to exec in the database pod, and what to send on its stdin."""
    if target.db_password is None:
        return command, None
    return ["sh", "-c", PASSWORD_SCRIPT, "sh", *command], f"{target.db_password}\n".encode()


def _db_run(cluster: Cluster, target: Target, container: str, command: list[str],
            limit: int = 1 << 20) -> bytes:  # fmt: skip
    wrapped, feed = _db_command(target, command)
    return cluster.run(target.namespace, target.db_pod, container, wrapped, limit=limit,
                       what=f"run {command[0]} in pod {target.namespace}/{target.db_pod}",
                       feed=feed)  # fmt: skip


def _psql_failed(target: Target, e: CommandFailed) -> ToolError:
    """A database or role that does not exist is the command line's fault: one usage line
    with the server's reason; anything else stays a failure with psql's own words."""
    where = f"pod {target.namespace}/{target.db_pod}"
    if match := FATAL.search(str(e)):
        option = "--db-name" if match[1].startswith("database") else "--db-user"
        return UsageError(f"{match[1]} in {where} (check {option})")
    if match := NO_LOCAL_USER.search(str(e)):
        return UsageError(
            f"psql in {where} cannot tell which role to connect as ({match[0]}: the container "
            "runs as a user with no name, as Bitnami's images do): give --db-user (e.g. "
            "postgres), and --db-password-secret NAME/KEY if the server asks for a password"
        )
    if NEEDS_PASSWORD.search(str(e)):
        given = (
            "the password of --db-password-secret was refused"
            if target.db_password
            else (
                "the server asks for a password: give --db-password-secret NAME/KEY (Bitnami's "
                "chart keeps it in the Secret of its release, key postgres-password or password)"
            )
        )
        return UsageError(f"cannot connect to database {target.db_name} in {where}: {given}")
    return PullFailed(f"cannot read database {target.db_name} in {where}: {e}")


PG_DUMP_VERSION = re.compile(r"\)\s*(\d+)(?:\.(\d+))?")


def _major(server_version_num: int) -> tuple[int, int]:
    """(16, 0) for 160002; (9, 6) for 90624: before 10 a major version had two numbers."""
    n = server_version_num
    return (n // 10000, 0) if n >= 100000 else (n // 10000, n // 100 % 100)


def _check_pg_dump(target: Target, pg_dump: str, server_version_num: int) -> None:
    """pg_dump refuses a server of a later major version than its own (`aborting because of
    server version mismatch`): found here, before anything changes, not after Odoo is down."""
    match = PG_DUMP_VERSION.search(pg_dump)
    if match is None:
        return  # an unknown text: pg_dump itself will say
    mine = (int(match[1]), int(match[2] or 0) if int(match[1]) < 10 else 0)
    server = _major(server_version_num)
    if mine < server:
        shown = ".".join(map(str, server)) if server[0] < 10 else str(server[0])
        raise UsageError(
            f"{pg_dump} in pod {target.db_pod} cannot dump its server, PostgreSQL "
            f"{pg_version_text(server_version_num)}: pg_dump must be of major version {shown} "
            "or later (check --db-container, or the pod's image)"
        )


def _no_folder(target: Target, cluster: Cluster, pod: str, container: str,
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

    pod = cluster.exists(
        f"read pod {ns}/{target.db_pod}", cluster.core.read_namespaced_pod, target.db_pod, ns
    )
    if pod is None:
        raise UsageError(f"there is no pod {target.db_pod} in namespace {ns}")
    if pod.metadata.name in {p.metadata.name for p in pods}:
        raise UsageError(
            f"pod {target.db_pod} is one of deployment {target.deployment}'s own pods, which "
            "the pull scales to 0: give --db-pod the pod of the PostgreSQL server (its "
            "StatefulSet's, e.g. postgres-0)"
        )
    db_container = _db_container(target, pod)
    if (pod.status.phase if pod.status else None) != "Running":
        raise UsageError(f"pod {target.db_pod} is not running ({pod.status.phase})")
    try:
        version = cluster.run(ns, target.db_pod, db_container, ["pg_dump", "--version"])
    except CommandFailed as e:
        raise PullFailed(f"pg_dump does not run in pod {target.db_pod}: {e}") from e
    try:  # one session: no earlier one of ours, ending, in pg_stat_activity
        first, *sessions = lines(_db_run(cluster, target, db_container, _psql(
            target, "SELECT pg_database_size(current_database()), "
            "current_setting('server_version_num')", writers.SESSIONS_SQL,
        )))  # fmt: skip
    except CommandFailed as e:
        raise _psql_failed(target, e) from e
    size, _, server = first.partition("|")
    pg_dump = version.decode(errors="replace").strip()
    _check_pg_dump(target, pg_dump, int(server))
    found = Found(
        replicas=replicas,
        current=current,
        odoo_pods=[p.metadata.name for p in pods],
        odoo_container=container.name,
        mount=mount.mount_path,
        mount_sub=(mount.sub_path or "").strip("/"),
        image=target.helper_image or container.image,
        db_container=db_container,
        pg_dump=pg_dump,
        server_version=pg_version_text(int(server)),
        db_bytes=int(size.strip() or 0),
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
                             _helper_roots(found)[1:], like=found.template,
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
                raise _no_folder(target, cluster, running[0], container.name,
                                 None if sub else mount.mount_path) from e  # fmt: skip
            raise PullFailed(f"cannot read the filestore {folder} in pod {running[0]}: {e}") from e
        if not sub:
            filestore.check_links(listing, target.pvc, target.filestore)
        found.filestore_checked = True
        if sizes_from_odoo:
            found.filestore_bytes = listing.kib * 1024
            found.filestore_files = len(listing.files)
    return found


def steps(target: Target, found: Found, sink_text: str, scale_back: bool) -> list[str]:
    """What a pull would do, each step with the sizes found."""
    ns, name, n = target.namespace, target.deployment, found.replicas
    fs = (
        f"{count_of(found.filestore_files or 0, 'file')}, {_size(found.filestore_bytes)}"
        if found.filestore_bytes is not None
        else "size known once the helper pod runs"
    )
    pg_user = f" -U {target.db_user}" if target.db_user else ""
    done: list[str] = []
    if found.owner is not None:
        done.append(
            f"note: {held(ns, name, found.owner)}; a pull now stops here (exit 4) and "
            "changes nothing"
        )
    if found.leftovers:
        done.append(
            f"delete the helper pods left by a pull that was killed: {', '.join(found.leftovers)}"
        )
    if found.writers:
        done.append(
            f"note: other writers of Odoo's data: {found.writers.text()}; a pull stops here "
            "(exit 1) unless --force"
        )
    done += [f"note: {line}" for line in found.controllers]
    if found.current:
        done.append(
            f"scale deployment {ns}/{name} from {n} to 0 (noting {n} in its annotation "
            f"{ANNOTATION} first) and wait until its pods are gone "
            f"({', '.join(found.odoo_pods) or 'none running'})"
        )
    elif found.remembered:
        done.append(found.remembered.replace(" is at 0,", " is already at 0,", 1))
    else:
        done.append(f"deployment {ns}/{name} is at 0 replicas: nothing to scale")
    done += [
        f"start a helper pod (image {found.image}) with PVC {target.pvc} mounted read-only",
        f"run `pg_dump{pg_user} {target.db_name}` in pod {target.db_pod} "
        f"(container {found.db_container}; {found.pg_dump}, server {found.server_version}; "
        f"database {_size(found.db_bytes)}) "
        f"into {sink_text}",
        f"stream a tar of {target.filestore}/ ({fs}) into {sink_text}",
    ]
    if not n:
        done.append("delete the helper pod")
    elif scale_back:
        done.append(f"delete the helper pod; scale {name} back to {n} and remove the annotation")
    else:
        done.append(
            f"delete the helper pod; leave {name} at 0 with its annotation "
            f"{ANNOTATION}={n} (--scale-back restores {n})"
            + ("" if found.current or found.stopped else "; if the pull fails, it stays at 0")
        )
    return done


def _size(n: int | None) -> str:
    return "unknown" if n is None else human_size(n)


@dataclass
class Pulled:
    summary: str
    dump_bytes: int = 0
    tar_bytes: int = 0
    files: int = 0
    reused_files: int = 0
    stored_files: int = 0  # files that arrived in this run
    cleanup: list[str] = field(default_factory=list)


@dataclass
class _Changed:
    """What a pull changed so far, for its cleanup."""

    leased: bool = False  # PULLING holds this pull's name: nothing was changed before
    helper: str | None = None
    annotated: bool = False  # ANNOTATION set by this pull (or the stopped one)
    scaled: bool = False  # to 0 by this pull (or by the stopped one it takes over from)


def pull(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    *,
    scale_back: bool = False,
    say: Any = print,
) -> Pulled:
    """Run every step; the cluster is put back whatever fails (see the module's doc).

    A cleanup that fails too is in the error raised (CleanupFailed), with the kubectl
    command that finishes it; after a pull that worked, in `Pulled.cleanup`."""
    changed = _Changed()
    try:
        return _pull(cluster, target, sink, progress, changed, scale_back, say)
    except KeyboardInterrupt as e:
        if not changed.leased:
            raise Interrupted(
                "interrupted before anything was changed; no snapshot was written"
            ) from e
        raise Interrupted("interrupted; the cluster was put back, no snapshot was written") from e


def _pull(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    changed: _Changed,
    scale_back: bool,
    say: Any,
) -> Pulled:
    result = Pulled("")
    ok = False
    error: BaseException | None = None
    found: Found | None = None
    with interrupts_as_exceptions():
        try:
            found = preflight(cluster, target, sizes_from_odoo=False, refuse_live=True)
            facts = _steps(cluster, target, sink, progress, found, changed, result, say)
            origin = f"{cluster.context}/{target.namespace}/{target.deployment}"
            with uninterrupted():  # once the manifest is written, the pull has succeeded
                result.summary = sink.commit(facts, origin=origin)
                ok = True
        except BaseException as e:
            error = e
            with uninterrupted():
                sink.abort()
            raise  # KeyboardInterrupt too: `pull` says what was put back, and exits 130
        finally:
            if found is not None and changed.leased:  # else nothing was changed
                put_back, unannotate = _afterwards(found, changed, ok, scale_back)
                with uninterrupted():
                    result.cleanup = _cleanup(
                        cluster, target, changed.helper, put_back, unannotate, say
                    )
                if result.cleanup and error is not None:
                    raise _with_cleanup(error, result.cleanup) from error
    return result


def _afterwards(
    found: Found, changed: _Changed, ok: bool, scale_back: bool
) -> tuple[int | None, list[str]]:
    """The count to scale back to (None: leave it), and the annotations to remove then.

    After a failure Odoo goes back to its count if this pull (or the stopped one it takes
    over from) scaled it down; one an earlier pull left at 0 on purpose stays at 0. After
    success, only --scale-back brings it up; otherwise the count stays noted, and only
    PULLING (this pull's lease) goes."""
    n = found.replicas
    if changed.scaled:
        if not ok or scale_back:
            return n, [ANNOTATION, PULLING]
        return None, [PULLING]
    if ok and scale_back and found.remembered:
        return n, [ANNOTATION, PULLING]
    return None, [ANNOTATION, PULLING] if changed.annotated else [PULLING]  # scale-down refused


def _steps(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    found: Found,
    changed: _Changed,
    result: Pulled,
    say: Any,
) -> Facts:
    """Steps 2 to 4 of the module's doc; what the manifest says of the database."""
    ns, name = target.namespace, target.deployment
    if found.writers:
        if not target.force:
            raise PullFailed(
                f"other writers of Odoo's data: {found.writers.text()}; nothing was changed: "
                "stop them too, or pass --force to pull while they run"
            )
        say(f"warning: pulling while other writers run (--force): {found.writers.text()}")
    for line in found.controllers:
        say(f"note: {line}")
    _take_lease(cluster, target, found, changed, say)
    if found.leftovers:
        for pod in found.leftovers:
            cluster.delete_pod(ns, pod)
        say(f"deleted helper pods left by a pull that was killed: {', '.join(found.leftovers)}")
    # The helper first: one that cannot start (its image, admission, its config) is found
    # while Odoo still runs. One waiting for what Odoo holds (its node's room, its
    # ReadWriteOnce volume on another node) goes on once Odoo is down.
    helper = f"k8s-migrate-{secrets.token_hex(4)}"
    say(f"starting helper pod {ns}/{helper} (image {found.image}) with PVC {target.pvc}")
    changed.helper = helper
    template = found.template
    cluster.start_helper(ns, helper, found.image, target.pvc, _helper_roots(found)[1:],
                         like=template, deployment=name)  # fmt: skip
    cluster.wait_running(ns, helper, target.timeout, until_blocked=True)
    if found.remembered:
        say(found.remembered)
        changed.annotated = changed.scaled = found.stopped  # put back as it would have
    elif found.current:
        changed.annotated = True  # with the lease
        say(f"scaling deployment {ns}/{name} from {found.current} to 0")
        changed.scaled = True
        try:
            cluster.scale(ns, name, 0)
        except KubeError as e:
            changed.scaled = not refused(e)  # refused: still at its count
            raise
    deployment = cluster.call(
        f"read deployment {ns}/{name}", cluster.apps.read_namespaced_deployment, name, ns
    )
    cluster.wait_until(
        f"the pods of {name} to go", lambda: not cluster.pods_of(ns, deployment), target.timeout
    )
    cluster.wait_running(ns, helper, target.timeout)
    listing = _list(cluster, target, helper, found)  # before the dump: a refusal costs none
    facts = _facts(cluster, target, found)
    result.dump_bytes = _dump(cluster, target, sink, found, progress)
    _filestore(cluster, target, helper, sink, progress, result, listing)
    _recheck(cluster, target, found, helper, say)
    progress.phase(sink.finishing)
    return facts


def _recheck(cluster: Cluster, target: Target, found: Found, helper: str, say: Any) -> None:
    """Before the snapshot is written: Odoo still at 0 with no pods, and nobody else on the
    PVC or the database (a session still there after a few seconds: our own pg_dump's
    and psql's take a moment to end). Anything back fails the pull (--force: a warning)."""
    ns, name = target.namespace, target.deployment
    deployment = cluster.call(
        f"read deployment {ns}/{name}", cluster.apps.read_namespaced_deployment, name, ns
    )
    pods = cluster.pods_of(ns, deployment)
    back = []
    if deployment.spec.replicas or pods:
        back.append(
            f"deployment {ns}/{name} was scaled back up to {deployment.spec.replicas or 0} "
            f"during the pull ({plural(len(pods), 'pod')}: "
            f"{', '.join(p.metadata.name for p in pods) or 'none yet'})"
        )
    deadline = time.monotonic() + 5
    while True:
        sessions = list(lines(_db_run(cluster, target, found.db_container,
                                      _psql(target, writers.SESSIONS_SQL))))  # fmt: skip
        if not sessions or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    others = writers.find(cluster, ns, target.pvc, [], sessions, allow=[helper])
    if others:
        back.append(f"other writers of Odoo's data appeared: {others.text()}")
    if not back:
        return
    said = "; ".join(back)
    if target.force:
        say(f"warning: {said}; the snapshot is written all the same (--force)")
        return
    hints = [f" ({'; '.join(found.controllers)})"] if found.controllers else []
    raise PullFailed(
        f"{said}: the data may have changed while it was pulled, so no snapshot was written"
        f"{''.join(hints)}; stop what brings it back and pull again, or pass --force"
    )


def _take_lease(
    cluster: Cluster, target: Target, found: Found, changed: _Changed, say: Any
) -> None:
    """PULLING set to this pull (with ANNOTATION, if Odoo is to be scaled down), at the
    deployment's resourceVersion as preflight read it: a 409 means it changed since. If
    another pull took the lease meanwhile, exit 4 (nothing changed); else (the controller
    updated its status, say) read it again and retry."""
    ns, name = target.namespace, target.deployment
    annotations: dict[str, str | None] = {PULLING: Owner.me().text()}
    if found.current and not found.remembered:
        annotations[ANNOTATION] = str(found.current)
    version = found.resource_version
    for _ in range(LEASE_TRIES):
        try:
            cluster.annotate(ns, name, annotations, resource_version=version)
        except KubeError as e:
            if not conflict(e):
                raise
        else:
            changed.leased = True
            if found.dead_owner is not None:
                here = " on this host" if found.dead_owner.here() else ""
                say(
                    f"the pull that held deployment {ns}/{name} (pid {found.dead_owner.pid}"
                    f"{here} since {found.dead_owner.since}) is gone: taking over"
                )
            return
        deployment = cluster.call(
            f"read deployment {ns}/{name}", cluster.apps.read_namespaced_deployment, name, ns
        )
        lease = (deployment.metadata.annotations or {}).get(PULLING)
        if lease != found.lease:
            raise held(ns, name, Owner.parse(lease))
        if (deployment.spec.replicas or 0) != found.current:
            raise PullFailed(
                f"deployment {ns}/{name} was scaled to {deployment.spec.replicas} meanwhile; "
                "nothing was changed: run the pull again"
            )
        version = deployment.metadata.resource_version
    raise PullFailed(
        f"deployment {ns}/{name} kept changing while this pull took its annotation {PULLING}; "
        "nothing was changed: run the pull again"
    )


def _with_cleanup(error: BaseException, problems: list[str]) -> CleanupFailed:
    """The one error line: what stopped the pull, then what is left to put back by hand."""
    left = "; ".join(problems)
    if isinstance(error, KeyboardInterrupt):
        return CleanupFailed(
            f"interrupted; no snapshot was written, but {left}", ExitCode.INTERRUPTED
        )
    text = str(error) if isinstance(error, ToolError) else f"{type(error).__name__}: {error}"
    code = error.exit_code if isinstance(error, ToolError) else ExitCode.FAILED
    return CleanupFailed(f"{text}; and {left}", code)


def _cleanup(
    cluster: Cluster,
    target: Target,
    helper: str | None,
    replicas: int | None,
    unannotate: list[str],
    say: Any,
) -> list[str]:
    """Delete the helper pod, scale back, then remove the annotations `unannotate`; each
    failure is one phrase with the command that finishes the job, and every step is tried."""
    ns, name = target.namespace, target.deployment
    problems = []
    if helper is not None:
        try:
            cluster.delete_pod(ns, helper)
            say(f"deleted helper pod {ns}/{helper}")
        except Exception as e:  # reported; the scale-back must still run
            problems.append(
                f"the helper pod {ns}/{helper} was NOT deleted ({e}): "
                f"run `kubectl -n {ns} delete pod {helper}`"
            )
    changes: dict[str, str | None] = dict.fromkeys(unannotate)
    if replicas is not None:
        for attempt in range(CLEANUP_TRIES):  # the blip that failed the pull may pass
            try:
                cluster.scale(ns, name, replicas)
                say(f"scaled deployment {ns}/{name} back to {replicas}")
                break
            except Exception as e:  # reported once, with the command that fixes it
                if attempt + 1 < CLEANUP_TRIES and not refused(e):
                    time.sleep(2**attempt)
                    continue
                problems.append(
                    f"deployment {ns}/{name} was NOT put back to {replicas} replicas ({e}): "
                    f"run `kubectl -n {ns} scale deployment {name} --replicas={replicas}`"
                )
                # The count stays noted for the next pull, and the lease says no pull owns
                # it now: the next one (on any host) takes over and puts the count back.
                changes = {PULLING: STOPPED} if PULLING in unannotate else {}
                break
    if changes:
        try:
            cluster.annotate(ns, name, changes)
        except Exception as e:  # harmless: a deployment above 0 is taken at its own count
            say(f"left the annotations {', '.join(changes)} on deployment {ns}/{name} ({e})")
    return problems


def _facts(cluster: Cluster, target: Target, found: Found) -> Facts:
    container = found.db_container
    version = int(_db_run(cluster, target, container, _psql(target, "SHOW server_version_num")))
    sql = (
        "SELECT name || '=' || coalesce(latest_version, '') FROM ir_module_module "
        "WHERE state = 'installed' ORDER BY name"
    )
    has = _db_run(
        cluster,
        target,
        container,
        _psql(target, "SELECT to_regclass('ir_module_module') IS NOT NULL"),
    )
    modules: dict[str, str] = {}
    if has.strip() == b"t":
        for line in lines(_db_run(cluster, target, container, _psql(target, sql), 16 << 20)):
            name, _, latest = line.partition("=")
            modules[name] = latest
    return Facts(target.db_name, pg_version_text(version), modules, odoo_version_of(modules))


def _dump(cluster: Cluster, target: Target, sink: Sink, found: Found, progress: Progress) -> int:
    command = ["pg_dump", *sink.dump_options, "-d", target.db_name]
    if target.db_user:
        command[1:1] = ["-U", target.db_user]
    progress.phase(f"pg_dump {target.db_name} in pod {target.db_pod}", found.db_bytes or None)
    wrapped, feed = _db_command(target, command)
    what = f"run pg_dump in pod {target.namespace}/{target.db_pod}"
    with cluster.exec(target.namespace, target.db_pod, found.db_container, wrapped,
                      stdin=feed is not None, what=what) as stream:  # fmt: skip
        if feed is not None:
            stream.write_stdin(feed)
            stream.close_stdin()
        sink.add_dump(Counting(stream, progress))
        stream.finish()
        return stream.received


def _helper_roots(found: Found) -> list[str]:
    """Where the helper pod mounts the PVC: /pvc, and Odoo's own mount path when Odoo mounts
    all of it (so a symlink made in an Odoo pod, absolute, resolves in the helper too)."""
    return ["/pvc"] + ([found.mount] if not found.mount_sub and found.mount != "/pvc" else [])


def _list(cluster: Cluster, target: Target, helper: str, found: Found) -> Listing:
    """The filestore's size, files and symlinks, from the helper pod; symlinks that leave
    the PVC stop the pull here, by name, before any file moves."""
    ns = target.namespace
    try:
        listing = filestore.scan(
            cluster, ns, helper, "helper", f"/pvc/{target.filestore}", _helper_roots(found),
            files=True, what=f"the file list of {target.filestore}/ in helper pod {ns}/{helper}",
        )  # fmt: skip
    except CommandFailed as e:
        if e.code == NO_FOLDER:
            raise _no_folder(target, cluster, helper, "helper", "/pvc") from e
        raise
    filestore.check_links(listing, target.pvc, target.filestore)
    return listing


def _filestore(
    cluster: Cluster,
    target: Target,
    helper: str,
    sink: Sink,
    progress: Progress,
    result: Pulled,
    listing: Listing,
) -> None:
    ns = target.namespace
    total, names = listing.kib * 1024, listing.files
    listing.files = []  # the names are all that is needed of it now
    wanted = [name for name in names if not sink.reuse(name)]
    result.files, result.reused_files = len(names), len(names) - len(wanted)
    del names
    # du's total (blocks) less what is reused: about what tar sends
    to_send = max(total - sink.reused_bytes, 0) if wanted else 0
    progress.phase(
        f"tar of {target.filestore}/ in helper pod: {plural(len(wanted), 'file')}"
        + (f" ({result.reused_files} already in the repository)" if result.reused_files else ""),
        to_send or None,
    )
    if not wanted:
        return
    sent = Sent()
    what = f"the tar of {target.filestore}/ in helper pod {ns}/{helper}"
    try:
        folder = f"/pvc/{target.filestore}"
        filestore.transfer(cluster, ns, helper, folder, wanted, sink, progress, sent, what)
    finally:
        result.stored_files, result.tar_bytes = sent.stored, sent.tar_bytes


def describe_plan(cluster: Cluster, target: Target, sink_text: str, scale_back: bool) -> list[str]:
    """The steps of `pull` with the sizes found; only GET requests."""
    found = preflight(cluster, target, sizes_from_odoo=True)
    return [*steps(target, found, sink_text, scale_back), *found.steps]
