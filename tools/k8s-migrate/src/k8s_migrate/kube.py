"""The cluster, through the official `kubernetes` client: objects, scaling, pods, and exec.

Exec output is read as a stream (`ExecStream`), not the way the client's
`stream()` helper reads it by default: that one decodes stdout as UTF-8 and
keeps a copy of everything it received in memory (`capture_all`). Here every
exec gets its own `ApiClient` whose requests go through the client's own
`ws_client.websocket_call` with `binary=True, capture_all=False`: bytes as
they came, and nothing kept once read. The exit status comes from the
channel-3 Status the API server sends at the end; a connection that ends
without one is a cut stream, never a success.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from odbox_common.errors import ToolError, UsageError

T = TypeVar("T")
REQUEST_TIMEOUT = (10, 60)  # connect, read: seconds, for every REST call
STDERR_KEPT = 16 << 10  # the start and the end of a command's stderr, for the error line
# The line of stderr that says what went wrong: GNU tar and pg_dump end with a summary
# (`tar: Exiting with failure status due to previous errors`, `pg_dump: detail: …`).
ERROR_LINE = re.compile(
    r"\b(error|fatal|cannot|failed|denied|no such|not found|permission)\b", re.IGNORECASE
)
SUMMARY_LINE = re.compile(r"Exiting with failure status|^\S+: (detail|hint): ")
DETAIL_LINE = re.compile(r"^\S+: (detail|hint): ")
HELPER_LABELS = {
    "app.kubernetes.io/name": "k8s-migrate",
    "app.kubernetes.io/managed-by": "k8s-migrate",
}
# On a helper pod: the deployment whose pull made it (a later pull removes only its own).
HELPER_FOR = "k8s-migrate.odbox/deployment"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
# A container's waiting reasons that kubelet does not get past by waiting.
CANNOT_START = {
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
}  # fmt: skip
# Events of a pod that waits for a volume another pod holds (ReadWriteOnce on another node).
VOLUME_WAITS = {"FailedAttachVolume", "FailedMount"}


class KubeError(ToolError):
    """The cluster refused or failed a step."""


class StreamCut(KubeError):
    """An exec's output ended before the command's exit status arrived."""


class CommandFailed(KubeError):
    """A command in a pod exited with a non-zero status (`code`, when the server said it)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def conflict(error: BaseException) -> bool:
    """The API server answered 409: the object changed since it was read."""
    return getattr(error.__cause__, "status", 0) == 409


def refused(error: BaseException) -> bool:
    """The API server answered a 4xx: the same request will not do better."""
    return getattr(error.__cause__, "status", 0) in range(400, 500)


def _api_reason(e: Any) -> str:
    """`403 Forbidden: deployments.apps "odoo" is forbidden: …` from an ApiException."""
    message = ""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        message = str(json.loads(e.body).get("message", ""))
    return f"{e.status} {e.reason}" + (f": {message}" if message else "")


class _ClientLog(logging.Handler):
    """The kubernetes client's log, kept instead of printed: it logs an exec credential
    plugin's failure with `logging.error` on the root logger (an `ERROR:root:exec: …` line
    before every request) and goes on without credentials. Its last `exec:` message goes
    into the error line of the 401 that follows."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.plugin: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            message = record.getMessage()
            if message.startswith("exec:"):
                self.plugin = message.splitlines()[0].strip()


@dataclass
class Cluster:
    api_client: Any
    context: str
    server: str
    namespace: str = "default"  # the context's `namespace:`, as kubectl defaults -n to it
    client_log: _ClientLog | None = None
    _plugin_said: bool = False  # its message is in one error phrase, not in each

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None) -> Cluster:
        """The user's kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else ~/.kube/config)."""
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        client_log = _ClientLog()
        root = logging.getLogger()
        root.handlers = [h for h in root.handlers if not isinstance(h, _ClientLog)]
        root.addHandler(client_log)  # with a handler there, logging.error prints nothing
        try:
            contexts, active = config.list_kube_config_contexts(
                config_file=str(kubeconfig) if kubeconfig else None
            )
            name = context or (active or {}).get("name", "")
            if context and context not in {c["name"] for c in contexts}:
                raise UsageError(f"the kubeconfig has no context {context!r}")
            chosen = next((c for c in contexts if c["name"] == name), None) or active or {}
            namespace = str((chosen.get("context") or {}).get("namespace") or "default")
            api_client = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context
            )
        except (ConfigException, OSError) as e:
            raise _kubeconfig_missing(e, kubeconfig) from e
        except UsageError:
            raise
        except Exception as e:
            raise _kubeconfig_error(e, kubeconfig) from e
        cluster_name = str((chosen.get("context") or {}).get("cluster") or "")
        if _use_proxy(api_client.configuration, _proxy_url(kubeconfig, cluster_name), cluster_name):
            from kubernetes import client

            api_client = client.ApiClient(api_client.configuration)  # its pool, with the proxy
        return cls(api_client, name, str(api_client.configuration.host), namespace, client_log)

    @functools.cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @functools.cached_property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)`, an API error becoming one line that says `what` failed."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)  # a dead connection must not hang
        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise KubeError(
                f"cannot {what}: {_api_reason(e)}{self._unauthorized(getattr(e, 'status', 0))}"
            ) from e
        except (HTTPError, OSError) as e:
            raise KubeError(
                f"cannot reach the API server at {self.server}: {_unreachable(e)} "
                "(check --context / the kubeconfig's server)"
            ) from e

    def _unauthorized(self, status: int) -> str:
        """For a 401: whose credentials were refused."""
        if status != 401:
            return ""
        plugin = self.client_log.plugin if self.client_log is not None else None
        if plugin and not self._plugin_said:
            self._plugin_said = True
            return (
                f"; the kubeconfig's credentials for context {self.context} were refused: "
                f"its exec credential plugin failed: {plugin} (log in again, then pull again)"
            )
        return f"; the kubeconfig's credentials for context {self.context} were refused" + (
            "" if plugin else " (expired token?)"
        )

    def exists(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """The object, or None on 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.call(what, fn, *args, **kwargs)
        except KubeError as e:
            if isinstance(e.__cause__, ApiException) and e.__cause__.status == 404:
                return None
            raise

    # ------------------------------------------------------------ deployments

    def annotate(
        self,
        namespace: str,
        deployment: str,
        annotations: dict[str, str | None],
        resource_version: str | None = None,
    ) -> None:
        """Set annotations of the deployment (None: remove it): a strategic merge patch of its
        metadata only; with `resource_version`, only if the deployment is still at that
        version (else a 409 Conflict: see `conflict`)."""
        text = ", ".join(f"{k}={v}" if v is not None else f"{k}-" for k, v in annotations.items())
        metadata: dict[str, Any] = {"annotations": annotations}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        self.call(
            f"annotate deployment {namespace}/{deployment} {text}",
            self.apps.patch_namespaced_deployment,
            deployment,
            namespace,
            {"metadata": metadata},
        )

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        self.call(
            f"scale deployment {namespace}/{deployment} to {replicas}",
            self.apps.patch_namespaced_deployment_scale,
            deployment,
            namespace,
            {"spec": {"replicas": replicas}},
        )

    def pods_of(self, namespace: str, deployment: Any) -> list[Any]:
        labels = deployment.spec.selector.match_labels or {}
        if not labels:
            raise KubeError(
                f"deployment {namespace}/{deployment.metadata.name} selects its pods without "
                "matchLabels; k8s-migrate cannot tell which pods are Odoo's"
            )
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self.call(
            f"list the pods of deployment {namespace}/{deployment.metadata.name}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        # Evicted or finished pods linger (Failed, Succeeded) until garbage-collected: they
        # hold no volume and write nothing, so they do not count.
        return [p for p in pods.items if (p.status.phase if p.status else None)
                not in ("Failed", "Succeeded")]  # fmt: skip

    def wait_until(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.1
        while not done():
            if time.monotonic() >= deadline:
                raise KubeError(f"gave up after {timeout:.0f} s waiting for {what}")
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    # ------------------------------------------------------------ helper pod

    def helper_pods(self, namespace: str, deployment: str) -> list[str]:
        """Helper pods that a pull of `deployment` made and did not delete (it was killed)."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(HELPER_LABELS.items()))
        pods = self.call(
            f"list the helper pods in namespace {namespace}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        return sorted(
            p.metadata.name
            for p in pods.items
            if (p.metadata.annotations or {}).get(HELPER_FOR) == deployment
        )

    def start_helper(
        self,
        namespace: str,
        name: str,
        image: str,
        pvc: str,
        also_at: Sequence[str] = (),
        like: Any = None,
        deployment: str = "",
        *,
        dry_run: bool = False,
    ) -> None:
        """The helper pod, with the PVC at /pvc (and at each path of `also_at`); `like`
        (Odoo's pod template spec) lends it what lets Odoo's own
        pods pull their image and land on their nodes: pull secrets, node selector,
        tolerations, affinity, security context, and the user of its container. The helper
        asks for nothing (no privilege escalation, no capabilities, the runtime's seccomp
        profile): PodSecurity `restricted` admits it. `dry_run`: admission and validation
        only (dryRun=All), nothing is created."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict(HELPER_LABELS),
                "annotations": {HELPER_FOR: deployment},
            },
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "helper",
                        "image": image,
                        "command": ["sleep", "86400"],
                        "volumeMounts": [
                            {"name": "data", "mountPath": path, "readOnly": True}
                            for path in ("/pvc", *also_at)
                        ],
                    }
                ],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}}
                ],
            },
        }
        if like is not None:
            serialize = self.api_client.sanitize_for_serialization
            for field in ("image_pull_secrets", "node_selector", "tolerations", "affinity",
                          "security_context"):  # fmt: skip
                value = getattr(like, field, None)
                if value:
                    key = like.attribute_map[field]
                    body["spec"][key] = serialize(value)
        spec, container = body["spec"], body["spec"]["containers"][0]
        context = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        if like is not None and like.containers:
            own = like.containers[0].security_context
            for field in ("run_as_user", "run_as_group", "run_as_non_root"):
                if own is not None and getattr(own, field) is not None:
                    context[own.attribute_map[field]] = getattr(own, field)
        container["securityContext"] = context
        pod_context = spec.setdefault("securityContext", {})
        pod_context.setdefault("seccompProfile", {"type": "RuntimeDefault"})
        self.call(
            f"create the helper pod {namespace}/{name}" + (" (dry run)" if dry_run else ""),
            self.core.create_namespaced_pod,
            namespace,
            body,
            **({"dry_run": "All"} if dry_run else {}),
        )

    def wait_running(
        self, namespace: str, name: str, timeout: float, *, until_blocked: bool = False
    ) -> bool:
        """Wait until the pod runs (True). A container kubelet will not start (an image it
        cannot pull, a config it refuses) fails at once, with its reason and message. With
        `until_blocked`, a pod that waits for what scaling Odoo down frees (it cannot be
        scheduled, or its volume is attached elsewhere: Multi-Attach) returns False."""
        deadline = time.monotonic() + timeout
        pause = 0.1
        while True:
            pod = self.call(
                f"read pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace
            )
            status = pod.status
            phase = status.phase if status else None
            if phase == "Running":
                return True
            if phase in ("Failed", "Succeeded"):
                raise KubeError(f"the helper pod {namespace}/{name} ended ({phase}) before use")
            waiting = [
                (c.state.waiting.reason or "", c.state.waiting.message or "")
                for c in (status.container_statuses or [] if status else [])
                if c.state and c.state.waiting
            ]
            fatal = [(r, m) for r, m in waiting if r in CANNOT_START]
            if fatal:
                raise KubeError(
                    f"the helper pod {namespace}/{name} cannot start: {fatal[0][0]}: "
                    f"{fatal[0][1]}{self._image_hint(fatal[0][0])}"
                )
            unscheduled = [
                c for c in (status.conditions or [] if status else [])
                if c.type == "PodScheduled" and c.status == "False"
            ]  # fmt: skip
            events = self._warnings(namespace, name)
            if until_blocked and (unscheduled or any(e[0] in VOLUME_WAITS for e in events)):
                return False
            if time.monotonic() >= deadline:
                why = [f"{c.reason}: {c.message}" for c in unscheduled if c.reason or c.message]
                why += [f"{r}: {m}" if m else r for r, m in waiting]
                why += [f"{r}: {m}" for r, m in events[-2:] if f"{r}: {m}" not in why]
                shown = "; ".join(dict.fromkeys(why))
                raise KubeError(
                    f"the helper pod {namespace}/{name} stayed {phase or 'unknown'} "
                    f"for {timeout:.0f} s" + (f" ({shown})" if shown else "")
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)

    def volume_waits(self, namespace: str, name: str, timeout: float) -> list[str]:
        """After a scale-back: the deployment's pods that wait for a volume another node
        holds (`FailedAttachVolume`, Multi-Attach: a helper pod deleted with no grace leaves
        its ReadWriteOnce volume attached for minutes), each `pod P: REASON: MESSAGE`. Waits
        until every pod runs, cannot be scheduled (not a volume's doing), or waits so;
        `timeout` at most."""
        deadline = time.monotonic() + timeout
        while True:
            what = f"read deployment {namespace}/{name}"
            deployment = self.call(what, self.apps.read_namespaced_deployment, name, namespace)
            pods = [p for p in self.pods_of(namespace, deployment)
                    if not p.metadata.deletion_timestamp]  # fmt: skip
            waits, settled = [], len(pods) >= (deployment.spec.replicas or 0)
            for pod in pods:
                if pod.status and pod.status.phase == "Running":
                    continue
                conditions = (pod.status.conditions or []) if pod.status else []
                if any(c.type == "PodScheduled" and c.status == "False" for c in conditions):
                    continue
                events = self._warnings(namespace, pod.metadata.name)
                volume = [f"{r}: {m}" for r, m in events if r in VOLUME_WAITS]
                if volume:
                    waits.append(f"pod {pod.metadata.name}: {volume[-1]}")
                else:
                    settled = False
            if waits or settled or time.monotonic() >= deadline:
                return waits
            time.sleep(0.2)

    @staticmethod
    def _image_hint(reason: str) -> str:
        if "Image" in reason:
            return " (check --helper-image, and that the nodes can pull it)"
        return ""

    def _warnings(self, namespace: str, name: str) -> list[tuple[str, str]]:
        """(reason, message) of the pod's Warning events, oldest first; none if the events
        cannot be read (no right to list them is no reason to fail)."""
        try:
            events = self.call(
                f"list the events of pod {namespace}/{name}",
                self.core.list_namespaced_event,
                namespace,
                field_selector=f"involvedObject.name={name},type=Warning",
            ).items
        except KubeError:
            return []
        return [(e.reason or "", e.message or "") for e in events]

    def secret(self, namespace: str, reference: str) -> str:
        """The value of `NAME/KEY`, a key of a Secret (read through the API, never printed)."""
        import base64
        import binascii

        name, slash, key = reference.partition("/")
        if not (name and slash and key):
            raise UsageError(f"--db-password-secret {reference!r} is not NAME/KEY")
        secret = self.exists(f"read secret {namespace}/{name}",
                             self.core.read_namespaced_secret, name, namespace)  # fmt: skip
        if secret is None:
            raise UsageError(f"there is no secret {name} in namespace {namespace} "
                             "(check --db-password-secret)")  # fmt: skip
        data = secret.data or {}
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise UsageError(f"secret {namespace}/{name} has no key {key} (its keys: {keys}; "
                             "check --db-password-secret)")  # fmt: skip
        try:
            value = base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise UsageError(f"key {key} of secret {namespace}/{name} is not text") from e
        if "\n" in value.rstrip("\n"):
            raise UsageError(f"key {key} of secret {namespace}/{name} holds several lines, "
                             "not a password")  # fmt: skip
        return value.rstrip("\n")

    def delete_pod(self, namespace: str, name: str, timeout: float = 60) -> None:
        """Delete the pod and wait until it is gone (a 404 counts as gone). Not a forced
        delete (gracePeriodSeconds=0 removes the object at once, before kubelet has stopped
        the pod and unmounted its volumes: Odoo's pods, scaled back, could then meet the
        PVC still attached, Multi-Attach): one second's grace, so the object goes once
        kubelet is done."""
        if (
            self.exists(
                f"delete pod {namespace}/{name}",
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=1,
            )
            is None
        ):
            return
        self.wait_until(
            f"pod {namespace}/{name} to go",
            lambda: (
                self.exists(
                    f"read pod {namespace}/{name}", self.core.read_namespaced_pod, name, namespace
                )
                is None
            ),
            timeout,
        )

    # ------------------------------------------------------------ exec

    def exec(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: Sequence[str],
        *,
        stdin: bool = False,
        idle_timeout: float = 300,
        what: str | None = None,
    ) -> ExecStream:
        """Start `command` in the pod; its stdout as a stream (see ExecStream). `what` names
        it in errors (default: `run COMMAND in pod NS/POD`)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import ws_client

        what = what or f"run {command[0]} in pod {namespace}/{pod}"
        own = client.ApiClient(self.api_client.configuration)
        own.request = functools.partial(
            ws_client.websocket_call, own.configuration, binary=True, capture_all=False
        )
        kwargs: dict[str, Any] = {
            "command": list(command),
            "stdin": stdin,
            "stdout": True,
            "stderr": True,
            "tty": False,
            "_preload_content": False,
        }
        if container:
            kwargs["container"] = container
        try:
            ws = client.CoreV1Api(own).connect_get_namespaced_pod_exec(pod, namespace, **kwargs)
        except (ApiException, AttributeError) as e:
            # The client reports a refused upgrade as ApiException(status=0, reason="Handshake
            # status 403 Forbidden -+-+- headers -+-+- body"), and in some versions fails on it
            # with an AttributeError whose context is that ApiException.
            cause = e if isinstance(e, ApiException) else e.__context__
            if not isinstance(cause, ApiException):
                raise
            if isinstance(cause.__context__, KeyboardInterrupt | SystemExit):
                raise cause.__context__ from None  # the client wraps even these
            reason = str(cause.reason or cause).split(" -+-+- ")
            line = reason[0].removeprefix("Handshake status ")
            if len(reason) > 2:
                with contextlib.suppress(ValueError):
                    line += ": " + str(json.loads(reason[2]).get("message", ""))
            line += self._unauthorized(401 if line.startswith("401") else 0)
            raise KubeError(f"cannot {what}: {line}") from e
        return ExecStream(ws, what, idle_timeout)

    def run(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        command: Sequence[str],
        limit: int = 1 << 20,
        what: str | None = None,
        feed: bytes | None = None,
    ) -> bytes:
        """A short command's whole stdout (at most `limit` bytes); a non-zero exit fails.
        `feed`: sent on its stdin (a secret for the command, never in its argv)."""
        with self.exec(namespace, pod, container, command, what=what,
                       stdin=feed is not None) as stream:  # fmt: skip
            if feed is not None:
                stream.write_stdin(feed)
                stream.close_stdin()
            out = bytearray()
            # read() allocates what it is asked for: ask for 64 KiB, never for `limit`
            while len(out) <= limit and (data := stream.read(min(1 << 16, limit + 1 - len(out)))):
                out += data
            if len(out) > limit:
                raise KubeError(f"{stream.what}: more output than the {limit} bytes expected")
            stream.finish()
        return bytes(out)


class ExecStream(io.RawIOBase):
    """An exec's stdout as a binary stream; stderr kept (its end) for the error line.

    `finish()` after the last read checks the exit status. A connection that drops, a
    stream that ends without the API server's Status, or `idle_timeout` seconds without
    a byte raise StreamCut: a short stream is never taken for a whole one.
    """

    def __init__(self, ws: Any, what: str, idle_timeout: float) -> None:
        super().__init__()
        self.ws = ws
        self.what = what
        self.idle_timeout = idle_timeout
        self.received = 0
        self._pending = b""
        self._offset = 0
        self._stderr_head = bytearray()
        self._stderr = bytearray()
        self._ended = False
        self._cut: Exception | None = None  # the connection dropped: after what is buffered

    def readable(self) -> bool:
        return True

    @property
    def stderr(self) -> str:
        """Its first STDERR_KEPT bytes, and its last (with `…` between when some were dropped)."""
        head = self._stderr_head.decode(errors="replace")
        if not self._stderr:
            return head
        return f"{head}\n…\n{self._stderr.decode(errors='replace')}"

    def _keep_stderr(self, data: bytes) -> None:
        if not data:
            return
        room = STDERR_KEPT - len(self._stderr_head)
        if room > 0:
            self._stderr_head += data[:room]
            data = data[room:]
        self._stderr += data
        del self._stderr[:-STDERR_KEPT]

    def _frames(self) -> None:
        """Read frames until stdout has bytes or the stream ended.

        Reading an empty channel makes the client read one more frame, which raises when
        the connection is gone; a stdout frame that came in before it is still buffered,
        so it is taken before the cut is reported: the byte count of the error is exact."""
        from websocket import WebSocketException

        if self._cut is not None:
            why = str(self._cut) or type(self._cut).__name__
            raise StreamCut(
                f"{self.what}: the connection dropped after {self.received} bytes ({why})"
            ) from self._cut
        idle_since = time.monotonic()
        while not self._pending and not self._ended:
            try:
                if not self.ws.is_open():
                    self._pending = self.ws.read_stdout(timeout=0)
                    self._keep_stderr(self.ws.read_stderr(timeout=0))
                    self._ended = True
                    break
                self.ws.update(timeout=1)
                if err := self.ws.read_stderr(timeout=0):
                    self._keep_stderr(err)
                    idle_since = time.monotonic()  # alive: a heartbeat, or a long warning
                self._pending = self.ws.read_stdout(timeout=0)
            except (WebSocketException, OSError) as e:
                self._cut = e
                with contextlib.suppress(WebSocketException, OSError):
                    self._pending = self.ws.read_stdout(timeout=0)  # buffered: no read
                if not self._pending:
                    return self._frames()
                break
            if not self._pending and time.monotonic() - idle_since > self.idle_timeout:
                raise StreamCut(
                    f"{self.what}: no data for {self.idle_timeout:.0f} s "
                    f"after {self.received} bytes"
                )
        self._offset = 0

    def readinto(self, buffer: Any) -> int:
        if self._offset >= len(self._pending):
            self._pending = b""
            self._frames()
            if not self._pending:
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending) - self._offset)
        view[:n] = self._pending[self._offset : self._offset + n]
        self._offset += n
        self.received += n
        return n

    def write_stdin(self, data: bytes) -> None:
        from websocket import WebSocketException

        try:
            self.ws.write_stdin(data)
        except (WebSocketException, OSError) as e:
            raise StreamCut(f"{self.what}: the connection dropped while sending ({e})") from e

    def close_stdin(self) -> None:
        from kubernetes.stream.ws_client import STDIN_CHANNEL

        self.ws.close_channel(STDIN_CHANNEL)  # the v5 protocol only; v4 has no way

    def finish(self) -> None:
        """After stdout's end: the exit status; a failure is CommandFailed, no status StreamCut."""
        while self.readinto(bytearray(1 << 16)):
            pass  # output nobody read: the status comes after it
        raw = self.ws.read_channel(3)
        if not raw:
            raise StreamCut(
                f"{self.what}: the stream ended after {self.received} bytes "
                "without the command's exit status"
            )
        try:
            status = json.loads(raw)
        except ValueError as e:
            raise StreamCut(f"{self.what}: an unreadable exit status {raw[:80]!r}") from e
        if status.get("status") == "Success":
            return
        causes = (status.get("details") or {}).get("causes") or []
        code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
        said = f": {why}" if (why := stderr_reason(self.stderr)) else ""
        if code is not None:
            number = int(code) if str(code).isdigit() else None
            raise CommandFailed(f"{self.what} failed with exit status {code}{said}", number)
        raise CommandFailed(f"{self.what} failed: {status.get('message') or status}{said}")

    def close(self) -> None:
        if not self.closed:
            # Closing a connection that may be half gone: whatever it raises, it is closed.
            # The socket is shut down first: websocket-client's close() sends a close frame
            # under the lock a blocked sender (the tar file list) holds, and would wait for
            # ever; with the socket shut, both return at once.
            raw = getattr(getattr(self.ws, "sock", None), "sock", None)
            with contextlib.suppress(Exception):
                if raw is not None:
                    raw.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                self.ws.close()
                if self.ws.sock is not None:
                    self.ws.sock.shutdown()
        super().close()


def _proxy_url(kubeconfig: Path | None, cluster: str) -> str | None:
    """The `proxy-url` of the kubeconfig's cluster: the official client does not read it
    (kubectl does)."""
    from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION, KubeConfigMerger

    paths = str(kubeconfig) if kubeconfig else os.environ.get(
        "KUBECONFIG", KUBE_CONFIG_DEFAULT_LOCATION)  # fmt: skip
    with contextlib.suppress(Exception):  # the client read the same files without a fault
        clusters = KubeConfigMerger(paths).config["clusters"]
        url = clusters.get_with_name(cluster)["cluster"].safe_get("proxy-url")
        return str(url) if url else None
    return None


def _use_proxy(configuration: Any, url: str | None, cluster: str) -> bool:
    """An HTTP(S) proxy for REST calls (urllib3) and exec (websocket-client's CONNECT), with
    its user and password, if the URL has them, as Proxy-Authorization; SOCKS is refused.
    Whether there is one (then the client's connection pool must be made again)."""
    if not url:
        return False
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"the kubeconfig's cluster {cluster} has proxy-url {parts.scheme}://"
            f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}: k8s-migrate "
            "supports HTTP proxies only (http://HOST:PORT); for a SOCKS proxy, open an SSH "
            "tunnel to the API server instead (ssh -L) and point the server at it"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    configuration.proxy = f"{parts.scheme}://{parts.hostname}:{port}"
    if parts.username is not None:
        import urllib3

        auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        configuration.proxy_headers = urllib3.make_headers(proxy_basic_auth=auth)
    return True


def stderr_reason(text: str) -> str:
    """What a command's stderr says went wrong, in one line: its first error line with the
    detail and hint lines that follow it (pg_dump's), else its last three lines (not the
    scan's heartbeat dots)."""
    said = [line.strip() for line in text.splitlines() if line.strip() not in ("", ".")]
    for i, line in enumerate(said):
        if ERROR_LINE.search(line) and not SUMMARY_LINE.search(line):
            details = itertools.takewhile(DETAIL_LINE.search, said[i + 1 : i + 3])
            return "; ".join([line, *details])
    return " / ".join(said[-3:])


def _unreachable(e: BaseException) -> str:
    """Why a connection failed, in a few words (not urllib3's pool and retry text)."""
    seen: list[BaseException] = []
    todo: list[Any] = [e]
    while todo:  # the error, its urllib3 `reason`, and what caused each
        item = todo.pop()
        if isinstance(item, BaseException) and item not in seen:
            seen.append(item)
            todo += [getattr(item, "reason", None), item.__cause__, item.__context__]
    for item in seen:
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "its host name does not resolve"
        if isinstance(item, TimeoutError):
            return "no answer (timed out)"
        if isinstance(item, ConnectionResetError):
            return "the connection was reset"
    text = " ".join(str(item) for item in seen)
    for needle, said in (
        ("refused", "connection refused"),
        ("timed out", "no answer (timed out)"),
        ("name resolution", "its host name does not resolve"),
        ("not known", "its host name does not resolve"),
        ("SSL", "the TLS handshake failed"),
    ):
        if needle in text:
            return said
    return type(e).__name__


def _kubeconfig_files(kubeconfig: Path | None) -> tuple[list[str], str]:
    """The files the client reads, in its order (--kubeconfig, else $KUBECONFIG's list, else
    ~/.kube/config), and which of those it is."""
    if kubeconfig is not None:
        return [str(kubeconfig)], "--kubeconfig"
    if os.environ.get("KUBECONFIG", "").strip():
        return [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p], "$KUBECONFIG"
    return [str(Path.home() / ".kube" / "config")], "the default"


def _kubeconfig_missing(e: Exception, kubeconfig: Path | None) -> UsageError:
    """A kubeconfig the client could not read: which file(s) it tried, and how to pick one."""
    tried, origin = _kubeconfig_files(kubeconfig)
    missing = [p for p in tried if not Path(p).expanduser().is_file()]
    files = ", ".join(tried)
    if missing == tried:
        what = f"no kubeconfig at {files} ({origin})"
    else:
        why = str(e).removeprefix("Invalid kube-config file. ").strip() or type(e).__name__
        what = f"{files} ({origin}): {why}"
    return UsageError(
        f"cannot use the kubeconfig: {what}; pick one with --kubeconfig FILE or $KUBECONFIG"
    )


def _kubeconfig_error(e: Exception, kubeconfig: Path | None) -> Exception:
    """A file that is not YAML (PyYAML's errors: the client lets them through), or YAML that
    is not a kubeconfig's mapping (the client trips on it): one usage line naming the file.
    Anything else is not the file's fault and stays as it is."""
    if type(e).__module__.split(".")[0] == "yaml":  # not imported: the client's dependency
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        name = _kubeconfig_name(kubeconfig, mark)
        return UsageError(f"cannot use the kubeconfig {name}: it is not valid YAML ({why}{where})")
    if isinstance(e, TypeError | AttributeError | KeyError | IndexError):
        name = _kubeconfig_name(kubeconfig, None)
        return UsageError(f"cannot use the kubeconfig {name}: it is not a kubeconfig ({e})")
    return e


def _kubeconfig_name(kubeconfig: Path | None, mark: Any) -> str:
    """The file the client read: --kubeconfig, else the one YAML named, else the first the
    client tries."""
    name = getattr(mark, "name", "") or ""
    if kubeconfig is None and name and not name.startswith("<"):
        return str(name)
    return _kubeconfig_files(kubeconfig)[0][0]


def lines(data: bytes) -> Iterator[str]:
    """Lines split on newlines only (str.splitlines would also split a file name at \r)."""
    for line in data.decode(errors="surrogateescape").split("\n"):
        if line.strip():
            yield line
