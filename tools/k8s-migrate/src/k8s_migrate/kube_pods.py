"""The helper pod k8s-migrate reads the PVC through (made like Odoo's own pods, waited for,
deleted), and exec: a command in a pod, its stdout a stream (exec_stream.py's).

Every exec gets its own `ApiClient` whose requests go through the client's own
`ws_client.websocket_call` with `binary=True, capture_all=False`: bytes as they came, and
nothing kept once read (see ExecStream).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from k8s_migrate.kube_api import ApiCalls, KubeError

if TYPE_CHECKING:
    from k8s_migrate.exec_stream import ExecStream

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


class Pods(ApiCalls):
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
        from k8s_migrate.exec_stream import ExecStream

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
