"""A Kubernetes API server emulator for testing k8s-migrate against the real `kubernetes` client.

No kube-apiserver can run in the tests, so this aiohttp server, on 127.0.0.1 in a background
thread with its own event loop, speaks the wire protocol the official client speaks, and the
client under test is configured only through the kubeconfig file the emulator writes.

What it models, and how each part differs from a real API server: README.md next to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import errno
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, TypeVar

from aiohttp import WSMessage, WSMsgType, web

Obj = dict[str, Any]
T = TypeVar("T")
# A volume: ("pvc", claim name) for a PersistentVolumeClaim added with `add_pvc`, or a local folder.
MountSource = tuple[str, str] | Path

STDIN, STDOUT, STDERR, ERROR, CLOSE = 0, 1, 2, 3, 255
CHUNK = 32 * 1024
DROP_LINGER = 5.0  # seconds a dropped exec's socket, half-closed, waits for the client to close
V5, V4, V1 = "v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"
NODE = "node-1"
DEFAULT_GRACE = 30
ODOO_MOUNTS: Mapping[str, MountSource] = MappingProxyType({"/var/lib/odoo": ("pvc", "odoo-data")})

_KINDS = {
    "namespaces": ("v1", "Namespace"),
    "persistentvolumeclaims": ("v1", "PersistentVolumeClaim"),
    "pods": ("v1", "Pod"),
    "deployments": ("apps/v1", "Deployment"),
    "horizontalpodautoscalers": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "events": ("v1", "Event"),
    "secrets": ("v1", "Secret"),
}
_FIELDS = {"metadata.name", "metadata.namespace"}
_POD_FIELDS = {*_FIELDS, "status.phase"}
_EVENT_FIELDS = {*_FIELDS, "involvedObject.name", "involvedObject.kind", "type", "reason"}
POD_SECURITY = "pod-security.kubernetes.io/enforce"
# What a real image's USER would make kubelet answer (`image_user`): a name it cannot check
# against runAsNonRoot.
_NON_ROOT_UNKNOWN = (
    "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user "
    'is non-root (pod: "{pod}", container: {container})'
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of generated Kubernetes names
_EXEC_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+/exec$")


@dataclass(frozen=True)
class Request:
    """One request as received (an exec is a GET that upgrades to a WebSocket)."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    exec: bool

    @property
    def watch(self) -> bool:
        return _truthy(self.query.get("watch", [""])[-1])


@dataclass(frozen=True)
class ExecCall:
    """What a fault's predicate sees: one exec, its command as sent (before path rewriting)."""

    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]


ExecOutcome = Literal["exited", "dropped", "idle", "closed", "client left", "not started"]


@dataclass(frozen=True)
class ExecRecord:
    """One exec as it ended (see `K8sEmulator.exec_log`).

    Byte counts are payload bytes (without the channel byte): stdout and stderr as sent to the
    client (a `fail_exec` stderr message included), stdin as received from it. `exit_code` is
    the one the client was told (a `fail_exec` code, 128+signal for a killed process); None when
    no exit status was sent: the connection was dropped, closed without it (`close_exec`), the
    client left first, or the command could not start (its Status is an InternalError).
    `protocol` is the subprotocol negotiated.
    """

    namespace: str
    pod: str
    container: str
    command: tuple[str, ...]
    stdout_bytes: int
    stderr_bytes: int
    stdin_bytes: int
    exit_code: int | None
    outcome: ExecOutcome
    protocol: str = V5


@dataclass
class _ExecCounts:
    """The running byte counts of one exec (event loop only), and its protocol."""

    protocol: str
    stdout: int = 0
    stderr: int = 0
    stdin: int = 0
    logged: bool = False
    active: float = 0.0  # the loop's time of the last frame either way (the idle clock)


@dataclass
class _ExecFault:
    match: Callable[[ExecCall], bool]
    after_bytes: int | None
    exit_code: int | None  # None: drop the connection instead of reporting an exit code
    stderr: bytes
    times: int | None
    reset: bool = False  # a drop with a TCP RST instead of a FIN
    close: bool = False  # a normal WebSocket close, without the status
    truncate: bool = False  # stdout stops after `after_bytes`; the rest is lost, the status sent


@dataclass(eq=False)
class _Watch:
    resource: str
    matches: Callable[[Obj], bool]
    queue: asyncio.Queue[tuple[str, Obj]]


class _ApiError(Exception):
    """An error the apiserver would answer with a Status."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        if details is not None:
            self.status["details"] = details

    def response(self) -> web.Response:
        return web.json_response(self.status, status=self.code)


def _group(resource: str) -> str:
    if resource.startswith("horizontalpodautoscalers"):
        return "autoscaling"
    return "apps" if resource.startswith("deployments") else ""


def _not_found(resource: str, name: str) -> _ApiError:
    base = resource.split("/")[0]
    group = _group(resource)
    qualified = f"{base}.{group}" if group else base
    details = {"name": name, "kind": base} | ({"group": group} if group else {})
    return _ApiError(404, "NotFound", f'{qualified} "{name}" not found', details)


def _invalid(kind: str, name: str, causes: list[Obj]) -> _ApiError:
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    summary = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
    details = {"name": name, "kind": kind, "causes": causes}
    return _ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {summary}', details)


def _required(field: str) -> Obj:
    return {"reason": "FieldValueRequired", "message": "Required value", "field": field}


_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_TOTAL_ANNOTATIONS = 256 * 1024


def _qualified_name_errors(key: str) -> list[str]:
    """apimachinery's IsQualifiedName: `[prefix/]name`, prefix a DNS subdomain."""
    prefix, slash, name = key.rpartition("/")
    errors = []
    if slash and not prefix:
        errors.append("prefix part must be non-empty")
    elif prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        errors.append(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _NAME_PART.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return errors


def _validate_meta_maps(kind: str, name: str, meta: Obj) -> None:
    """Labels and annotations as the apiserver checks them: string maps (else the body does
    not decode: 400), qualified-name keys, label values, the annotations' total size (422)."""
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            bad = next((v for v in value.values() if not isinstance(v, str)), value) if (
                isinstance(value, dict)) else value  # fmt: skip
            raise _ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal {_go_type(bad)} into Go struct field "
                f"ObjectMeta.metadata.{field} of type "
                + ("string" if isinstance(value, dict) else "map[string]string"),
            )
    causes: list[Obj] = []
    for field in ("labels", "annotations"):
        for key, value in (meta.get(field) or {}).items():
            for error in _qualified_name_errors(key):
                causes.append(_invalid_value(f"metadata.{field}", key, error))
            if field == "labels" and value and (len(value) > 63 or not _NAME_PART.fullmatch(value)):
                causes.append(_invalid_value(
                    "metadata.labels", value, "a valid label must be an empty string or consist "
                    "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character (at most 63 characters)",
                ))  # fmt: skip
    total = sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items())
    if total > _TOTAL_ANNOTATIONS:
        causes.append({
            "reason": "FieldValueTooLong",
            "message": f"Too long: must have at most {_TOTAL_ANNOTATIONS} bytes",
            "field": "metadata.annotations",
        })  # fmt: skip
    if causes:
        raise _invalid(kind, name, causes)


def _invalid_value(field: str, value: Any, detail: str) -> Obj:
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {json.dumps(value)}: {detail}",
        "field": field,
    }


def _go_type(value: Any) -> str:
    """How encoding/json names a JSON value it cannot put into a Go field."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _truthy(value: str | None) -> bool:
    """Go's strconv.ParseBool, as the apiserver reads query flags (the client sends "True")."""
    return (value or "").lower() in ("1", "t", "true")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _random_name(length: int) -> str:
    return "".join(random.choices(_NAME_CHARS, k=length))


def _metadata(name: str, namespace: str | None, labels: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now()}
    if labels:
        meta["labels"] = dict(labels)
    return meta


_REQUIREMENT = re.compile(
    r"\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)|\s(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?"
    r"\s*"
)


def _label_matcher(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A label selector's predicate; commas inside `in (...)` do not split requirements."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for part in re.split(r",(?![^()]*\))", selector):
        if not part.strip():
            continue
        m = _REQUIREMENT.fullmatch(part)
        if m is None or (m["neg"] and (m["op"] or m["set"])):
            raise _ApiError(
                400, "BadRequest", f"unable to parse requirement: invalid label selector {part!r}"
            )
        checks.append(_requirement(m))
    return lambda labels: all(check(labels) for check in checks)


def _requirement(m: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    key = m["key"]
    if m["op"]:
        value, equal = m["value"], m["op"] != "!="
        return lambda labels: (labels.get(key) == value) == equal
    if m["set"]:
        values = {v.strip() for v in m["values"].split(",")}
        inside = m["set"] == "in"
        return lambda labels: (key in labels and labels[key] in values) == inside
    present = not m["neg"]
    return lambda labels: (key in labels) == present


def _field_matcher(resource: str, selector: str) -> Callable[[Obj], bool]:
    supported = {"pods": _POD_FIELDS, "events": _EVENT_FIELDS}.get(resource, _FIELDS)
    checks: list[Callable[[Obj], bool]] = []
    for part in selector.split(","):
        if not part.strip():
            continue
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*([^\s,]*)\s*", part)
        if m is None:
            raise _ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
        if m[1] not in supported:
            raise _ApiError(400, "BadRequest", f'field label not supported: "{m[1]}"')
        checks.append(_field_check(m[1], m[3], m[2] != "!="))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(field: str, value: str, equal: bool) -> Callable[[Obj], bool]:
    def check(obj: Obj) -> bool:
        current: Any = obj
        for key in field.split("."):
            current = current.get(key, "") if isinstance(current, dict) else ""
        return bool(current == value) == equal

    return check


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (for a Scale, a strategic merge patch does the same)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _json_patch(document: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch: add, replace, remove, test."""
    if not isinstance(operations, list):
        raise _ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(document)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]
        if not tokens:
            raise _ApiError(422, "Invalid", f"jsonpatch {kind} operation on the whole document")
        parent: Any = doc
        for token in tokens[:-1]:
            parent = parent.get(token) if isinstance(parent, dict) else None
        last = tokens[-1]
        if not isinstance(parent, dict):
            raise _ApiError(422, "Invalid", f"jsonpatch {kind}: doc is missing path: {path}")
        if kind == "add":
            parent[last] = op.get("value")
        elif kind in ("replace", "remove", "test") and last not in parent:
            raise _ApiError(
                422,
                "Invalid",
                f"jsonpatch {kind} operation does not apply: doc is missing key: {path}",
            )
        elif kind == "replace":
            parent[last] = op.get("value")
        elif kind == "remove":
            del parent[last]
        elif kind == "test" and parent[last] != op.get("value"):
            raise _ApiError(422, "Invalid", f"testing value {path} failed")
        elif kind != "test":
            raise _ApiError(422, "Invalid", f"unexpected jsonpatch operation {kind!r}")
    return doc


def _apply_patch(content_type: str, document: Obj, patch: Any) -> Any:
    """A PATCH body applied as its content type says (a strategic merge patch of maps, all
    that is patched here, is a JSON merge patch); the document is not changed."""
    if content_type == "application/json-patch+json":
        return _json_patch(document, patch)
    if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(patch, dict):
            raise _ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        return _merge_patch(copy.deepcopy(document), patch)
    raise _ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types "
        f"include: application/json-patch+json, application/merge-patch+json, "
        f"application/strategic-merge-patch+json (not {content_type})",
    )


def rewrite_argv(argv: Sequence[str], mounts: Mapping[str, Path]) -> list[str]:
    """Replace each mount path in argv by its local folder, wherever it stands as a path.

    A mount path is replaced where it starts an argument or follows whitespace, `=` or a quote,
    and ends the argument or is followed by `/`, whitespace or a quote: `/var/lib/odoo`,
    `/var/lib/odoo/filestore`, `--directory=/var/lib/odoo/x` and the words of an `sh -c` script
    are rewritten, `/var/lib/odoo2` and `/x/var/lib/odoo` are not. The longest mount path wins.
    """
    paths = sorted((p for p in mounts if p), key=len, reverse=True)
    if not paths:
        return list(argv)
    pattern = re.compile(
        r"(?<![^\s='\"])(" + "|".join(re.escape(p) for p in paths) + r")(?![^/\s'\"])"
    )
    return [pattern.sub(lambda m: str(mounts[m[1]]), arg) for arg in argv]


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process and its children (it leads its own process group)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _frame(message: WSMessage) -> tuple[int, bytes] | None:
    """(channel, payload) of a client message; the client sends str data as text frames."""
    if message.type is WSMsgType.BINARY and message.data:
        return message.data[0], message.data[1:]
    if message.type is WSMsgType.TEXT and message.data:
        return ord(message.data[0]), message.data[1:].encode()
    return None


def _event_line(event: str, obj: Obj) -> bytes:
    return json.dumps({"type": event, "object": obj}).encode() + b"\n"


def _exit_status(command: Sequence[str], code: int) -> Obj:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
        f"[{' '.join(command)}], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _start_failure(call: ExecCall, error: OSError) -> Obj:
    """The Status of an exec whose command cannot start (the runtime's error, as on containerd)."""
    why = "executable file not found in $PATH" if error.errno == errno.ENOENT else error.strerror
    message = (
        "Internal error occurred: error executing command in container: failed to exec in "
        "container: failed to start exec: OCI runtime exec failed: exec failed: unable to start "
        f'container process: exec: "{call.command[0]}": {why}: unknown'
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
    }


def _running_status(pod: Obj, ip: str) -> Obj:
    now = _now()
    conditions = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
    return {
        "phase": "Running",
        "conditions": [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
            for t in (*conditions, "PodScheduled")
        ],
        "hostIP": "10.0.0.11",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": [
            {
                "name": c["name"],
                "state": {"running": {"startedAt": now}},
                "ready": True,
                "restartCount": 0,
                "image": c["image"],
                "imageID": f"{c['image']}@sha256:{secrets.token_hex(32)}",
                "containerID": f"containerd://{secrets.token_hex(32)}",
                "started": True,
            }
            for c in pod["spec"]["containers"]
        ],
        "qosClass": "BestEffort",
    }


def _pod_spec(containers: Sequence[str], image: str, mounts: Mapping[str, MountSource]) -> Obj:
    volumes: list[Obj] = []
    volume_mounts: list[Obj] = []
    for index, (path, source) in enumerate(mounts.items()):
        if isinstance(source, Path):
            volume = {"name": f"host-{index}", "hostPath": {"path": str(source), "type": ""}}
        elif source[0] == "pvc":
            volume = {"name": source[1], "persistentVolumeClaim": {"claimName": source[1]}}
        else:
            raise ValueError(f"a mount is ('pvc', claim name) or a local Path, not {source!r}")
        volumes.append(volume)
        volume_mounts.append({"name": volume["name"], "mountPath": path})
    return _with_pod_defaults(
        {
            "containers": [
                {"name": name, "image": image, "volumeMounts": copy.deepcopy(volume_mounts)}
                for name in containers
            ],
            "volumes": volumes,
        }
    )


def _with_pod_defaults(spec: Obj) -> Obj:
    for container in spec["containers"]:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("schedulerName", "default-scheduler")
    return spec


def _validate_pod(pod: Obj) -> None:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    causes: list[Obj] = []
    if not meta.get("name") and not meta.get("generateName"):
        causes.append(
            _required("metadata.name")
            | {"message": "Required value: name or generateName is required"}
        )
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append(_required("spec.containers"))
        containers = []
    volumes = {v.get("name") for v in spec.get("volumes") or []}
    for i, container in enumerate(containers):
        for key in ("name", "image"):
            if not container.get(key):
                causes.append(_required(f"spec.containers[{i}].{key}"))
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.append({
                    "reason": "FieldValueNotFound",
                    "message": f"Not found: {json.dumps(mount.get('name'))}",
                    "field": f"spec.containers[{i}].volumeMounts[{j}].name",
                })  # fmt: skip
    if causes:
        raise _invalid("Pod", meta.get("name") or meta.get("generateName") or "", causes)


def _pod_security(pod: Obj, level: str) -> list[str]:
    """What the PodSecurity admission plugin reports for `level` (a subset of its checks:
    hostPath volumes and privileged containers for baseline; for restricted also
    allowPrivilegeEscalation, capabilities, runAsNonRoot and seccompProfile), in its words."""
    if level not in ("baseline", "restricted"):
        return []
    spec = pod["spec"]
    pod_context = spec.get("securityContext") or {}
    containers = spec["containers"]
    problems = []
    privileged = [c["name"] for c in containers
                  if (c.get("securityContext") or {}).get("privileged")]  # fmt: skip
    if privileged:
        problems.append(f'privileged (container "{privileged[0]}" must not set '
                        "securityContext.privileged=true)")  # fmt: skip
    host = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host:
        problems.append(f'hostPath volumes (volume "{host[0]}")')
    if level != "restricted":
        return problems
    checks = (
        ("allowPrivilegeEscalation != false", "must set securityContext."
         "allowPrivilegeEscalation=false", lambda c: c.get("allowPrivilegeEscalation") is False),
        ("unrestricted capabilities", 'must set securityContext.capabilities.drop=["ALL"]',
         lambda c: "ALL" in ((c.get("capabilities") or {}).get("drop") or [])),
    )  # fmt: skip
    for title, must, ok in checks:
        bad = [c["name"] for c in containers if not ok(c.get("securityContext") or {})]
        if bad:
            problems.append(f'{title} (container "{bad[0]}" {must})')
    for title, key, must, ok in (
        ("runAsNonRoot != true", "runAsNonRoot", "must set securityContext.runAsNonRoot=true",
         lambda v: v is True),
        ("seccompProfile", "seccompProfile", "must set securityContext.seccompProfile.type to "
         '"RuntimeDefault" or "Localhost"',
         lambda v: (v or {}).get("type") in ("RuntimeDefault", "Localhost")),
    ):  # fmt: skip
        bad = [
            c["name"]
            for c in containers
            if not ok((c.get("securityContext") or {}).get(key, pod_context.get(key)))
        ]
        if bad:
            problems.append(f'{title} (pod or container "{bad[0]}" {must})')
    return problems


class K8sEmulator:
    """The emulated API server; use as a context manager (or `start()`/`stop()`).

    Every public method may be called from the test's thread at any time: the state lives on
    the server's event loop and the methods run their work there.
    """

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self.pod_start_delay = 0.2  # seconds from Pending to Running
        self.pod_stop_delay = 0.3  # seconds from deletionTimestamp to gone
        # The exec subprotocols the server speaks, by preference: (V4, V1) is a server before
        # Kubernetes 1.30, which answers a client offering v5 and v4 with v4.
        self.exec_protocols: tuple[str, ...] = (V5, V4, V1)
        # A server from 1.35 with AuthorizePodWebsocketUpgradeCreatePermission: an exec also
        # needs `create pods/exec` (False: a server that checks only `get`).
        self.exec_needs_create = True
        # kubelet's streaming idle timeout (streamingConnectionIdleTimeout), or a load
        # balancer's on the way: an exec with no frame either way for this many seconds is
        # cut (None: never). `on_idle_window` acts once one has outlived two such windows.
        self.stream_idle_timeout: float | None = None
        # How long a ReadWriteOnce volume stays attached to a node once its pod is gone:
        # the CSI driver's detach there (`detach_delay`, by node: none unless said), and
        # after a delete with grace 0, before kubelet unmounted it, the attach/detach
        # controller's maxWaitForUnmountDuration (6 minutes), after which it detaches by
        # force (`force_detach_delay`).
        self.detach_delay: dict[str, float] = {}
        self.force_detach_delay = 360.0
        self._dir = Path(tempfile.mkdtemp(prefix="k8s-emulator-"))
        self.kubeconfig = self._dir / "kubeconfig"
        self._cwd = self._dir / "cwd"  # the working directory of exec'd processes
        self._cwd.mkdir()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="k8s-emulator", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in _KINDS}
        self._history: list[tuple[int, str, str, Obj]] = []
        self._watches: set[_Watch] = set()
        self._pvc_dirs: dict[tuple[str, str], Path] = {}
        self._replicasets: dict[tuple[str, str], Obj] = {}  # deployment -> its pods' ownerRef
        self._deployment_env: dict[tuple[str, str], dict[str, str]] = {}
        self._process_env: dict[str, dict[str, str]] = {}  # pod uid -> env of its processes
        self._processes: dict[str, set[asyncio.subprocess.Process]] = {}  # pod uid -> running
        self._requests: list[Request] = []
        self._exec_log: list[ExecRecord] = []
        self._exec_faults: list[_ExecFault] = []
        self._exec_hooks: list[tuple[Callable[[ExecCall], bool], Callable[[], None]]] = []
        self._failing_images: dict[str, tuple[str, str]] = {}  # image -> (reason, message)
        self._image_users: dict[str, str] = {}  # image -> its USER, when not root
        self._forbidden: dict[tuple[str, str], int] = {}  # -> requests still let through
        self._keep_pending = False
        self._db_hosts: dict[tuple[str, str], tuple[Path, str, Mapping[str, str] | None]] = {}
        self._image_envs: dict[str, dict[str, str]] = {}
        self._idle_hooks: list[tuple[Callable[[ExecCall], bool], Callable[[], None]]] = []
        self._placements: list[tuple[dict[str, str], str]] = []  # pod labels -> their node
        self._lingering: dict[tuple[str, str], tuple[str, float]] = {}  # claim -> node, until
        self._attach_said: dict[str, str] = {}  # pod uid -> its last Multi-Attach message
        self._blackhole: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # handlers of requests under way
        self._reapers: set[asyncio.Task[None]] = set()
        self._ips = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        # Where an unreachable `add_db_host` server leads: a port that listens and never
        # accepts, so a connection gets no answer, as packets a NetworkPolicy drops.
        self._blackhole = socket.socket()
        self._blackhole.bind(("127.0.0.1", 0))
        self._blackhole.listen(1)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(sock), self._loop).result(timeout=30)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def exec_plugin_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig at `path` whose user gets its token from an exec credential plugin
        (client.authentication.k8s.io/v1beta1, as `aws eks get-token` or `gke-gcloud-auth-
        plugin` are), until `expire_login`. Its tokens carry an expirationTimestamp in the
        past, so the client runs the plugin again before every request: an EKS token's
        15 minutes, compressed to none."""
        plugin, credential = self._dir / "credential-plugin", self._dir / "credential.json"
        credential.write_text(json.dumps({
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "kind": "ExecCredential",
            "status": {"token": self.token, "expirationTimestamp": "1970-01-01T00:00:00Z"},
        }))  # fmt: skip
        plugin.write_text(
            "#!/bin/sh\n"
            f"if [ -e {self._dir / 'login-expired'} ]; then\n"
            "  echo 'Error loading SSO Token: Token for example does not exist' >&2\n"
            "  echo 'To refresh this SSO session run aws sso login' >&2\n"
            "  exit 255\n"
            "fi\n"
            f"exec cat {credential}\n"
        )
        plugin.chmod(0o755)
        exec_user = {"apiVersion": "client.authentication.k8s.io/v1beta1",
                     "command": str(plugin), "interactiveMode": "Never"}  # fmt: skip
        return self.kubeconfig_with(path, user={"token": None, "exec": exec_user})

    def expire_login(self) -> None:
        """The plugin's login expires (it exits 255 with the SSO tool's message) and the
        tokens it gave stop working (401), as when an SSO session ends mid-pull."""
        (self._dir / "login-expired").touch()
        self.token = secrets.token_urlsafe(24)

    def kubeconfig_with(
        self,
        path: Path,
        *,
        context: Obj | None = None,
        user: Obj | None = None,
        cluster: Obj | None = None,
    ) -> Path:
        """A copy of `kubeconfig` at `path` with these fields added to its context (e.g.
        `namespace`), user (e.g. an `exec` credential plugin instead of the token: give
        `token: None` to remove it) and cluster (e.g. `proxy-url`)."""
        config = json.loads(self.kubeconfig.read_text())
        for entry, extra in (("contexts", context), ("users", user), ("clusters", cluster)):
            inner = config[entry][0][entry[:-1]]
            inner |= extra or {}
            config[entry][0][entry[:-1]] = {k: v for k, v in inner.items() if v is not None}
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def stop(self) -> None:
        """Stop the server: end every watch and exec, kill their processes, remove temp files."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop.close()
        if self._blackhole is not None:
            self._blackhole.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> K8sEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(middlewares=[self._middleware])
        core, apps = "/api/v1/namespaces/{namespace}", "/apis/apps/v1/namespaces/{namespace}"
        namespaced = "{resource:pods|persistentvolumeclaims}"
        app.router.add_get("/api/v1/{resource:namespaces}", self._list)
        app.router.add_get("/api/v1/{resource:namespaces}/{name}", self._get)
        app.router.add_get(f"{core}/{namespaced}", self._list)
        app.router.add_get(f"{core}/{{resource:events}}", self._list)
        app.router.add_get(f"{core}/{{resource:secrets}}/{{name}}", self._get)
        app.router.add_get(f"{core}/{namespaced}/{{name}}", self._get)
        app.router.add_post(f"{core}/pods", self._create_pod)
        app.router.add_delete(f"{core}/pods/{{name}}", self._delete_pod)
        app.router.add_get(f"{core}/pods/{{name}}/exec", self._exec)
        app.router.add_get(f"{apps}/{{resource:deployments}}", self._list)
        app.router.add_get(f"{apps}/{{resource:deployments}}/{{name}}", self._get)
        app.router.add_patch(f"{apps}/deployments/{{name}}", self._patch_deployment)
        app.router.add_get(f"{apps}/deployments/{{name}}/scale", self._get_scale)
        app.router.add_patch(f"{apps}/deployments/{{name}}/scale", self._patch_scale)
        hpas = "/apis/autoscaling/v2/namespaces/{namespace}/{resource:horizontalpodautoscalers}"
        app.router.add_get(hpas, self._list)
        app.router.add_get(f"{hpas}/{{name}}", self._get)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._reapers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _on_loop(self, work: Callable[[], T]) -> T:
        async def run() -> T:
            return work()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    # -- the test's side: objects ------------------------------------------------------------

    def add_namespace(self, name: str) -> None:
        self._on_loop(lambda: self._ensure_namespace(name))

    def add_pvc(self, namespace: str, name: str, local_dir: Path, size: str = "10Gi") -> None:
        """A Bound PersistentVolumeClaim whose volume is the local folder `local_dir`."""

        def add() -> None:
            self._ensure_namespace(namespace)
            self._pvc_dirs[(namespace, name)] = Path(local_dir)
            modes = ["ReadWriteOnce"]
            pvc = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _metadata(name, namespace),
                "spec": {
                    "accessModes": modes,
                    "resources": {"requests": {"storage": size}},
                    "storageClassName": "standard",
                    "volumeMode": "Filesystem",
                    "volumeName": f"pvc-{uuid.uuid4()}",
                },
                "status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}},
            }
            self._commit("persistentvolumeclaims", pvc, "ADDED")

        self._on_loop(add)

    def add_deployment(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        replicas: int = 1,
        mounts: Mapping[str, MountSource] = ODOO_MOUNTS,
        image: str = "odoo:17.0",
        container: str = "odoo",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """A Deployment selecting `labels`, with `replicas` pods already Running.

        `mounts` maps a container path to ("pvc", claim name) or a local folder; `env` is the
        environment of the processes exec'd in its pods (not shown in the pod spec).
        """

        def add() -> None:
            self._ensure_namespace(namespace)
            template_hash = _random_name(10)
            self._replicasets[(namespace, name)] = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": f"{name}-{template_hash}",
                "uid": str(uuid.uuid4()),
                "controller": True,
                "blockOwnerDeletion": True,
            }
            self._deployment_env[(namespace, name)] = dict(env or {})
            meta = _metadata(name, namespace, labels)
            meta |= {"generation": 1, "annotations": {"deployment.kubernetes.io/revision": "1"}}
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": dict(labels)},
                    "template": {
                        "metadata": {"labels": dict(labels)},
                        "spec": _pod_spec([container], image, mounts),
                    },
                    "strategy": {"type": "Recreate"},
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": 600,
                },
                "status": {},
            }
            self._commit("deployments", deployment, "ADDED")
            for _ in range(replicas):
                self._create_replica(deployment, running=True)
            self._update_deployment_status(deployment)

        self._on_loop(add)

    def add_pod(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str] | None = None,
        containers: Sequence[str] = ("main",),
        env: Mapping[str, str] | None = None,
        mounts: Mapping[str, MountSource] | None = None,
        phase: str = "Running",
        image: str = "busybox:1.36",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """A pod outside any controller (e.g. a StatefulSet's `postgres-0`), in `phase`.

        `env` is the environment of the processes exec'd in it (e.g. PGHOST, PGPORT, PGUSER
        of the test's PostgreSQL), added to the test's own; it is not shown in the pod spec.
        The environment's PATH, when given, decides which programs an exec finds (a fake
        `pg_dump`, say).
        """

        def add() -> None:
            self._ensure_namespace(namespace)
            meta = _metadata(name, namespace, labels)
            if annotations:
                meta["annotations"] = dict(annotations)
            pod: Obj = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": meta,
                "spec": _pod_spec(containers, image, mounts or {}),
                "status": {"phase": phase, "qosClass": "BestEffort"},
            }
            self._process_env[pod["metadata"]["uid"]] = dict(env or {})
            if phase == "Running":
                pod["spec"]["nodeName"] = NODE
                pod["status"] = _running_status(pod, self._next_ip())
            self._commit("pods", pod, "ADDED")

        self._on_loop(add)

    def add_hpa(
        self, namespace: str, name: str, deployment: str, min_replicas: int, max_replicas: int
    ) -> None:
        """A HorizontalPodAutoscaler (autoscaling/v2) of the deployment; nothing acts on it
        (a real one leaves a deployment at 0 alone, and scales it once above 0)."""

        def add() -> None:
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(name, namespace),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": deployment},
                    "minReplicas": min_replicas,
                    "maxReplicas": max_replicas,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}
                    }}],
                },
                "status": {"currentReplicas": 0, "desiredReplicas": 0},
            }  # fmt: skip
            self._commit("horizontalpodautoscalers", hpa, "ADDED")

        self._on_loop(add)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Scale a deployment as a third party would (a colleague's kubectl, a GitOps
        controller's self-heal): a new resourceVersion, and its controller acts."""

        def change() -> None:
            deployment = self._objects["deployments"][(namespace, name)]
            if deployment["spec"]["replicas"] != replicas:
                deployment["spec"]["replicas"] = replicas
                deployment["metadata"]["generation"] += 1
                self._commit("deployments", deployment, "MODIFIED")
                self._reconcile(deployment)

        self._on_loop(change)

    def on_exec(self, match: Callable[[ExecCall], bool], action: Callable[[], None]) -> None:
        """Run `action` (in a thread of its own, so it may call this emulator's methods) when
        a matching exec starts, before its command does: a third party acting at that moment
        (Argo CD scaling Odoo back up while the tar runs, say). The exec waits for it."""

        def add() -> None:
            self._exec_hooks.append((match, action))

        self._on_loop(add)

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """An Opaque Secret (get only, as a role that may read one Secret would)."""

        def add() -> None:
            self._ensure_namespace(namespace)
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(name, namespace),
                "type": "Opaque",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            }
            self._commit("secrets", secret, "ADDED")

        self._on_loop(add)

    def fail_image(self, image: str, message: str = "") -> None:
        """Pods with this image cannot pull it: they stay Pending, their container waiting
        with reason ErrImagePull then ImagePullBackOff, and Warning events (Failed,
        BackOff) as kubelet writes them."""
        text = message or (
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": {image}: not found'
        )

        def add() -> None:
            self._failing_images[image] = ("ImagePullBackOff", text)

        self._on_loop(add)

    def image_user(self, image: str, user: str) -> None:
        """The image's USER (as a Dockerfile's `USER odoo`): with runAsNonRoot and no
        runAsUser, a non-numeric one makes kubelet refuse the container
        (CreateContainerConfigError), as on a real node."""

        def add() -> None:
            self._image_users[image] = user

        self._on_loop(add)

    def set_pod_security(self, namespace: str, level: str) -> None:
        """Label the namespace `pod-security.kubernetes.io/enforce: LEVEL` (privileged,
        baseline, restricted): pod creation is then admitted as the PodSecurity admission
        plugin does (see `_pod_security`)."""

        def change() -> None:
            self._ensure_namespace(namespace)
            ns = self._objects["namespaces"][("", namespace)]
            ns["metadata"]["labels"][POD_SECURITY] = level
            self._commit("namespaces", ns, "MODIFIED")

        self._on_loop(change)

    def events(self, namespace: str) -> list[Obj]:
        return self._on_loop(
            lambda: [
                copy.deepcopy(e)
                for (ns, _), e in sorted(self._objects["events"].items())
                if ns == namespace
            ]
        )

    def pods(self, namespace: str) -> list[Obj]:
        """The pods of a namespace now (terminating ones included), as the API shows them."""
        return self._on_loop(
            lambda: [
                copy.deepcopy(pod)
                for (ns, _), pod in sorted(self._objects["pods"].items())
                if ns == namespace
            ]
        )

    def replicas(self, namespace: str, deployment: str) -> int:
        """The replica count a deployment asks for (its spec.replicas)."""
        return self._on_loop(
            lambda: int(self._objects["deployments"][(namespace, deployment)]["spec"]["replicas"])
        )

    def deployment(self, namespace: str, name: str) -> Obj:
        """A deployment as the API shows it now."""
        return self._on_loop(lambda: copy.deepcopy(self._objects["deployments"][(namespace, name)]))

    def annotate(
        self,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        field: Literal["annotations", "labels"] = "annotations",
    ) -> None:
        """Set (None: remove) annotations (or labels) of a deployment, as `kubectl annotate`
        (`kubectl label`) would: a new resourceVersion, as any change of it."""

        def change() -> None:
            deployment = self._objects["deployments"][(namespace, name)]
            meta = deployment["metadata"]
            merged = {**meta.get(field, {}), **annotations}
            meta[field] = {k: v for k, v in merged.items() if v is not None}
            self._commit("deployments", deployment, "MODIFIED")

        self._on_loop(change)

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, in order."""
        return list(self._requests)

    @property
    def exec_log(self) -> list[ExecRecord]:
        """Every exec that has ended, in the order they ended, with the bytes each one moved.

        A record is added before the client can see the end: before the exit status is sent,
        before the FIN of a dropped connection; for a client that leaves, once the server
        notices. So once the client has the status (or the drop), the record is there.
        """
        if not self._thread.is_alive():  # stopped: nothing adds to it any more
            return list(self._exec_log)
        return self._on_loop(lambda: list(self._exec_log))

    # -- the test's side: faults -------------------------------------------------------------

    def drop_exec(
        self,
        match: Callable[[ExecCall], bool],
        after_bytes: int = 0,
        times: int | None = None,
        *,
        reset: bool = False,
    ) -> None:
        """Cut the TCP connection of matching execs once `after_bytes` stdout bytes are sent.

        The process is killed; the client receives exactly `after_bytes` stdout bytes (fewer
        if the command writes fewer, the cut then comes when it ends), then the end of the
        TCP stream: every byte is flushed to the socket, then a FIN (shutdown for writing),
        with no WebSocket close frame and no status on channel 3. The server keeps reading
        (and discarding) until the client closes, `DROP_LINGER` seconds at most, then closes
        its socket: it never closes on unread data, which would turn into an RST. So the
        client reads every byte, then its socket reports the end of the stream:
        websocket-client raises WebSocketConnectionClosedException ("Connection to remote
        host was lost.") and kubernetes' WSClient has no status (`returncode` is None).

        `reset=True` ends it abortively instead, with an RST once the bytes are flushed to the
        socket (SO_LINGER 0): what the kernel has not sent yet is lost, so the client may get
        fewer bytes, and usually ConnectionResetError rather than a clean end of stream.
        `times`: how many execs this applies to (None: all of them).
        """
        fault = _ExecFault(match, after_bytes, None, b"", times, reset)
        self._on_loop(lambda: self._exec_faults.append(fault))

    def fail_exec(
        self,
        match: Callable[[ExecCall], bool],
        exit_code: int = 1,
        after_bytes: int | None = None,
        stderr: bytes = b"",
        times: int | None = None,
    ) -> None:
        """Make matching execs fail with `exit_code`.

        With `after_bytes` the process is killed once that many stdout bytes are sent (as
        pg_dump dying halfway); without, it runs to its end. Then `stderr` is sent on the
        stderr channel and the exit status says `exit_code`. `times` as in `drop_exec`.
        """
        fault = _ExecFault(match, after_bytes, exit_code, stderr, times)
        self._on_loop(lambda: self._exec_faults.append(fault))

    def close_exec(
        self,
        match: Callable[[ExecCall], bool],
        after_bytes: int | None = None,
        times: int | None = None,
    ) -> None:
        """End matching execs with a normal WebSocket close (a close frame, then the TCP FIN)
        but no status on channel 3, as a proxy that ends the stream cleanly might.

        Without `after_bytes` the command runs to its end and every byte is sent: only the
        status is missing. With it, the process is killed after that many stdout bytes.
        `times` as in `drop_exec`.
        """
        fault = _ExecFault(match, after_bytes, None, b"", times, close=True)
        self._on_loop(lambda: self._exec_faults.append(fault))

    def truncate_exec(
        self, match: Callable[[ExecCall], bool], after_bytes: int, times: int | None = None
    ) -> None:
        """Lose the end of matching execs' stdout and still end them with their real exit
        status (Success for a command that worked), as in kubernetes issue 124571: the client
        gets `after_bytes` stdout bytes, the command runs to its end (the rest of its stdout
        is read and thrown away), its stderr arrives whole, then the status and a close.
        `times` as in `drop_exec`."""
        fault = _ExecFault(match, after_bytes, None, b"", times, truncate=True)
        self._on_loop(lambda: self._exec_faults.append(fault))

    def add_db_host(
        self,
        host: str,
        port: int,
        socket_dir: Path,
        real_port: int,
        reachable: Mapping[str, str] | None = None,
    ) -> None:
        """A PostgreSQL server outside the cluster (RDS, Cloud SQL) at `host:port`, which is
        the local server on the Unix socket `socket_dir` (port `real_port`). An exec whose
        argv has `-h HOST` (and `-p PORT`) gets them rewritten to that socket, when its pod's
        labels match `reachable` (None: every pod); from any other pod to a local port that
        listens and never answers, as a NetworkPolicy or a security group that admits only
        some pods drops the packets: libpq waits for its connect_timeout."""

        def add() -> None:
            self._db_hosts[(host, str(port))] = (socket_dir, str(real_port), reachable)

        self._on_loop(add)

    def image_env(self, image: str, env: Mapping[str, str]) -> None:
        """What an image holds, as the environment of the processes exec'd in its containers
        (e.g. a PATH whose `pg_dump` is another version's): the pod's own env comes after."""

        def add() -> None:
            self._image_envs[image] = dict(env)

        self._on_loop(add)

    def on_idle_window(self, match: Callable[[ExecCall], bool], action: Callable[[], None]) -> None:
        """Run `action` (in a thread, once per exec) when a matching exec has stayed open for
        twice `stream_idle_timeout`: proof that it outlived an idle window, for a test that
        keeps a command silent (but for its heartbeat) until then."""

        def add() -> None:
            self._idle_hooks.append((match, action))

        self._on_loop(add)

    def place(self, labels: Mapping[str, str], node: str) -> None:
        """Schedule the pods with these labels on `node` (others: node-1), e.g. the helper
        pods on node-2, where Odoo's ReadWriteOnce volume attached to node-1 is in the way
        (Multi-Attach) until Odoo's pods are gone."""

        def add() -> None:
            self._placements.append((dict(labels), node))

        self._on_loop(add)

    def keep_pending(self, enabled: bool = True) -> None:
        """Pods scheduled while this is set stay Pending forever (Unschedulable: no CPU)."""

        def set_flag() -> None:
            self._keep_pending = enabled

        self._on_loop(set_flag)

    def forbid(self, verb: str, resource: str, after: int = 0) -> None:
        """Answer 403 Forbidden to `verb` on `resource`, e.g. ("patch", "deployments/scale"),
        once `after` such requests have been let through (a permission that goes away midway).

        Verbs as RBAC names them: get, list, watch, create, patch, delete; an exec is
        ("get", "pods/exec") and, with `exec_needs_create`, ("create", "pods/exec").
        """

        def add() -> None:
            self._forbidden[(verb, resource)] = after

        self._on_loop(add)

    def clear_faults(self) -> None:
        def clear() -> None:
            self._exec_faults.clear()
            self._exec_hooks.clear()
            self._forbidden.clear()
            self._keep_pending = False

        self._on_loop(clear)

    # -- state (event loop only) -------------------------------------------------------------

    def _commit(self, resource: str, obj: Obj, event: str) -> None:
        """Store (or remove, for DELETED) an object under a new resourceVersion; tell watchers."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        if event == "DELETED":
            del self._objects[resource][key]
        else:
            self._objects[resource][key] = obj
        snapshot = copy.deepcopy(obj)
        self._history.append((self._rv, resource, event, snapshot))
        for watch in self._watches:
            if watch.resource == resource and watch.matches(snapshot):
                watch.queue.put_nowait((event, snapshot))

    def _find(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self._objects[resource].get((namespace, name))
        if obj is None:
            raise _not_found(resource, name)
        return obj

    def _ensure_namespace(self, name: str) -> None:
        if ("", name) not in self._objects["namespaces"]:
            namespace = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": _metadata(name, None, {"kubernetes.io/metadata.name": name}),
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            self._commit("namespaces", namespace, "ADDED")

    def _next_ip(self) -> str:
        self._ips += 1
        return f"10.244.{self._ips // 250}.{self._ips % 250 + 2}"

    def _authorize(self, verb: str, resource: str, namespace: str | None, name: str | None) -> None:
        allowed = self._forbidden.get((verb, resource))
        if allowed is None:
            return
        if allowed > 0:
            self._forbidden[(verb, resource)] = allowed - 1
            return
        base, group = resource.split("/")[0], _group(resource)
        subject = f'{base}.{group} "{name}"' if group else f'{base} "{name}"'
        if name is None:
            subject = f"{base}.{group}" if group else base
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        message = (
            f'{subject} is forbidden: User "system:serviceaccount:test:k8s-migrate" cannot {verb} '
            f'resource "{resource}" in API group "{group}"{where}'
        )
        details = (
            {"kind": base} | ({"name": name} if name else {}) | ({"group": group} if group else {})
        )
        raise _ApiError(403, "Forbidden", message, details)

    def _deployment_of(self, pod: Obj) -> Obj | None:
        meta = pod["metadata"]
        for (namespace, name), owner in self._replicasets.items():
            if namespace == meta["namespace"] and owner in meta.get("ownerReferences", []):
                return self._objects["deployments"].get((namespace, name))
        return None

    def _owned_pods(self, deployment: Obj) -> list[Obj]:
        meta = deployment["metadata"]
        owner = self._replicasets[(meta["namespace"], meta["name"])]
        return [
            pod
            for (namespace, _), pod in self._objects["pods"].items()
            if namespace == meta["namespace"]
            and owner in pod["metadata"].get("ownerReferences", [])
        ]

    def _create_replica(self, deployment: Obj, *, running: bool) -> None:
        namespace = deployment["metadata"]["namespace"]
        owner = self._replicasets[(namespace, deployment["metadata"]["name"])]
        template = copy.deepcopy(deployment["spec"]["template"])
        labels = template["metadata"]["labels"] | {
            "pod-template-hash": owner["name"].rsplit("-", 1)[1]
        }
        meta = _metadata(f"{owner['name']}-{_random_name(5)}", namespace, labels)
        meta |= {"generateName": f"{owner['name']}-", "ownerReferences": [dict(owner)]}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": template["spec"],
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        env = self._deployment_env[(namespace, deployment["metadata"]["name"])]
        self._process_env[meta["uid"]] = dict(env)
        if running:
            pod["spec"]["nodeName"] = self._node_for(pod)
            pod["status"] = _running_status(pod, self._next_ip())
        self._commit("pods", pod, "ADDED")
        if not running:
            self._schedule(pod)

    def _schedule(self, pod: Obj) -> None:
        """Start the pod after `pod_start_delay`, or leave it Pending and Unschedulable."""
        meta = pod["metadata"]
        missing = [
            volume["persistentVolumeClaim"]["claimName"]
            for volume in pod["spec"].get("volumes") or []
            if "persistentVolumeClaim" in volume
            and (meta["namespace"], volume["persistentVolumeClaim"]["claimName"])
            not in self._objects["persistentvolumeclaims"]
        ]
        if missing:
            why = f'0/1 nodes are available: persistentvolumeclaim "{missing[0]}" not found.'
        elif self._keep_pending:
            why = "0/1 nodes are available: 1 Insufficient cpu."
        else:
            self._loop.call_later(
                self.pod_start_delay, self._start_pod, meta["namespace"], meta["name"], meta["uid"]
            )
            return
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
             "lastTransitionTime": _now(), "reason": "Unschedulable", "message": why},
        ]  # fmt: skip
        self._commit("pods", pod, "MODIFIED")
        self._event(pod, "FailedScheduling", why, source="default-scheduler")

    def _event(self, pod: Obj, reason: str, message: str, *, source: str = "kubelet") -> None:
        """A Warning event about the pod, as the scheduler or kubelet records it."""
        meta = pod["metadata"]
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": _metadata(name, meta["namespace"]),
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"],
                               "name": meta["name"], "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": source},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
        }  # fmt: skip
        self._commit("events", event, "ADDED")

    def _cannot_start(self, pod: Obj) -> tuple[str, str, str] | None:
        """(waiting reason, message, event reason) of a container kubelet would not start:
        an image it cannot pull, a non-numeric USER under runAsNonRoot."""
        meta, spec = pod["metadata"], pod["spec"]
        pod_context = spec.get("securityContext") or {}
        for container in spec["containers"]:
            if failing := self._failing_images.get(container["image"]):
                message = f'Back-off pulling image "{container["image"]}": {failing[1]}'
                return failing[0], message, "Failed"
            context = {**pod_context, **(container.get("securityContext") or {})}
            user = self._image_users.get(container["image"], "")
            if context.get("runAsNonRoot") and "runAsUser" not in context and user and (
                    not user.isdigit()):  # fmt: skip
                message = _NON_ROOT_UNKNOWN.format(user=user, pod=f"{meta['name']}_"
                                                   f"{meta['namespace']}({meta['uid']})",
                                                   container=container["name"])  # fmt: skip
                return "CreateContainerConfigError", message, "Failed"
        return None

    def _start_pod(self, namespace: str, name: str, uid: str) -> None:
        pod = self._objects["pods"].get((namespace, name))
        if pod is None or pod["metadata"]["uid"] != uid or "deletionTimestamp" in pod["metadata"]:
            return
        pod["spec"]["nodeName"] = self._node_for(pod)
        if (attach := self._multi_attach(pod)) is not None:
            # the attach/detach controller retries; kubelet waits with the container creating
            waiting = {"reason": "ContainerCreating"}
            statuses = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                         "restartCount": 0, "started": False, "state": {"waiting": waiting}}
                        for c in pod["spec"]["containers"]]  # fmt: skip
            if pod["status"].get("containerStatuses") != statuses:
                pod["status"] |= {
                    "conditions": [{"type": "PodScheduled", "status": "True",
                                    "lastProbeTime": None, "lastTransitionTime": _now()}],
                    "containerStatuses": statuses,
                }  # fmt: skip
                self._commit("pods", pod, "MODIFIED")
            if self._attach_said.get(uid) != attach:
                self._attach_said[uid] = attach  # one event per message (real ones count up)
                self._event(pod, "FailedAttachVolume", attach, source="attachdetach-controller")
            self._loop.call_later(0.1, self._start_pod, namespace, name, uid)
            return
        self._attach_said.pop(uid, None)
        if (blocked := self._cannot_start(pod)) is not None:
            reason, message, event = blocked
            pod["status"] |= {
                "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                "lastTransitionTime": _now()}],
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "ready": False,
                     "restartCount": 0, "started": False,
                     "state": {"waiting": {"reason": reason, "message": message}}}
                    for c in pod["spec"]["containers"]
                ],
            }  # fmt: skip
            self._commit("pods", pod, "MODIFIED")
            self._event(pod, event, message)
            return
        pod["status"] = _running_status(pod, self._next_ip())
        self._commit("pods", pod, "MODIFIED")
        if (deployment := self._deployment_of(pod)) is not None:
            self._update_deployment_status(deployment)

    def _node_for(self, pod: Obj) -> str:
        labels = pod["metadata"].get("labels") or {}
        for selector, node in self._placements:
            if all(labels.get(k) == v for k, v in selector.items()):
                return node
        return NODE

    def _rwo_claims(self, pod: Obj) -> list[str]:
        """The ReadWriteOnce claims the pod mounts (one node may attach each)."""
        namespace = pod["metadata"]["namespace"]
        claims = []
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            pvc = self._objects["persistentvolumeclaims"].get((namespace, claim or ""))
            if pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]:
                claims.append(claim)
        return claims

    def _multi_attach(self, pod: Obj) -> str | None:
        """The attach/detach controller's Multi-Attach error for a pod whose ReadWriteOnce
        volume is attached to another node: by a pod there that runs (or is still stopping),
        or by one deleted with grace 0, which the API forgot before its node unmounted it."""
        meta, node = pod["metadata"], pod["spec"]["nodeName"]
        now = self._loop.time()
        for claim in self._rwo_claims(pod):
            pvc = self._objects["persistentvolumeclaims"][(meta["namespace"], claim)]
            volume = pvc["spec"]["volumeName"]
            users = sorted(
                other["metadata"]["name"]
                for (ns, _), other in self._objects["pods"].items()
                if ns == meta["namespace"] and other is not pod
                and other["spec"].get("nodeName") not in (None, node)
                and other["status"].get("phase") == "Running" and claim in self._rwo_claims(other)
            )  # fmt: skip
            if users:
                return (f'Multi-Attach error for volume "{volume}" Volume is already used by '
                        f"pod(s) {', '.join(users)}")  # fmt: skip
            held = self._lingering.get((meta["namespace"], claim))
            if held is not None and held[0] != node and held[1] > now:
                return (
                    f'Multi-Attach error for volume "{volume}" Volume is already '
                    "exclusively attached to one node and can't be attached to another"
                )
        return None

    def _terminate(self, pod: Obj, grace: int) -> None:
        """Delete gracefully (deletionTimestamp now, gone after `pod_stop_delay`) or at once."""
        meta = pod["metadata"]
        if grace == 0:
            self._remove_pod(meta["namespace"], meta["name"], meta["uid"], forced=True)
            return
        if "deletionTimestamp" in meta:
            return
        meta |= {"deletionTimestamp": _now(), "deletionGracePeriodSeconds": grace}
        self._commit("pods", pod, "MODIFIED")
        self._loop.call_later(
            self.pod_stop_delay, self._remove_pod, meta["namespace"], meta["name"], meta["uid"]
        )

    def _remove_pod(self, namespace: str, name: str, uid: str, *, forced: bool = False) -> None:
        """The pod leaves the API. Its ReadWriteOnce volumes stay attached to its node for
        `detach_delay[node]` (the CSI driver's detach), or, when it was deleted with grace 0 (the
        object gone before kubelet unmounted), for `force_detach_delay`."""
        pod = self._objects["pods"].get((namespace, name))
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        node = pod["spec"].get("nodeName") or NODE
        linger = self.force_detach_delay if forced else self.detach_delay.get(node, 0.0)
        if pod["status"].get("phase") == "Running" and linger > 0:
            for claim in self._rwo_claims(pod):
                until = self._loop.time() + linger
                self._lingering[(namespace, claim)] = (pod["spec"]["nodeName"], until)
        self._attach_said.pop(uid, None)
        self._commit("pods", pod, "DELETED")
        for process in self._processes.pop(uid, set()):
            _kill(process)
        self._process_env.pop(uid, None)
        if (deployment := self._deployment_of(pod)) is not None:
            self._update_deployment_status(deployment)

    def _reconcile(self, deployment: Obj) -> None:
        """The ReplicaSet controller: as many live pods as spec.replicas asks for."""
        active = [
            p for p in self._owned_pods(deployment) if "deletionTimestamp" not in p["metadata"]
        ]
        surplus = len(active) - deployment["spec"]["replicas"]
        # Pending pods go first, then the newest, as a ReplicaSet picks them.
        victims = sorted(reversed(active), key=lambda p: p["status"]["phase"] == "Running")
        for pod in victims[: max(surplus, 0)]:
            self._terminate(pod, DEFAULT_GRACE)
        for _ in range(-surplus):
            self._create_replica(deployment, running=False)
        self._update_deployment_status(deployment)

    def _update_deployment_status(self, deployment: Obj) -> None:
        active = [
            p for p in self._owned_pods(deployment) if "deletionTimestamp" not in p["metadata"]
        ]
        ready = sum(p["status"]["phase"] == "Running" for p in active)
        counts = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": len(active),
            "updatedReplicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(deployment["spec"]["replicas"] - ready, 0),
        }
        status = {key: value for key, value in counts.items() if value}  # omitempty, as in Go
        if status != deployment["status"]:
            deployment["status"] = status
            self._commit("deployments", deployment, "MODIFIED")

    def _scale_of(self, deployment: Obj) -> Obj:
        meta, spec = deployment["metadata"], deployment["spec"]
        keys = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {key: meta[key] for key in keys},
            # ScaleSpec.replicas is `omitempty`: at 0 the API sends "spec": {}
            "spec": {"replicas": spec["replicas"]} if spec["replicas"] else {},
            "status": {"replicas": deployment["status"].get("replicas", 0), "selector": selector},
        }

    def _take_exec_fault(self, call: ExecCall) -> _ExecFault | None:
        for fault in self._exec_faults:
            if fault.times != 0 and fault.match(call):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    # -- HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        query = {key: request.query.getall(key) for key in dict.fromkeys(request.query)}
        self._requests.append(
            Request(
                request.method,
                request.path,
                query,
                request.headers.get("Content-Type"),
                exec=bool(_EXEC_PATH.match(request.path)),
            )
        )
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise _ApiError(401, "Unauthorized", "Unauthorized")
            response: web.StreamResponse = await handler(request)
            return response
        except _ApiError as error:
            return error.response()
        except web.HTTPMethodNotAllowed:
            message = "the server does not allow this method on the requested resource"
            return _ApiError(405, "MethodNotAllowed", message).response()
        except web.HTTPNotFound:
            message = "the server could not find the requested resource"
            return _ApiError(404, "NotFound", message, {}).response()
        finally:
            self._tasks.discard(task)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        resource, name = request.match_info["resource"], request.match_info["name"]
        namespace = request.match_info.get("namespace", "")
        self._authorize("get", resource, namespace, name)
        return web.json_response(self._find(resource, namespace, name))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        resource, namespace = request.match_info["resource"], request.match_info.get("namespace")
        watch = _truthy(request.query.get("watch"))
        self._authorize("watch" if watch else "list", resource, namespace, None)
        labels = _label_matcher(request.query.get("labelSelector", ""))
        fields = _field_matcher(resource, request.query.get("fieldSelector", ""))

        def matches(obj: Obj) -> bool:
            meta = obj["metadata"]
            in_namespace = namespace is None or meta.get("namespace") == namespace
            return in_namespace and labels(meta.get("labels") or {}) and fields(obj)

        if watch:
            return await self._watch(request, resource, matches)
        api_version, kind = _KINDS[resource]
        items = [
            {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            for _, obj in sorted(self._objects[resource].items())
            if matches(obj)
        ]
        return web.json_response(
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, resource: str, matches: Callable[[Obj], bool]
    ) -> web.StreamResponse:
        since = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds") or 0) or None
        backlog: list[tuple[str, Obj]]
        if since in ("", "0"):
            backlog = [("ADDED", obj) for obj in self._objects[resource].values() if matches(obj)]
        elif since.isdigit():
            backlog = [
                (event, obj)
                for rv, res, event, obj in self._history
                if rv > int(since) and res == resource and matches(obj)
            ]
        else:
            raise _ApiError(400, "BadRequest", f'invalid resource version "{since}"')
        # Registered before the first await: no event falls between the backlog and the queue.
        watch = _Watch(resource, matches, asyncio.Queue())
        self._watches.add(watch)
        try:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(timeout):
                    for event, obj in backlog:
                        await response.write(_event_line(event, obj))
                    while True:
                        await response.write(_event_line(*await watch.queue.get()))
            return response
        finally:
            self._watches.discard(watch)

    async def _create_pod(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        self._authorize("create", "pods", namespace, None)
        try:
            pod = await request.json()
        except ValueError as error:
            raise _ApiError(400, "BadRequest", f"the body is not JSON: {error}") from None
        if not isinstance(pod, dict):
            raise _ApiError(400, "BadRequest", "the body is not a Pod")
        _validate_pod(pod)
        meta = pod["metadata"]
        if meta.get("namespace", namespace) != namespace:
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        if ("", namespace) not in self._objects["namespaces"]:
            raise _not_found("namespaces", namespace)
        name = meta.get("name") or f"{meta['generateName']}{_random_name(5)}"
        if (namespace, name) in self._objects["pods"]:
            raise _ApiError(
                409,
                "AlreadyExists",
                f'pods "{name}" already exists',
                {"name": name, "kind": "pods"},
            )
        dry_run = request.query.getall("dryRun", [])
        if any(value != "All" for value in dry_run):
            raise _ApiError(400, "BadRequest", f"Invalid dry run value: {dry_run}: "
                            'supported values: "All"')  # fmt: skip
        extra = {k: v for k, v in meta.items() if k in ("generateName", "labels", "annotations")}
        pod |= {"apiVersion": "v1", "kind": "Pod", "metadata": _metadata(name, namespace) | extra}
        pod["spec"] = _with_pod_defaults(pod["spec"])
        pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        level = self._objects["namespaces"][("", namespace)]["metadata"]["labels"].get(
            POD_SECURITY, "privileged"
        )
        if problems := _pod_security(pod, level):
            raise _ApiError(403, "Forbidden", f'pods "{name}" is forbidden: violates '
                            f'PodSecurity "{level}:latest": {", ".join(problems)}',
                            {"name": name, "kind": "pods"})  # fmt: skip
        if dry_run:  # admitted and validated, not stored: the answer a create would get
            return web.json_response(pod, status=201)
        self._commit("pods", pod, "ADDED")
        self._schedule(pod)
        return web.json_response(pod, status=201)

    async def _delete_pod(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self._authorize("delete", "pods", namespace, name)
        pod = self._find("pods", namespace, name)
        body = await request.read()
        options = json.loads(body) if body.strip() else {}
        grace = (options or {}).get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        if grace is None:
            grace = pod["spec"]["terminationGracePeriodSeconds"]
        self._terminate(pod, int(grace))
        if (deployment := self._deployment_of(pod)) is not None:
            self._reconcile(deployment)
        return web.json_response(pod)

    async def _get_scale(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self._authorize("get", "deployments/scale", namespace, name)
        return web.json_response(self._scale_of(self._find("deployments", namespace, name)))

    async def _patch_deployment(self, request: web.Request) -> web.StreamResponse:
        """A patch of a deployment's labels, annotations or replicas (see the module's doc)."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self._authorize("patch", "deployments", namespace, name)
        deployment = self._find("deployments", namespace, name)
        try:
            patch = json.loads(await request.read())
        except ValueError as error:
            raise _ApiError(400, "BadRequest", f"the patch is not JSON: {error}") from None
        patched = _apply_patch(request.content_type, deployment, patch)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise _ApiError(400, "BadRequest", "the patched object is not a Deployment")
        meta, before = patched["metadata"], deployment["metadata"]
        if meta.get("name") != name or meta.get("namespace", namespace) != namespace:
            raise _ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})",
            )
        if meta.get("uid") != before["uid"]:
            raise _ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {meta.get('uid')}, UID in object "
                f"meta: {before['uid']}",
            )
        if meta.get("resourceVersion") != before["resourceVersion"]:
            raise _ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": "apps", "kind": "deployments"},
            )
        _validate_meta_maps("Deployment", name, meta)
        replicas = (patched.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _invalid("Deployment", name, [_invalid_value(
                "spec.replicas", replicas, "must be greater than or equal to 0",
            )])  # fmt: skip
        same = {k: v for k, v in patched.items() if k not in ("metadata", "spec")}
        if (
            same != {k: v for k, v in deployment.items() if k not in ("metadata", "spec")}
            or (
                {k: v for k, v in patched["spec"].items() if k != "replicas"}
                != {k: v for k, v in deployment["spec"].items() if k != "replicas"}
            )
            or {k: v for k, v in meta.items() if k not in ("labels", "annotations")}
            != {k: v for k, v in before.items() if k not in ("labels", "annotations")}
        ):
            raise _invalid("Deployment", name, [{
                "reason": "FieldValueForbidden",
                "message": "Forbidden: the emulator patches only metadata.labels, "
                "metadata.annotations and spec.replicas",
                "field": "spec",
            }])  # fmt: skip
        for key in ("labels", "annotations"):
            if meta.get(key):
                before[key] = meta[key]
            else:
                before.pop(key, None)
        if replicas != deployment["spec"]["replicas"]:
            deployment["spec"]["replicas"] = replicas
            before["generation"] += 1
        self._commit("deployments", deployment, "MODIFIED")
        self._reconcile(deployment)
        return web.json_response(deployment)

    async def _patch_scale(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self._authorize("patch", "deployments/scale", namespace, name)
        deployment = self._find("deployments", namespace, name)
        try:
            patch = json.loads(await request.read())
        except ValueError as error:
            raise _ApiError(400, "BadRequest", f"the patch is not JSON: {error}") from None
        scale = _apply_patch(request.content_type, self._scale_of(deployment), patch)
        spec = (scale.get("spec") or {}) if isinstance(scale, dict) else None
        replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            cause = {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {json.dumps(replicas)}: must be greater than or "
                "equal to 0",
                "field": "spec.replicas",
            }
            raise _invalid("Scale", name, [cause])
        if replicas != deployment["spec"]["replicas"]:
            deployment["spec"]["replicas"] = replicas
            deployment["metadata"]["generation"] += 1
            self._commit("deployments", deployment, "MODIFIED")
            self._reconcile(deployment)
        return web.json_response(self._scale_of(deployment))

    # -- exec --------------------------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        # A WebSocket exec is a GET: authorized as `get pods/exec`, and from 1.35 (feature
        # gate AuthorizePodWebsocketUpgradeCreatePermission, on here) as `create` too.
        self._authorize("get", "pods/exec", namespace, name)
        if self.exec_needs_create:
            self._authorize("create", "pods/exec", namespace, name)
        pod = self._find("pods", namespace, name)
        query = request.query
        command = query.getall("command", [])
        containers = pod["spec"]["containers"]
        wanted = query.get("container")
        if wanted is None and len(containers) > 1:
            names = " ".join(c["name"] for c in containers)
            raise _ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, choose one of: [{names}]",
            )
        container = next((c for c in containers if wanted in (None, c["name"])), None)
        if container is None:
            raise _ApiError(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
        phase = pod["status"]["phase"]
        if phase in ("Succeeded", "Failed"):
            raise _ApiError(
                400,
                "BadRequest",
                f"cannot exec into a container in a completed pod; current phase is {phase}",
            )
        if phase != "Running":
            raise _ApiError(
                400,
                "BadRequest",
                f'unable to upgrade connection: container not found ("{container["name"]}")',
            )
        if not command:
            raise _ApiError(400, "BadRequest", "you must specify at least 1 command")
        streams = {
            STDIN: _truthy(query.get("stdin", "false")),
            STDOUT: _truthy(query.get("stdout", "true")),
            STDERR: _truthy(query.get("stderr", "true")),
        }
        if not any(streams.values()):
            raise _ApiError(
                400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr"
            )
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        selected = next((p for p in self.exec_protocols if p in offered), None)
        if selected is None and any(offered):
            raise _ApiError(
                400,
                "BadRequest",
                f"unable to upgrade connection: requested protocol(s) are not supported: "
                f"{offered}; supports [{' '.join(self.exec_protocols)}]",
            )
        ws = web.WebSocketResponse(protocols=(selected,) if selected else ())
        if not ws.can_prepare(request).ok:
            raise _ApiError(400, "BadRequest", "Upgrade request required")
        protocol = selected or V1  # no protocol offered: the original one
        call = ExecCall(namespace, name, container["name"], tuple(command))
        for match, action in list(self._exec_hooks):
            if match(call):
                await asyncio.to_thread(action)
        fault = self._take_exec_fault(call)
        counts = _ExecCounts(protocol)
        try:
            # Started before the upgrade: once the client has its 101, the pod owns the process.
            process = await self._spawn(pod, container, call, streams)
        except OSError as error:
            self._log_exec(call, counts, None, "not started")
            await ws.prepare(request)
            with contextlib.suppress(ConnectionError):
                await self._finish(ws, protocol, _start_failure(call, error))
            return ws
        pumps: list[asyncio.Task[None]] = []
        try:
            await ws.prepare(request)
            client = asyncio.create_task(self._feed_stdin(ws, protocol, process, counts))
            output = asyncio.create_task(self._pump_output(ws, process, fault, counts))
            pumps += [client, output]
            await self._stream(request, ws, protocol, call, process, fault, counts, client, output)
        except ConnectionError:
            pass  # the client went away
        finally:
            self._log_exec(call, counts, None, "client left")  # unless it ended otherwise first
            # Not cancelled with the handler (the client's disconnection cancels it), and
            # awaited by stop(): the process is killed and reaped whatever happens.
            reaper = asyncio.create_task(self._reap(pod["metadata"]["uid"], process, pumps))
            self._reapers.add(reaper)
            reaper.add_done_callback(self._reapers.discard)
            await asyncio.shield(reaper)
        return ws

    def _mounts(self, pod: Obj, container: Obj) -> dict[str, Path]:
        """Container path -> local folder, for every volume of the container we can map."""
        namespace = pod["metadata"]["namespace"]
        sources: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes") or []:
            if claim := volume.get("persistentVolumeClaim"):
                if (local := self._pvc_dirs.get((namespace, claim["claimName"]))) is not None:
                    sources[volume["name"]] = local
            elif host := volume.get("hostPath"):
                sources[volume["name"]] = Path(host["path"])
        return {
            mount["mountPath"].rstrip("/"): sources[mount["name"]] / mount.get("subPath", "")
            for mount in container.get("volumeMounts") or []
            if mount["name"] in sources
        }

    async def _spawn(
        self, pod: Obj, container: Obj, call: ExecCall, streams: dict[int, bool]
    ) -> asyncio.subprocess.Process:
        uid = pod["metadata"]["uid"]
        env = dict(os.environ)
        env |= {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        env |= self._image_envs.get(container["image"], {})
        env |= self._process_env.get(uid, {})
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        argv = self._rewrite_hosts(rewrite_argv(call.command, self._mounts(pod, container)), pod)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=pipe if streams[STDIN] else devnull,
            stdout=pipe if streams[STDOUT] else devnull,
            stderr=pipe if streams[STDERR] else devnull,
            cwd=self._cwd,
            env=env,
            start_new_session=True,
        )
        self._processes.setdefault(uid, set()).add(process)
        return process

    def _rewrite_hosts(self, argv: list[str], pod: Obj) -> list[str]:
        """`-h HOST -p PORT` of an `add_db_host` server: its local socket where the pod may
        reach it, else a port that refuses."""
        out = list(argv)
        for i in range(len(out) - 3):
            if out[i] != "-h" or out[i + 2] != "-p":
                continue
            server = self._db_hosts.get((out[i + 1], out[i + 3]))
            if server is None:
                continue
            socket_dir, real_port, reachable = server
            labels = pod["metadata"].get("labels") or {}
            if reachable is None or all(labels.get(k) == v for k, v in reachable.items()):
                out[i + 1], out[i + 3] = str(socket_dir), real_port
            else:
                out[i + 1], out[i + 3] = "127.0.0.1", str(self._blackhole.getsockname()[1])
        return out

    async def _stream(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        protocol: str,
        call: ExecCall,
        process: asyncio.subprocess.Process,
        fault: _ExecFault | None,
        counts: _ExecCounts,
        client: asyncio.Task[None],
        output: asyncio.Task[None],
    ) -> None:
        """Run until the output ends (then report the exit), the client leaves, or the
        stream is idle for `stream_idle_timeout` (then it is cut, as `drop_exec` cuts it)."""
        idle = asyncio.create_task(self._idle(call, counts))
        try:
            await asyncio.wait({client, output, idle}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
        if idle.done() and not idle.cancelled() and not output.done():
            _kill(process)
            await self._drop(request, call, counts, client, reset=False, outcome="idle")
            return
        if not output.done():
            return  # the client closed the connection
        output.result()
        if fault is not None and fault.close:
            await process.wait()
            self._log_exec(call, counts, None, "closed")
            await ws.close()  # a close frame, no Status before it
            return
        if fault is not None and fault.exit_code is None and not fault.truncate:
            await self._drop(request, call, counts, client, reset=fault.reset)
            return
        code = await process.wait()
        code = code if code >= 0 else 128 - code  # killed by a signal, as a shell reports it
        if fault is not None and fault.exit_code is not None:
            if fault.stderr:
                await ws.send_bytes(bytes([STDERR]) + fault.stderr)
                counts.stderr += len(fault.stderr)
            code = fault.exit_code
        self._log_exec(call, counts, code, "exited")
        await self._finish(ws, protocol, _exit_status(call.command, code))

    async def _idle(self, call: ExecCall, counts: _ExecCounts) -> None:
        """Return once the exec has had no frame for `stream_idle_timeout` seconds (never,
        without one); run the `on_idle_window` hooks once it outlives two such windows."""
        loop = asyncio.get_running_loop()
        started = counts.active = loop.time()
        hooked = False
        while True:
            limit = self.stream_idle_timeout
            await asyncio.sleep(0.05 if limit is None else min(limit / 20, 0.05))
            if limit is None:
                continue
            now = loop.time()
            if now - counts.active > limit:
                return
            if not hooked and now - started > 2 * limit:
                hooked = True
                for match, action in list(self._idle_hooks):
                    if match(call):
                        loop.run_in_executor(None, action)

    async def _drop(
        self,
        request: web.Request,
        call: ExecCall,
        counts: _ExecCounts,
        client: asyncio.Task[None],
        *,
        reset: bool,
        outcome: ExecOutcome = "dropped",
    ) -> None:
        """End the TCP stream under the WebSocket: no close frame, no status (see drop_exec)."""
        transport = request.transport
        assert transport is not None
        while transport.get_write_buffer_size() and not transport.is_closing():
            await asyncio.sleep(0.005)  # every frame sent, out of asyncio's buffer to the socket
        if transport.is_closing():
            return  # the client left first
        self._log_exec(call, counts, None, outcome)
        if reset:
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()  # closes the socket at once: an RST, unsent bytes are lost
            return
        transport.write_eof()  # the buffer is empty: shutdown(SHUT_WR) now, a FIN after the data
        # Reading on (the stdin task discards what comes) until the client closes: closing
        # with unread data would send an RST, and an RST throws away what the kernel has not
        # sent yet. A close frame from the client ends the stdin task; its FIN, the handler.
        await asyncio.wait({client}, timeout=DROP_LINGER)
        transport.close()

    def _log_exec(
        self, call: ExecCall, counts: _ExecCounts, exit_code: int | None, outcome: ExecOutcome
    ) -> None:
        """Add the exec's record to `exec_log`, once: the first outcome is the one kept."""
        if counts.logged:
            return
        counts.logged = True
        record = ExecRecord(
            call.namespace, call.pod, call.container, call.command,
            counts.stdout, counts.stderr, counts.stdin, exit_code, outcome, counts.protocol,
        )  # fmt: skip
        self._exec_log.append(record)

    async def _reap(
        self, uid: str, process: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]]
    ) -> None:
        """Kill the process, read its pipes to the end (so asyncio closes them), wait for it."""
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        _kill(process)
        for reader in (process.stdout, process.stderr):
            while reader is not None and await reader.read(CHUNK):
                pass
        await process.wait()
        self._processes.get(uid, set()).discard(process)

    async def _finish(self, ws: web.WebSocketResponse, protocol: str, status: Obj) -> None:
        """The exit status on channel 3 (v4/v5: a Status; v1: the message of a failure)."""
        if protocol != V1:
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        elif status["status"] != "Success":
            await ws.send_bytes(bytes([ERROR]) + status["message"].encode())
        await ws.close()

    @staticmethod
    async def _feed_stdin(
        ws: web.WebSocketResponse,
        protocol: str,
        process: asyncio.subprocess.Process,
        counts: _ExecCounts,
    ) -> None:
        """Client frames to the process until the client closes: stdin data, stdin's close."""
        async for message in ws:
            frame = _frame(message)
            if frame is None:
                continue
            channel, payload = frame
            counts.active = asyncio.get_running_loop().time()
            if channel == STDIN:
                counts.stdin += len(payload)
            if process.stdin is None:
                continue
            if channel == STDIN and not process.stdin.is_closing():
                with contextlib.suppress(ConnectionError):
                    process.stdin.write(payload)
                    await process.stdin.drain()
            elif channel == CLOSE and protocol == V5 and payload[:1] == bytes([STDIN]):
                process.stdin.close()

    @staticmethod
    async def _pump_output(
        ws: web.WebSocketResponse,
        process: asyncio.subprocess.Process,
        fault: _ExecFault | None,
        counts: _ExecCounts,
    ) -> None:
        """stdout and stderr to the client in frames of at most 32 KiB, each sent before the
        next is read; with a fault, stdout stops after `after_bytes` and the process is killed."""

        async def pump(reader: asyncio.StreamReader, channel: int, limit: int | None) -> None:
            sent = 0
            while limit is None or sent < limit:
                data = await reader.read(CHUNK if limit is None else min(CHUNK, limit - sent))
                if not data:
                    return
                await ws.send_bytes(bytes([channel]) + data)
                counts.active = asyncio.get_running_loop().time()
                sent += len(data)
                if channel == STDOUT:
                    counts.stdout += len(data)
                else:
                    counts.stderr += len(data)
            if fault is None or not fault.truncate:
                _kill(process)
            while await reader.read(CHUNK):  # to the end: asyncio's wait() waits for the pipes
                pass

        pumps = []
        if process.stdout is not None:
            limit = fault.after_bytes if fault is not None else None
            pumps.append(asyncio.create_task(pump(process.stdout, STDOUT, limit)))
        if process.stderr is not None:
            pumps.append(asyncio.create_task(pump(process.stderr, STDERR, None)))
        try:
            await asyncio.gather(*pumps)
        finally:
            for task in pumps:
                task.cancel()
