"""`pull`: the seed's "Loading Odoo Data" procedure, as one command that cleans up.

Steps of a pull (`plan` shows them, with sizes, and changes nothing):
1. preflight (preflight.py): the deployment, its scale, the PVC it mounts, the database
   pod and its container, `pg_dump` and `psql` there, the database (with --db-host: in
   the helper pod, once it runs), and the filestore's folder (from a running Odoo pod;
   with none running, in the helper pod before the dump); helper pods a killed pull
   left behind;
2. (transfer.py) the lease: `k8s-migrate.odbox/pulling` set to this pull (host, pid; see lease.py),
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
6. (cleanup.py) whatever happened: the helper pod is deleted, and the deployment is scaled
   back to its replica count (and the annotations removed) unless the pull
   succeeded without --scale-back; then Odoo stays at 0, deliberately, and
   `k8s-migrate.odbox/replicas` keeps the count (for a later --scale-back, or a
   human): a later pull that fails leaves it at 0, as it found it.
"""

from __future__ import annotations

from typing import Any

from k8s_migrate.cleanup import put_back, what_to_put_back, with_what_is_left
from k8s_migrate.kube import Cluster
from k8s_migrate.preflight import Found, Target, preflight
from k8s_migrate.sinks import Sink
from k8s_migrate.transfer import Changed, Pulled, lease_scale_and_transfer
from odbox_common.errors import ExitCode, ToolError
from odbox_common.progress import Progress
from odbox_common.signals import interrupts_as_exceptions, uninterrupted


class Interrupted(ToolError):
    """Ctrl-C, SIGTERM or SIGHUP; the line says whether the cluster was touched."""

    exit_code = ExitCode.INTERRUPTED


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
    changed = Changed()
    try:
        return _pull_then_put_back(cluster, target, sink, progress, changed, scale_back, say)
    except KeyboardInterrupt as e:
        if not changed.leased:
            raise Interrupted(
                "interrupted before anything was changed; no snapshot was written"
            ) from e
        raise Interrupted("interrupted; the cluster was put back, no snapshot was written") from e


def _pull_then_put_back(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    changed: Changed,
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
            facts = lease_scale_and_transfer(
                cluster, target, sink, progress, found, changed, result, say
            )
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
                replicas, unannotate = what_to_put_back(found, changed, ok, scale_back)
                with uninterrupted():
                    result.cleanup = put_back(
                        cluster,
                        target,
                        changed.helper,
                        replicas,
                        unannotate,
                        say,
                        watch=not isinstance(error, KeyboardInterrupt),
                    )
                if result.cleanup and error is not None:
                    raise with_what_is_left(error, result.cleanup) from error
    return result
