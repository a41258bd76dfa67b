"""Steps 2 to 4 of a pull, once preflight found everything: the lease, the helper pod
(started and checked while Odoo still runs), the scale-down, the dump and the filestore
streamed into the sink, and the look for anyone back before the snapshot is written.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate import filestore, writers
from k8s_migrate.filestore import NO_FOLDER, Counting, Listing, Sent
from k8s_migrate.kube import Cluster, CommandFailed, KubeError, conflict, lines, refused
from k8s_migrate.lease import PULLING, Owner, held
from k8s_migrate.preflight import ANNOTATION, Found, PullFailed, Target, helper_roots, no_folder
from k8s_migrate.sinks import Facts, Sink, plural
from odbox_backup.backup import odoo_version_of, pg_version_text
from odbox_common.console import human_size
from odbox_common.progress import Progress

LEASE_TRIES = 5  # a 409 on taking the lease, with nobody else's lease: read it again, retry


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
class Changed:
    """What a pull changed so far, for its cleanup."""

    leased: bool = False  # PULLING holds this pull's name: nothing was changed before
    helper: str | None = None
    annotated: bool = False  # ANNOTATION set by this pull (or the stopped one)
    scaled: bool = False  # to 0 by this pull (or by the stopped one it takes over from)


def check_database_from_helper(cluster: Cluster, target: Target, found: Found, helper: str,
                       say: Any) -> None:  # fmt: skip
    """--db-host: pg_dump's version, the connection, the size and the sessions, from the
    helper pod, where the dump will run (before Odoo is scaled down when it already runs)."""
    found.db = target.database(helper, "helper")
    found.pg_dump, server, found.db_bytes, sessions = found.db.check(cluster, writers.SESSIONS_SQL)
    found.server_version = pg_version_text(server)
    say(f"{found.pg_dump} in helper pod {target.namespace}/{helper}; server "
        f"{found.server_version} at {target.db_host}:{target.db_port}; database "
        f"{human_size(found.db_bytes)}")  # fmt: skip
    others = writers.find(cluster, target.namespace, target.pvc, found.pods, sessions,
                          allow=[helper])  # fmt: skip
    if not others:
        return
    if not target.force:
        raise PullFailed(
            f"other writers of Odoo's data: {others.text()}; no snapshot was written: "
            "stop them too, or pass --force to pull while they run"
        )
    say(f"warning: pulling while other writers run (--force): {others.text()}")


def lease_scale_and_transfer(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    found: Found,
    changed: Changed,
    result: Pulled,
    say: Any,
) -> Facts:
    """Steps 2 to 4 of pull.py's doc; what the manifest says of the database."""
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
    take_lease(cluster, target, found, changed, say)
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
    cluster.start_helper(ns, helper, found.image, target.pvc, helper_roots(found)[1:],
                         like=template, deployment=name)  # fmt: skip
    if cluster.wait_running(ns, helper, target.timeout, until_blocked=True) and target.db_host:
        check_database_from_helper(cluster, target, found, helper, say)  # while Odoo still runs
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
    if target.db_host and not found.pg_dump:
        check_database_from_helper(cluster, target, found, helper, say)
    listing = _list_filestore(
        cluster, target, helper, found
    )  # before the dump: a refusal costs none
    facts = _read_facts(cluster, target, found)
    result.dump_bytes = _dump_database(cluster, target, sink, found, progress)
    _send_filestore(cluster, target, helper, sink, progress, result, listing)
    _recheck_nobody_came_back(cluster, target, found, helper, say)
    progress.phase(sink.finishing)
    return facts


def _recheck_nobody_came_back(
    cluster: Cluster, target: Target, found: Found, helper: str, say: Any
) -> None:
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
        sessions = list(lines(found.db.run(cluster, found.db.psql(writers.SESSIONS_SQL))))
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


def take_lease(cluster: Cluster, target: Target, found: Found, changed: Changed, say: Any) -> None:
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
            changed.annotated = ANNOTATION in annotations  # removed again if the pull fails
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


def _read_facts(cluster: Cluster, target: Target, found: Found) -> Facts:
    version, modules = found.db.facts(cluster)
    return Facts(target.db_name, pg_version_text(version), modules, odoo_version_of(modules))


def _dump_database(
    cluster: Cluster, target: Target, sink: Sink, found: Found, progress: Progress
) -> int:
    progress.phase(f"pg_dump {target.db_name} in {found.db.place}", found.db_bytes or None)
    return found.db.dump(cluster, sink.dump_options, lambda s: sink.add_dump(Counting(s, progress)))


def _list_filestore(cluster: Cluster, target: Target, helper: str, found: Found) -> Listing:
    """The filestore's size, files and symlinks, from the helper pod; symlinks that leave
    the PVC stop the pull here, by name, before any file moves."""
    ns = target.namespace
    try:
        listing = filestore.scan(
            cluster, ns, helper, "helper", f"/pvc/{target.filestore}", helper_roots(found),
            files=True, what=f"the file list of {target.filestore}/ in helper pod {ns}/{helper}",
        )  # fmt: skip
    except CommandFailed as e:
        if e.code == NO_FOLDER:
            raise no_folder(target, cluster, helper, "helper", "/pvc") from e
        raise
    filestore.check_links(listing, target.pvc, target.filestore)
    return listing


def _send_filestore(
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
