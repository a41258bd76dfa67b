"""`plan` and `pull`: the seed's "Loading Odoo Data" procedure, as one command that cleans up.

Steps of a pull (`plan` shows them, with sizes, and changes nothing):
1. preflight: the deployment, its scale, the PVC it mounts, the database pod and
   its container, `pg_dump` and `psql` there, the database;
2. scale the Odoo deployment to 0 and wait until its pods are gone;
3. `pg_dump` in the database pod, its output streamed into the sink (an
   odbox-backup repository's objects, or the zip's `dump.sql`);
4. a helper pod that mounts the PVC read-only; the filestore's file list, then
   a `tar` of the files not already in the repository, streamed and unpacked
   file by file into the sink (no tarball anywhere);
5. the snapshot's manifest (or the zip's `manifest.json`) last;
6. whatever happened: the helper pod is deleted, and the deployment is scaled
   back to its replica count unless the pull succeeded without --scale-back.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate.kube import Cluster, CommandFailed, KubeError, lines
from k8s_migrate.sinks import Facts, Sink
from odbox_backup.backup import Progress, odoo_version_of, pg_version_text
from odbox_common.console import human_size
from odbox_common.errors import ToolError, UsageError
from odbox_common.signals import interrupts_as_exceptions, uninterrupted

# The file list goes to tar on stdin, ended by a line no file name can be: a v4 exec
# cannot close stdin, so `-T -` alone would wait for ever there.
TAR_SCRIPT = (
    'cd -- "$1" || exit 1; '
    'while IFS= read -r f; do [ "$f" = "$2" ] && break; printf "%s\\n" "$f"; done '
    "| tar -cf - -T -"
)
LIST_SCRIPT = 'cd -- "$1" || exit 1; du -s -k . && find . -type f'


CLEANUP_TRIES = 5  # scale-back attempts, 1+2+4+8 s apart


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

    @property
    def filestore(self) -> str:
        path = (self.filestore_path or f"filestore/{self.db_name}").strip("/")
        if not path or ".." in path.split("/"):
            raise UsageError(f"--filestore-path {self.filestore_path!r} is not a path in the PVC")
        return path


@dataclass
class Found:
    """What preflight found."""

    replicas: int
    odoo_pods: list[str]
    odoo_container: str
    mount: str  # where the Odoo container mounts the PVC
    image: str  # the helper pod's image
    pg_dump: str
    db_bytes: int
    filestore_bytes: int | None = None  # known when an Odoo pod runs (plan) or after listing
    filestore_files: int | None = None
    steps: list[str] = field(default_factory=list)


def _psql(target: Target, sql: str) -> list[str]:
    command = ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", target.db_name, "-c", sql]
    if target.db_user:
        command[1:1] = ["-U", target.db_user]
    return command


def preflight(cluster: Cluster, target: Target, *, sizes_from_odoo: bool) -> Found:
    """Check that everything exists, read-only; with `sizes_from_odoo`, the filestore's size
    from a running Odoo pod (plan; a pull measures it in the helper pod)."""
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
    replicas = cluster.replicas(ns, target.deployment)
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
    container, mount = mounted[0]
    pods = [p for p in cluster.pods_of(ns, deployment) if not p.metadata.deletion_timestamp]

    pod = cluster.exists(
        f"read pod {ns}/{target.db_pod}", cluster.core.read_namespaced_pod, target.db_pod, ns
    )
    if pod is None:
        raise UsageError(f"there is no pod {target.db_pod} in namespace {ns}")
    names = [c.name for c in pod.spec.containers]
    if target.db_container and target.db_container not in names:
        raise UsageError(
            f"pod {target.db_pod} has no container {target.db_container} "
            f"(it has {', '.join(names)})"
        )
    if (pod.status.phase if pod.status else None) != "Running":
        raise UsageError(f"pod {target.db_pod} is not running ({pod.status.phase})")
    try:
        version = cluster.run(ns, target.db_pod, target.db_container, ["pg_dump", "--version"])
    except CommandFailed as e:
        raise PullFailed(f"pg_dump does not run in pod {target.db_pod}: {e}") from e
    try:
        size = cluster.run(
            ns,
            target.db_pod,
            target.db_container,
            _psql(target, "SELECT pg_database_size(current_database())"),
        )
    except CommandFailed as e:
        raise PullFailed(
            f"cannot read database {target.db_name} in pod {target.db_pod}: {e}"
        ) from e
    found = Found(
        replicas=replicas,
        odoo_pods=[p.metadata.name for p in pods],
        odoo_container=container.name,
        mount=mount.mount_path,
        image=target.helper_image or container.image,
        pg_dump=version.decode(errors="replace").strip(),
        db_bytes=int(size.strip() or 0),
    )
    running = [p.metadata.name for p in pods if p.status and p.status.phase == "Running"]
    if sizes_from_odoo and running:
        sub = (mount.sub_path or "").strip("/")
        rel = target.filestore
        if sub and not (rel == sub or rel.startswith(sub + "/")):
            found.steps.append(f"(the Odoo container mounts only {sub}/ of the PVC)")
        else:
            inside = rel[len(sub) :].lstrip("/") if sub else rel
            folder = f"{mount.mount_path.rstrip('/')}/{inside}"
            try:
                out = cluster.run(
                    ns,
                    running[0],
                    container.name,
                    ["sh", "-c", LIST_SCRIPT, "sh", folder],
                    limit=1 << 30,
                )
            except CommandFailed as e:
                raise PullFailed(
                    f"cannot read the filestore {folder} in pod {running[0]}: {e}"
                ) from e
            listing = list(lines(out))
            found.filestore_bytes = int(listing[0].split()[0]) * 1024 if listing else 0
            found.filestore_files = len(listing) - 1
    return found


def steps(target: Target, found: Found, sink_text: str, scale_back: bool) -> list[str]:
    """What a pull would do, each step with the sizes found."""
    ns = target.namespace
    fs = (
        f"{found.filestore_files} files, {_size(found.filestore_bytes)}"
        if found.filestore_bytes is not None
        else "size known once the helper pod runs"
    )
    pg_user = f" -U {target.db_user}" if target.db_user else ""
    return [
        f"scale deployment {ns}/{target.deployment} from {found.replicas} to 0 and wait until "
        f"its pods are gone ({', '.join(found.odoo_pods) or 'none running'})",
        f"run `pg_dump{pg_user} {target.db_name}` in pod {target.db_pod} "
        f"({found.pg_dump}; database {_size(found.db_bytes)}) into {sink_text}",
        f"start a helper pod (image {found.image}) with PVC {target.pvc} mounted read-only",
        f"stream a tar of {target.filestore}/ ({fs}) into {sink_text}",
        "delete the helper pod; "
        + (
            f"scale {target.deployment} back to {found.replicas}"
            if scale_back
            else f"leave {target.deployment} at 0 (--scale-back restores {found.replicas})"
        ),
    ]


def _size(n: int | None) -> str:
    return "unknown" if n is None else human_size(n)


@dataclass
class Pulled:
    summary: str
    dump_bytes: int = 0
    tar_bytes: int = 0
    files: int = 0
    reused_files: int = 0
    cleanup: list[str] = field(default_factory=list)


def pull(
    cluster: Cluster,
    target: Target,
    sink: Sink,
    progress: Progress,
    *,
    scale_back: bool = False,
    say: Any = print,
) -> Pulled:
    """Run every step; the cluster is put back whatever fails (see the module's doc)."""
    ns = target.namespace
    found = preflight(cluster, target, sizes_from_odoo=False)
    helper = f"k8s-migrate-{secrets.token_hex(4)}"
    helper_started = False
    scaled = False
    result = Pulled("")
    ok = False
    with interrupts_as_exceptions():
        try:
            if found.replicas:
                say(f"scaling deployment {ns}/{target.deployment} from {found.replicas} to 0")
                scaled = True
                cluster.scale(ns, target.deployment, 0)
            deployment = cluster.call(
                f"read deployment {ns}/{target.deployment}",
                cluster.apps.read_namespaced_deployment,
                target.deployment,
                ns,
            )
            cluster.wait_until(
                f"the pods of {target.deployment} to go",
                lambda: not cluster.pods_of(ns, deployment),
                target.timeout,
            )
            facts = _facts(cluster, target)
            result.dump_bytes = _dump(cluster, target, sink, found, progress)
            say(f"starting helper pod {ns}/{helper} (image {found.image}) with PVC {target.pvc}")
            helper_started = True
            cluster.start_helper(ns, helper, found.image, target.pvc,
                                 like=deployment.spec.template.spec)  # fmt: skip
            cluster.wait_running(ns, helper, target.timeout)
            _filestore(cluster, target, helper, sink, progress, result)
            progress.phase("writing the snapshot")
            with uninterrupted():  # once the manifest is written, the pull has succeeded
                result.summary = sink.commit(
                    facts, origin=f"{cluster.context}/{ns}/{target.deployment}"
                )
                ok = True
        except BaseException:
            with uninterrupted():
                sink.abort()
            raise  # KeyboardInterrupt too: the runner says "interrupted" and exits 130
        finally:
            with uninterrupted():
                result.cleanup = _cleanup(
                    cluster,
                    target,
                    helper if helper_started else None,
                    found.replicas if scaled and (not ok or scale_back) else None,
                    say,
                )
    return result


def _cleanup(
    cluster: Cluster, target: Target, helper: str | None, replicas: int | None, say: Any
) -> list[str]:
    """Delete the helper pod and scale back; each failure is said, and both are tried."""
    ns = target.namespace
    problems = []
    if helper is not None:
        try:
            cluster.delete_pod(ns, helper)
            say(f"deleted helper pod {ns}/{helper}")
        except Exception as e:  # reported; the scale-back must still run
            problems.append(f"{e}: delete it with `kubectl -n {ns} delete pod {helper}`")
    if replicas is not None:
        for attempt in range(CLEANUP_TRIES):  # the blip that failed the pull may pass
            try:
                cluster.scale(ns, target.deployment, replicas)
                say(f"scaled deployment {ns}/{target.deployment} back to {replicas}")
                break
            except Exception as e:  # reported below, with the command that fixes it
                refused = getattr(e.__cause__, "status", 0) in range(400, 500)  # no use retrying
                if attempt + 1 < CLEANUP_TRIES and not refused:
                    time.sleep(2**attempt)
                    continue
                problems.append(
                    f"{e}: run `kubectl -n {ns} scale deployment {target.deployment} "
                    f"--replicas={replicas}`"
                )
    for problem in problems:
        say(f"cleanup failed: {problem}")
    return problems


def _facts(cluster: Cluster, target: Target) -> Facts:
    ns, pod, container = target.namespace, target.db_pod, target.db_container
    version = int(cluster.run(ns, pod, container, _psql(target, "SHOW server_version_num")).strip())
    sql = (
        "SELECT name || '=' || coalesce(latest_version, '') FROM ir_module_module "
        "WHERE state = 'installed' ORDER BY name"
    )
    has = cluster.run(
        ns, pod, container, _psql(target, "SELECT to_regclass('ir_module_module') IS NOT NULL")
    )
    modules: dict[str, str] = {}
    if has.strip() == b"t":
        for line in lines(cluster.run(ns, pod, container, _psql(target, sql), limit=16 << 20)):
            name, _, latest = line.partition("=")
            modules[name] = latest
    return Facts(target.db_name, pg_version_text(version), modules, odoo_version_of(modules))


def _dump(cluster: Cluster, target: Target, sink: Sink, found: Found, progress: Progress) -> int:
    command = ["pg_dump", *sink.dump_options, "-d", target.db_name]
    if target.db_user:
        command[1:1] = ["-U", target.db_user]
    progress.phase(f"pg_dump {target.db_name} in pod {target.db_pod}", found.db_bytes or None)
    with cluster.exec(target.namespace, target.db_pod, target.db_container, command) as stream:
        sink.add_dump(_Counting(stream, progress))
        stream.finish()
        return stream.received


def _filestore(
    cluster: Cluster, target: Target, helper: str, sink: Sink, progress: Progress, result: Pulled
) -> None:
    ns = target.namespace
    folder = f"/pvc/{target.filestore}"
    listing = list(
        lines(
            cluster.run(
                ns, helper, "helper", ["sh", "-c", LIST_SCRIPT, "sh", folder], limit=1 << 30
            )
        )
    )
    total = int(listing[0].split()[0]) * 1024 if listing else 0
    names = [line[2:] if line.startswith("./") else line for line in listing[1:]]
    wanted = [name for name in names if not sink.reuse(name)]
    result.files, result.reused_files = len(names), len(names) - len(wanted)
    progress.phase(
        f"tar of {target.filestore}/ in helper pod: {len(wanted)} files"
        + (f" ({result.reused_files} already in the repository)" if result.reused_files else ""),
        total or None,
    )
    if not wanted:
        return
    end = f"--end-{secrets.token_hex(8)}--"
    stream = cluster.exec(
        ns, helper, "helper", ["sh", "-c", TAR_SCRIPT, "sh", folder, end], stdin=True
    )
    with stream:
        feeder_error: list[BaseException] = []

        def feed() -> None:
            try:
                for start in range(0, len(wanted), 1000):
                    stream.write_stdin(
                        "".join(f"./{n}\n" for n in wanted[start : start + 1000]).encode(
                            errors="surrogateescape"
                        )
                    )
                stream.write_stdin(f"{end}\n".encode())
                stream.close_stdin()
            except BaseException as e:
                feeder_error.append(e)

        feeder = threading.Thread(target=feed, name="tar-names", daemon=True)
        feeder.start()
        remaining = set(wanted)
        buffered = io.BufferedReader(stream, 1 << 20)
        try:
            with tarfile.open(fileobj=buffered, mode="r|") as tar:
                for member in tar:
                    if not member.isreg():
                        continue
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    if name not in remaining:
                        raise PullFailed(f"tar sent {name!r}, which was not asked for")
                    content = tar.extractfile(member)
                    assert content is not None
                    sink.add_file(name, member.size, _Counting(content, progress))
                    remaining.discard(name)
        except tarfile.TarError as e:
            raise PullFailed(
                f"the tar stream from pod {helper} is damaged or cut short after "
                f"{stream.received} bytes: {e}"
            ) from e
        stream.finish()
        feeder.join(timeout=5)
        if feeder_error and not isinstance(feeder_error[0], KubeError):
            raise feeder_error[0]
        if remaining:
            example = sorted(remaining)[0]
            raise PullFailed(
                f"tar did not send {len(remaining)} of the files listed "
                f"(e.g. {example}); nothing was written"
            )
        result.tar_bytes = stream.received


class _Counting:
    """A reader that advances the progress bar by what is read through it."""

    def __init__(self, stream: Any, progress: Progress) -> None:
        self.stream = stream
        self.progress = progress

    def readinto(self, buffer: Any) -> int:
        n = int(self.stream.readinto(buffer) or 0)
        self.progress.advance(n)
        return n

    def read(self, size: int = -1) -> bytes:
        data = bytes(self.stream.read(size))
        self.progress.advance(len(data))
        return data


def describe_plan(cluster: Cluster, target: Target, sink_text: str, scale_back: bool) -> list[str]:
    found = preflight(cluster, target, sizes_from_odoo=True)
    return [*steps(target, found, sink_text, scale_back), *found.steps]
