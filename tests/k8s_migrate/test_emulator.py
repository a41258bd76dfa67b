"""The Kubernetes API emulator, driven only by the official `kubernetes` client (and, for the
frame-level checks of exec, by websocket-client, the client's own WebSocket library)."""

from __future__ import annotations

import functools
import io
import json
import os
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import WSClient

from tests.k8s_migrate.emulator import V4, K8sEmulator, rewrite_argv

NS = "prod"
ODOO = {"app.kubernetes.io/name": "odoo"}
ODOO_SELECTOR = "app.kubernetes.io/name=odoo"
PYTHON = sys.executable
ALL_BYTES = bytes(range(256))


@pytest.fixture
def api(k8s: K8sEmulator) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(k8s.kubeconfig), context="test") as api:
        yield api


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def odoo(k8s: K8sEmulator, tmp_path: Path) -> Path:
    """Namespace prod: PVC odoo-data (a local folder with a filestore), deployment odoo (2 pods)
    mounting it at /var/lib/odoo, and a database pod postgres-0."""
    data = tmp_path / "odoo-data"
    (data / "filestore" / "odoo" / "ab").mkdir(parents=True)
    (data / "filestore" / "odoo" / "ab" / "abcdef").write_bytes(ALL_BYTES * 4)
    (data / "sessions").mkdir()
    k8s.add_pvc(NS, "odoo-data", data)
    k8s.add_deployment(NS, "odoo", ODOO, replicas=2)
    k8s.add_pod(NS, "postgres-0", {"app": "postgres"}, containers=["postgres"], image="postgres:16")
    return data


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def watch_until(
    list_fn: Callable[..., Any], *args: Any, done: Callable[[list[dict[str, Any]]], bool], **kw: Any
) -> list[dict[str, Any]]:
    """Watch events (server-side timeout 10 s) until `done(events so far)`."""
    stream_ = watch.Watch()
    seen: list[dict[str, Any]] = []
    for event in stream_.stream(list_fn, *args, timeout_seconds=10, **kw):
        seen.append(event)
        if done(seen):
            stream_.stop()
            return seen
    raise AssertionError(f"watch ended first: {[(e['type'], e['raw_object']) for e in seen]}")


def run(core: client.CoreV1Api, pod: str, command: list[str], **kw: Any) -> WSClient:
    kw.setdefault("stdin", False)
    return stream(
        core.connect_get_namespaced_pod_exec, pod, NS, command=command, stdout=True,
        stderr=True, tty=False, _preload_content=False, binary=True, **kw,
    )  # fmt: skip


def refused(call: Callable[[], object]) -> str:
    """Why an exec was refused before the upgrade (websocket-client's "Handshake status ...").

    The v36 client wraps the handshake error in ApiException(status=0, body=None), and then
    its ApiClient fails on `e.body.decode()`: what the caller gets is that AttributeError,
    with the ApiException as its context.
    """
    with pytest.raises((ApiException, AttributeError)) as caught:
        call()
    error = caught.value if isinstance(caught.value, ApiException) else caught.value.__context__
    assert isinstance(error, ApiException) and error.status == 0
    return str(error.reason)


def drain(resp: WSClient, out: bytearray, err: bytearray) -> None:
    """Read an exec's stdout and stderr until the server closes it, one frame at a time.

    One update() a turn, then only what it buffered is taken: a read_*(timeout=0) of an empty
    channel reads one more frame, and when that read finds the connection dropped, it raises
    with the frame the update() buffered still in the client, so a drop would look short.
    Whatever happens, what the client has buffered ends up in `out` and `err`.
    """
    deadline = time.monotonic() + 30
    try:
        while resp.is_open():
            assert time.monotonic() < deadline, "the exec did not end"
            resp.update(timeout=1)
            take(resp, out, err)
    finally:
        take(resp, out, err)


def take(resp: WSClient, out: bytearray, err: bytearray) -> None:
    """Move what the client has buffered on stdout and stderr, without reading more frames."""
    out += resp._channels.pop(1, b"")  # read_stdout() would read on when nothing is buffered
    err += resp._channels.pop(2, b"")


def output(resp: WSClient) -> tuple[bytes, bytes]:
    """stdout and stderr of an exec, read to its end; then its socket is closed."""
    out, err = bytearray(), bytearray()
    try:
        drain(resp, out, err)
    finally:
        close(resp)
    return bytes(out), bytes(err)


def close(resp: WSClient) -> None:
    """WSClient.close() leaves the socket open once the server's close frame has come in."""
    resp.close()
    resp.sock.shutdown()


def helper_pod(name: str, claim: str = "odoo-data") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "k8s-migrate"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "helper", "image": "busybox:1.36", "command": ["sleep", "3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/mnt/odoo", "readOnly": True}],
            }],
            "volumes": [{"name": "data",
                         "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        },
    }  # fmt: skip


def poll(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- REST --------------------------------------------------------------------------------------


def test_objects_deserialize_and_missing_ones_are_404(
    odoo: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    assert core.read_namespace(NS).status.phase == "Active"
    pvc = core.read_namespaced_persistent_volume_claim("odoo-data", NS)
    assert (pvc.status.phase, pvc.spec.resources.requests) == ("Bound", {"storage": "10Gi"})
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(NS).items] == [
        "odoo-data"
    ]
    deployment = apps.read_namespaced_deployment("odoo", NS)
    assert deployment.spec.selector.match_labels == ODOO
    assert deployment.status.ready_replicas == 2
    volume = deployment.spec.template.spec.volumes[0]
    assert volume.persistent_volume_claim.claim_name == "odoo-data"
    assert [d.metadata.name for d in apps.list_namespaced_deployment(NS).items] == ["odoo"]
    pods = core.list_namespaced_pod(NS).items
    assert len(pods) == 3
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.metadata.uid and pod.metadata.resource_version
        assert pod.metadata.creation_timestamp is not None
        assert pod.spec.containers[0].name in ("odoo", "postgres")
    missing: list[tuple[Callable[..., Any], tuple[str, ...], str]] = [
        (apps.read_namespaced_deployment, ("nope", NS), 'deployments.apps "nope" not found'),
        (apps.read_namespaced_deployment_scale, ("nope", NS), 'deployments.apps "nope" not found'),
        (core.read_namespaced_pod, ("nope", NS), 'pods "nope" not found'),
        (core.read_namespaced_persistent_volume_claim, ("nope", NS),
         'persistentvolumeclaims "nope" not found'),
        (core.read_namespace, ("nope",), 'namespaces "nope" not found'),
        (core.read_namespaced_pod, ("postgres-0", "other"), 'pods "postgres-0" not found'),
        (client.BatchV1Api(core.api_client).list_namespaced_job, (NS,),
         "the server could not find the requested resource"),
    ]  # fmt: skip
    for method, args, message in missing:
        with pytest.raises(ApiException) as caught:
            method(*args)
        assert caught.value.status == 404
        status = status_of(caught.value)
        assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotFound", 404)
        assert status["message"] == message


def test_label_and_field_selectors(k8s: K8sEmulator, core: client.CoreV1Api) -> None:
    k8s.add_pod(NS, "a", {"app": "odoo", "tier": "web"})
    k8s.add_pod(NS, "b", {"app": "postgres"})
    k8s.add_pod(NS, "c", {"app": "redis"}, phase="Pending")

    def names(**kw: str) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod(NS, **kw).items]

    assert names(label_selector="app=odoo,tier=web") == ["a"]
    assert names(label_selector="app==odoo,tier=db") == []
    assert names(label_selector="app in (odoo, postgres)") == ["a", "b"]
    assert names(label_selector="app notin (odoo),app!=redis") == ["b"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!tier") == ["b", "c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="status.phase!=Running") == ["c"]
    assert names(label_selector="app in (odoo,redis)", field_selector="status.phase=Pending") == [
        "c"
    ]
    for bad in ({"label_selector": "app in odoo"}, {"field_selector": "spec.image=x"}):
        with pytest.raises(ApiException) as caught:
            core.list_namespaced_pod(NS, **bad)
        assert (caught.value.status, status_of(caught.value)["reason"]) == (400, "BadRequest")


def test_scale_down_and_up_with_every_patch_content_type(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    scale = apps.read_namespaced_deployment_scale("odoo", NS)
    assert (scale.spec.replicas, scale.status.replicas) == (2, 2)
    assert scale.status.selector == ODOO_SELECTOR
    before = core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR)
    old = {p.metadata.name for p in before.items}

    # a dict body: the client sends a strategic merge patch
    scale = apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 0}})
    assert (scale.spec.replicas, scale.status.replicas) == (None, 0)  # `replicas: 0` is omitted
    events = watch_until(
        core.list_namespaced_pod, NS, label_selector=ODOO_SELECTOR,
        resource_version=before.metadata.resource_version,
        done=lambda seen: {e["object"].metadata.name for e in seen if e["type"] == "DELETED"}
        == old,
    )  # fmt: skip
    first = {e["object"].metadata.name: e for e in reversed(events)}
    assert {n: (e["type"], e["object"].metadata.deletion_timestamp is not None)
            for n, e in first.items()} == dict.fromkeys(old, ("MODIFIED", True))  # fmt: skip
    assert core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR).items == []
    assert k8s.replicas(NS, "odoo") == 0

    # a list body: a JSON patch; `replace` fails at 0 replicas as on a real cluster, `add` works
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale(
            "odoo", NS, [{"op": "replace", "path": "/spec/replicas", "value": 1}]
        )
    assert (caught.value.status, status_of(caught.value)["reason"]) == (422, "Invalid")
    apps.patch_namespaced_deployment_scale(
        "odoo", NS, [{"op": "add", "path": "/spec/replicas", "value": 1}]
    )
    events = watch_until(
        core.list_namespaced_pod, NS, label_selector=ODOO_SELECTOR,
        done=lambda seen: any(e["object"].status.phase == "Running" for e in seen),
    )  # fmt: skip
    assert [e["object"].status.phase for e in events] == ["Pending", "Running"]
    assert events[-1]["object"].metadata.name not in old

    # a JSON merge patch, chosen with _content_type
    scale = apps.patch_namespaced_deployment_scale(
        "odoo", NS, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert scale.spec.replicas == 3

    def ready() -> int:
        return int(apps.read_namespaced_deployment("odoo", NS).status.ready_replicas or 0)

    poll(lambda: ready() == 3)
    assert apps.read_namespaced_deployment_scale("odoo", NS).status.replicas == 3
    pods = core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR).items
    assert {p.status.phase for p in pods} == {"Running"} and len(pods) == 3
    assert k8s.replicas(NS, "odoo") == 3
    patches = [(r.method, r.content_type) for r in k8s.requests if r.method == "PATCH"]
    assert [content_type for _, content_type in patches] == [
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/json-patch+json",
        "application/merge-patch+json",
    ]
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": -1}})
    assert caught.value.status == 422


def test_patching_a_deployments_annotations(
    k8s: K8sEmulator, odoo: Path, apps: client.AppsV1Api
) -> None:
    """As `kubectl annotate` does it, with each patch type; validated as the apiserver does."""
    key = "k8s-migrate.odbox/replicas"
    patched = apps.patch_namespaced_deployment(
        "odoo", NS, {"metadata": {"annotations": {key: "2"}}}
    )
    assert patched.metadata.annotations[key] == "2"
    assert patched.metadata.annotations["deployment.kubernetes.io/revision"] == "1"  # merged
    assert apps.read_namespaced_deployment("odoo", NS).metadata.annotations[key] == "2"
    apps.patch_namespaced_deployment("odoo", NS, {"metadata": {"annotations": {key: None}}})
    assert key not in apps.read_namespaced_deployment("odoo", NS).metadata.annotations
    apps.patch_namespaced_deployment(
        "odoo", NS, [{"op": "add", "path": "/metadata/annotations/a~1b", "value": "x"}]
    )
    apps.patch_namespaced_deployment(
        "odoo", NS, {"metadata": {"labels": {"tier": "web"}, "annotations": {"a/b": None}}},
        _content_type="application/merge-patch+json",
    )  # fmt: skip
    now = apps.read_namespaced_deployment("odoo", NS)
    assert now.metadata.labels["tier"] == "web" and "a/b" not in now.metadata.annotations
    assert now.metadata.generation == 1 and now.spec.replicas == 2  # metadata only
    types = [r.content_type for r in k8s.requests if r.method == "PATCH"]
    assert types == ["application/strategic-merge-patch+json"] * 2 + [
        "application/json-patch+json", "application/merge-patch+json",
    ]  # fmt: skip

    def fails(body: Any) -> tuple[int, str, str]:
        with pytest.raises(ApiException) as caught:
            apps.patch_namespaced_deployment("odoo", NS, body)
        status = status_of(caught.value)
        return caught.value.status, status["reason"], status["message"]

    code, reason, message = fails({"metadata": {"annotations": {"bad key!": "x"}}})
    assert (code, reason) == (422, "Invalid") and "metadata.annotations: Invalid value" in message
    assert fails({"metadata": {"annotations": {"Example.com/x": "x"}}})[0] == 422  # prefix
    assert fails({"metadata": {"annotations": {"n": 2}}})[:2] == (400, "BadRequest")
    assert fails({"metadata": {"annotations": {"big": "x" * (256 << 10)}}})[0] == 422
    assert fails({"metadata": {"labels": {"tier": "-web"}}})[0] == 422
    code, reason, message = fails({"metadata": {"resourceVersion": "1", "annotations": {}}})
    assert (code, reason) == (409, "Conflict") and "has been modified" in message
    assert fails({"metadata": {"name": "other"}})[:2] == (400, "BadRequest")
    assert fails({"spec": {"paused": True}})[:2] == (422, "Invalid")  # no rollouts here
    assert fails([{"op": "replace", "path": "/metadata/annotations/none", "value": "x"}])[0] == 422
    assert apps.read_namespaced_deployment("odoo", NS).metadata.labels["tier"] == "web"

    k8s.forbid("patch", "deployments", after=1)  # one more goes through, then 403
    apps.patch_namespaced_deployment("odoo", NS, {"metadata": {"annotations": {key: "3"}}})
    assert fails({"metadata": {"annotations": {key: None}}})[:2] == (403, "Forbidden")
    assert apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 1}})
    assert k8s.deployment(NS, "odoo")["metadata"]["annotations"][key] == "3"


def test_deleting_a_deployment_pod_gets_it_replaced(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    victim = core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR).items[0].metadata.name
    core.delete_namespaced_pod(victim, NS)

    def running() -> set[str]:
        pods = k8s.pods(NS)
        return {p["metadata"]["name"] for p in pods if p["status"]["phase"] == "Running"}

    poll(lambda: victim not in running() and len(running()) == 3)  # 2 odoo + postgres-0


# -- pods --------------------------------------------------------------------------------------


def test_helper_pod_goes_pending_then_running_then_away(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    created = core.create_namespaced_pod(NS, helper_pod("helper"))
    assert created.status.phase == "Pending"
    events = watch_until(
        core.list_namespaced_pod, NS, field_selector="metadata.name=helper",
        done=lambda seen: seen[-1]["object"].status.phase == "Running",
    )  # fmt: skip
    assert [(e["type"], e["object"].status.phase) for e in events] == [
        ("ADDED", "Pending"),
        ("MODIFIED", "Running"),
    ]
    pod = events[-1]["object"]
    assert pod.spec.volumes[0].persistent_volume_claim.claim_name == "odoo-data"
    assert pod.spec.containers[0].volume_mounts[0].read_only is True
    assert pod.status.container_statuses[0].ready is True
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(NS, helper_pod("helper"))
    assert (caught.value.status, status_of(caught.value)["reason"]) == (409, "AlreadyExists")

    deleted = core.delete_namespaced_pod("helper", NS)
    assert deleted.metadata.deletion_timestamp is not None
    watch_until(
        core.list_namespaced_pod, NS, field_selector="metadata.name=helper",
        resource_version=deleted.metadata.resource_version,
        done=lambda seen: seen[-1]["type"] == "DELETED",
    )  # fmt: skip
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("helper", NS)
    assert caught.value.status == 404


def test_invalid_pods_are_422(k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api) -> None:
    def pod(containers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"metadata": {"name": "bad"}, "spec": {"containers": containers}}

    cases = [
        (pod([{"image": "busybox"}]), ["spec.containers[0].name"]),
        (pod([{"name": "x"}]), ["spec.containers[0].image"]),
        (pod([]), ["spec.containers"]),
        (pod([{"name": "x", "image": "busybox",
               "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]),
         ["spec.containers[0].volumeMounts[0].name"]),
        ({"metadata": {}, "spec": {"containers": [{}]}},
         ["metadata.name", "spec.containers[0].name", "spec.containers[0].image"]),
    ]  # fmt: skip
    for body, fields in cases:
        with pytest.raises(ApiException) as caught:
            core.create_namespaced_pod(NS, body)
        status = status_of(caught.value)
        assert (caught.value.status, status["reason"]) == (422, "Invalid")
        assert [c["field"] for c in status["details"]["causes"]] == fields
        assert status["message"].startswith('Pod "')
    assert not any(p["metadata"]["name"] == "bad" for p in k8s.pods(NS))


def pending_helper(core: client.CoreV1Api) -> Any:
    """The pod `helper` once it has a condition; it must be Pending."""
    events = watch_until(
        core.list_namespaced_pod, NS, field_selector="metadata.name=helper",
        done=lambda seen: bool(seen[-1]["object"].status.conditions),
    )  # fmt: skip
    pod = events[-1]["object"]
    assert pod.status.phase == "Pending"
    return pod


def test_a_pod_on_a_missing_pvc_stays_pending(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, helper_pod("helper", claim="nope"))
    pod = pending_helper(core)
    condition = pod.status.conditions[0]
    assert (condition.type, condition.status, condition.reason) == (
        "PodScheduled", "False", "Unschedulable",
    )  # fmt: skip
    assert 'persistentvolumeclaim "nope" not found' in condition.message


# -- exec --------------------------------------------------------------------------------------


def test_exec_streams_megabytes_of_binary_stdout(odoo: Path, core: client.CoreV1Api) -> None:
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 16384)"  # 4 MiB
    resp = run(core, "postgres-0", [PYTHON, "-c", script])
    assert resp.subprotocol == "v5.channel.k8s.io"
    out, err = output(resp)
    assert (len(out), err) == (4 << 20, b"")
    assert out == ALL_BYTES * 16384
    assert resp.returncode == 0


def test_exec_reports_the_exit_code_and_stderr(odoo: Path, core: client.CoreV1Api) -> None:
    resp = run(core, "postgres-0", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert output(resp) == (b"out\n", b"err\n")
    assert resp.returncode == 3


def test_exec_stdin_is_written_and_closed_with_v5(odoo: Path, core: client.CoreV1Api) -> None:
    data = ALL_BYTES * 1024
    resp = run(core, "postgres-0", ["cat"], stdin=True)
    resp.write_stdin(data)
    resp.write_stdin(b"end")
    resp.close_channel(0)  # v5 only: [255, 0] closes the process's stdin, so cat ends
    assert output(resp) == (data + b"end", b"")
    assert resp.returncode == 0


def test_exec_negotiates_v4_when_the_client_offers_only_v4(
    odoo: Path, core: client.CoreV1Api
) -> None:
    resp = run(
        core, "postgres-0", ["sh", "-c", "printf abc; exit 7"],
        _headers={"sec-websocket-protocol": "v4.channel.k8s.io"},
    )  # fmt: skip
    assert resp.subprotocol == "v4.channel.k8s.io"
    assert output(resp) == (b"abc", b"")
    assert resp.returncode == 7


def test_a_server_before_1_30_answers_v5_and_v4_with_v4(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.exec_protocols = (V4,)
    resp = run(core, "postgres-0", ["sh", "-c", "printf abc; exit 3"])  # offers v5 and v4
    assert resp.subprotocol == V4
    assert output(resp) == (b"abc", b"") and resp.returncode == 3
    assert k8s.exec_log[-1].protocol == V4
    v5_only = {"sec-websocket-protocol": "v5.channel.k8s.io"}
    reason = refused(lambda: run(core, "postgres-0", ["true"], _headers=v5_only))
    assert reason.startswith("Handshake status 400")


def test_close_exec_ends_cleanly_without_a_status(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.close_exec(lambda e: e.command[0] == "head", times=1)
    resp = run(core, "postgres-0", ["head", "-c", "100000", "/dev/zero"])
    out, err = output(resp)  # a close frame: no error, every byte
    assert (out, err) == (bytes(100_000), b"") and 3 not in resp._channels
    record = k8s.exec_log[-1]
    assert (record.stdout_bytes, record.exit_code, record.outcome) == (100_000, None, "closed")
    resp = run(core, "postgres-0", ["head", "-c", "10", "/dev/zero"])  # times=1: done
    assert output(resp) == (bytes(10), b"") and resp.returncode == 0


def test_exec_frames_on_the_wire(k8s: K8sEmulator, odoo: Path) -> None:
    """At most 32 KiB per binary frame, a Status on channel 3, then a close frame."""
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)"  # 1 MiB
    query = urllib.parse.urlencode([("command", c) for c in (PYTHON, "-c", script)])
    url = f"ws://127.0.0.1:{k8s.port}/api/v1/namespaces/{NS}/pods/postgres-0/exec?{query}"
    negotiations = [
        ("v4.channel.k8s.io", "v4.channel.k8s.io"),
        ("channel.k8s.io, v4.channel.k8s.io", "v4.channel.k8s.io"),
        ("v5.channel.k8s.io, v4.channel.k8s.io", "v5.channel.k8s.io"),
    ]
    for protocol, expected in negotiations:
        ws = websocket.create_connection(
            url,
            header=[f"Authorization: Bearer {k8s.token}", f"Sec-WebSocket-Protocol: {protocol}"],
        )
        assert ws.getheaders()["sec-websocket-protocol"] == expected
        frames: list[tuple[int, bytes]] = []
        while True:
            opcode, frame = ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            assert opcode == websocket.ABNF.OPCODE_BINARY
            frames.append((frame.data[0], frame.data[1:]))
        ws.shutdown()  # the close handshake is done: close() would leave the socket open
        assert {channel for channel, _ in frames[:-1]} == {1}
        assert max(len(data) for _, data in frames) == 32 * 1024
        assert b"".join(data for _, data in frames[:-1]) == ALL_BYTES * 4096
        assert frames[-1] == (3, b'{"metadata": {}, "status": "Success"}')


def test_exec_with_the_old_channel_protocol(k8s: K8sEmulator, odoo: Path) -> None:
    """channel.k8s.io (also when no protocol is offered): no exit status on success, the
    failure's message as text on channel 3; a protocol we do not know is refused."""
    url = f"ws://127.0.0.1:{k8s.port}/api/v1/namespaces/{NS}/pods/postgres-0/exec"
    auth = f"Authorization: Bearer {k8s.token}"
    failure = b"command terminated with non-zero exit code: error executing command [false], "
    cases = [
        ("true", ["Sec-WebSocket-Protocol: channel.k8s.io"], "channel.k8s.io", []),
        ("false", ["Sec-WebSocket-Protocol: channel.k8s.io"], "channel.k8s.io",
         [b"\x03" + failure + b"exit code 1"]),
        ("false", [], None, [b"\x03" + failure + b"exit code 1"]),
    ]  # fmt: skip
    for command, header, protocol, expected in cases:
        ws = websocket.create_connection(f"{url}?command={command}", header=[auth, *header])
        assert ws.getheaders().get("sec-websocket-protocol") == protocol
        frames = []
        while (message := ws.recv_data_frame(True))[0] != websocket.ABNF.OPCODE_CLOSE:
            frames.append(message[1].data)
        ws.shutdown()  # the close handshake is done: close() would leave the socket open
        assert frames == expected
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection(
            f"{url}?command=true", header=[auth, "Sec-WebSocket-Protocol: base64.channel.k8s.io"]
        )
    assert caught.value.status_code == 400


def test_exec_rewrites_mount_paths_and_passes_the_pod_env(
    k8s: K8sEmulator, core: client.CoreV1Api, tmp_path: Path
) -> None:
    data = tmp_path / "pgdata"
    data.mkdir()
    (data / "note.txt").write_text("hello")
    k8s.add_pod(
        NS, "postgres-0", containers=["postgres"], env={"PGUSER": "odoo", "PGPORT": "5433"},
        mounts={"/var/lib/postgresql": data},
    )  # fmt: skip
    script = "echo $PGUSER:$PGPORT; cat /var/lib/postgresql/note.txt; echo; pwd"
    out, _ = output(run(core, "postgres-0", ["sh", "-c", script]))
    user, note, cwd = out.decode().splitlines()
    assert (user, note) == ("odoo:5433", "hello")
    assert Path(cwd) != Path.cwd() and "k8s-emulator" in cwd
    out, _ = output(
        run(core, "postgres-0", ["find", "--", "/var/lib/postgresql", "-printf", "%P\n"])
    )
    assert out.split() == [b"note.txt"]
    out, _ = output(
        run(core, "postgres-0", ["tar", "--directory=/var/lib/postgresql", "-cf", "-", "."])
    )
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        assert "./note.txt" in tar.getnames()


def test_rewrite_argv() -> None:
    mounts = {"/var/lib/odoo": Path("/tmp/pvc"), "/var/lib/odoo/filestore": Path("/tmp/fs")}
    argv = [
        "tar", "-C", "/var/lib/odoo", "-cf", "-", "/var/lib/odoo/sessions",
        "--directory=/var/lib/odoo/filestore/db", "/var/lib/odoo2", "/x/var/lib/odoo",
        "/var/lib/odoo/filestorex", "sh -c 'du -sb /var/lib/odoo/filestore'",
    ]  # fmt: skip
    assert rewrite_argv(argv, mounts) == [
        "tar", "-C", "/tmp/pvc", "-cf", "-", "/tmp/pvc/sessions",
        "--directory=/tmp/fs/db", "/var/lib/odoo2", "/x/var/lib/odoo",
        "/tmp/pvc/filestorex", "sh -c 'du -sb /tmp/fs'",
    ]  # fmt: skip
    assert rewrite_argv(argv, {}) == argv


def test_tar_in_a_helper_pod_reads_the_pvc_folder(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, helper_pod("helper"))
    poll(lambda: core.read_namespaced_pod("helper", NS).status.phase == "Running")
    resp = run(core, "helper", ["tar", "-C", "/mnt/odoo/filestore", "-cf", "-", "."])
    out, err = output(resp)
    assert (resp.returncode, err) == (0, b"")
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        member = tar.extractfile("./odoo/ab/abcdef")
        assert member is not None and member.read() == ALL_BYTES * 4


def test_exec_errors(k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api) -> None:
    k8s.add_pod(NS, "two", containers=["a", "b"])
    k8s.add_pod(NS, "starting", phase="Pending")
    k8s.add_pod(NS, "done", phase="Succeeded")
    cases = [
        ("nope", None, 'pods \\"nope\\" not found'),
        ("postgres-0", "odoo", "container odoo is not valid for pod postgres-0"),
        ("two", None, "a container name must be specified for pod two, choose one of: [a b]"),
        ("starting", None, 'unable to upgrade connection: container not found (\\"main\\")'),
        (
            "done",
            None,
            "cannot exec into a container in a completed pod; current phase is Succeeded",
        ),
    ]
    for pod, container, message in cases:
        reason = refused(functools.partial(run, core, pod, ["true"], container=container))
        assert reason.startswith("Handshake status 40") and message in reason
    resp = run(core, "two", ["true"], container="b")
    output(resp)
    assert resp.returncode == 0

    resp = run(core, "postgres-0", ["pg_dump_not_here", "--version"])
    output(resp)
    status = json.loads(resp.read_channel(3))  # resp.returncode would raise ValueError here
    assert (status["status"], status["reason"]) == ("Failure", "InternalError")
    assert 'exec: "pg_dump_not_here": executable file not found in $PATH' in status["message"]


def test_exec_ends_when_its_pod_is_deleted(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(NS, helper_pod("helper"))
    poll(lambda: core.read_namespaced_pod("helper", NS).status.phase == "Running")
    resp = run(core, "helper", ["sleep", "60"])
    core.delete_namespaced_pod("helper", NS, grace_period_seconds=0)
    output(resp)
    assert resp.returncode == 137


def test_exec_output_is_not_buffered_without_bound(
    odoo: Path, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """A client that stops reading stops the command: the server holds no more than buffers."""
    marker = tmp_path / "finished"
    script = (
        "import os, sys; print(os.getpid(), flush=True); "
        "[sys.stdout.buffer.write(bytes(1 << 20)) for _ in range(256)]; "
        f"open({str(marker)!r}, 'w').close()"
    )
    resp = run(core, "postgres-0", [PYTHON, "-c", script])
    first = b""
    while b"\n" not in first:
        resp.update(timeout=5)
        first += resp.read_stdout(timeout=0)
    pid = int(first.split(b"\n")[0])
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # 256 MiB could not have gone anywhere
        assert not marker.exists()
        time.sleep(0.05)
    close(resp)  # the client goes away: the process is killed

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    poll(gone)
    assert not marker.exists()


# -- faults ------------------------------------------------------------------------------------


def test_drop_exec_cuts_the_connection_after_n_bytes(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    (odoo / "filestore" / "big").write_bytes(os.urandom(1 << 20))
    k8s.drop_exec(lambda e: e.command[0] == "tar", after_bytes=100_000, times=1)
    k8s.add_pod(NS, "tarpod", mounts={"/var/lib/odoo": ("pvc", "odoo-data")})
    assert output(run(core, "postgres-0", ["echo", "unaffected"])) == (b"unaffected\n", b"")
    resp = run(core, "tarpod", ["tar", "-C", "/var/lib/odoo", "-cf", "-", "."])
    partial, errors = bytearray(), bytearray()
    with pytest.raises(websocket.WebSocketConnectionClosedException, match="was lost"):
        drain(resp, partial, errors)  # the end of the TCP stream, not a close frame
    assert len(partial) == 100_000
    assert resp.returncode is None  # for the client: still running, no close frame came
    assert 3 not in resp._channels  # and no status on channel 3
    resp.update()  # the next look finds the socket gone: the status is missing for good
    assert not resp.is_open()
    with pytest.raises(TypeError):  # kubernetes' client reads an empty channel 3 as YAML None
        _ = resp.returncode
    close(resp)
    resp = run(core, "tarpod", ["tar", "-C", "/var/lib/odoo", "-cf", "-", "."])  # times=1: done
    out, _ = output(resp)
    assert resp.returncode == 0 and len(out) > 1 << 20
    assert out[:100_000] == partial


def test_a_dropped_exec_gets_every_byte_to_a_late_reader(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    """The last frame and the end of the stream both wait in the client's socket: the frame
    is read, then the end is seen. (Reading stderr, then stdout, after each update(), as
    `drain` once did, loses that frame: the stderr read finds the end and raises.)"""
    k8s.drop_exec(lambda e: True, after_bytes=1000)
    resp = run(core, "postgres-0", ["head", "-c", "100000", "/dev/zero"])
    poll(lambda: bool(k8s.exec_log))  # logged just before the FIN is sent
    time.sleep(0.2)
    out, err = bytearray(), bytearray()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        drain(resp, out, err)
    assert (bytes(out), bytes(err), resp.returncode) == (bytes(1000), b"", None)
    close(resp)


def test_drop_exec_with_a_reset(k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api) -> None:
    k8s.drop_exec(lambda e: True, after_bytes=100_000, reset=True)
    resp = run(core, "postgres-0", ["head", "-c", "1000000", "/dev/zero"])
    out, err = bytearray(), bytearray()
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
        drain(resp, out, err)
    assert len(out) <= 100_000 and resp.returncode is None
    assert k8s.exec_log[-1].outcome == "dropped"
    resp.sock.sock.close()  # nothing to shut down any more


def test_exec_log_counts_the_bytes_of_every_exec(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    assert k8s.exec_log == []
    resp = run(core, "postgres-0", ["sh", "-c", "head -c 70000 /dev/zero; echo oops >&2; exit 4"])
    output(resp)
    resp = run(core, "postgres-0", ["cat"], stdin=True)
    resp.write_stdin(ALL_BYTES * 10)
    resp.close_channel(0)
    output(resp)
    k8s.add_pod(NS, "tarpod", mounts={"/var/lib/odoo": ("pvc", "odoo-data")})
    tar = ["tar", "-C", "/var/lib/odoo", "-cf", "-", "."]
    size = len(output(run(core, "tarpod", tar))[0])
    k8s.drop_exec(lambda e: e.command == tuple(tar), after_bytes=5000, times=1)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        drain(run(core, "tarpod", tar), bytearray(), bytearray())
    k8s.fail_exec(lambda e: e.command[0] == "head", exit_code=9, after_bytes=10, stderr=b"no\n")
    output(run(core, "postgres-0", ["head", "-c", "100", "/dev/zero"]))
    output(run(core, "postgres-0", ["not-a-command"]))

    log = k8s.exec_log
    assert [(r.namespace, r.pod, r.container) for r in log] == [
        (NS, "postgres-0", "postgres"), (NS, "postgres-0", "postgres"),
        (NS, "tarpod", "main"), (NS, "tarpod", "main"),
        (NS, "postgres-0", "postgres"), (NS, "postgres-0", "postgres"),
    ]  # fmt: skip
    assert [r.command for r in log[1:]] == [
        ("cat",), tuple(tar), tuple(tar), ("head", "-c", "100", "/dev/zero"), ("not-a-command",),
    ]  # fmt: skip
    assert [(r.stdout_bytes, r.stderr_bytes, r.stdin_bytes, r.exit_code, r.outcome)
            for r in log] == [
        (70_000, 5, 0, 4, "exited"),
        (2560, 0, 2560, 0, "exited"),
        (size, 0, 0, 0, "exited"),
        (5000, 0, 0, None, "dropped"),
        (10, 3, 0, 9, "exited"),
        (0, 0, 0, None, "not started"),
    ]  # fmt: skip
    assert size > 1024  # a tar archive: the filestore, in 512-byte blocks


def test_exec_log_of_a_client_that_leaves(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    resp = run(core, "postgres-0", ["sleep", "60"])
    close(resp)
    poll(lambda: len(k8s.exec_log) == 1)
    record = k8s.exec_log[0]
    assert (record.command, record.exit_code, record.outcome) == (
        ("sleep", "60"), None, "client left",
    )  # fmt: skip


def test_fail_exec_makes_a_command_fail(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_dump").write_text(
        '#!/bin/sh\necho "dumping $1 as $PGUSER" >&2\nhead -c 1000000 /dev/zero\n'
    )
    (bin_dir / "pg_dump").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PGUSER": "odoo"}
    k8s.add_pod(NS, "db-0", containers=["postgres"], env=env)
    out, err = output(resp := run(core, "db-0", ["pg_dump", "odoo"]))
    assert (len(out), err, resp.returncode) == (1_000_000, b"dumping odoo as odoo\n", 0)

    k8s.fail_exec(
        lambda e: e.command[0] == "pg_dump", exit_code=1, after_bytes=300_000,
        stderr=b"pg_dump: error: connection lost\n",
    )  # fmt: skip
    out, err = output(resp := run(core, "db-0", ["pg_dump", "odoo"]))
    assert out == bytes(300_000)
    assert err.endswith(b"pg_dump: error: connection lost\n")
    assert resp.returncode == 1

    k8s.clear_faults()
    k8s.fail_exec(lambda e: e.pod == "db-0", exit_code=2)  # no after_bytes: runs to the end
    out, err = output(resp := run(core, "db-0", ["pg_dump", "odoo"]))
    assert (len(out), resp.returncode) == (1_000_000, 2)


def test_keep_pending_leaves_helper_pods_pending(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.keep_pending()
    core.create_namespaced_pod(NS, helper_pod("helper"))
    pod = pending_helper(core)
    assert pod.status.conditions[0].message == "0/1 nodes are available: 1 Insufficient cpu."
    assert refused(lambda: run(core, "helper", ["true"])).startswith("Handshake status 400")
    assert (
        next(p for p in k8s.pods(NS) if p["metadata"]["name"] == "helper")["status"]["phase"]
        == "Pending"
    )


def test_forbidden_scale_patch(k8s: K8sEmulator, odoo: Path, apps: client.AppsV1Api) -> None:
    k8s.forbid("patch", "deployments/scale")
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 0}})
    status = status_of(caught.value)
    assert (caught.value.status, status["reason"], status["code"]) == (403, "Forbidden", 403)
    assert status["message"].startswith('deployments.apps "odoo" is forbidden: User ')
    assert 'cannot patch resource "deployments/scale" in API group "apps"' in status["message"]
    assert apps.read_namespaced_deployment_scale("odoo", NS).spec.replicas == 2
    assert k8s.replicas(NS, "odoo") == 2
    k8s.clear_faults()
    apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 1}})
    assert k8s.replicas(NS, "odoo") == 1


# -- auth and the request log ------------------------------------------------------------------


def test_a_wrong_token_is_401(k8s: K8sEmulator, odoo: Path, tmp_path: Path) -> None:
    kubeconfig = json.loads(k8s.kubeconfig.read_text())
    kubeconfig["users"][0]["user"]["token"] = "wrong"
    (tmp_path / "kubeconfig").write_text(json.dumps(kubeconfig))
    with config.new_client_from_config(config_file=str(tmp_path / "kubeconfig")) as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as caught:
            core.list_namespaced_pod(NS)
        reason = refused(lambda: run(core, "postgres-0", ["true"]))
    assert (caught.value.status, status_of(caught.value)["reason"]) == (401, "Unauthorized")
    assert reason.startswith("Handshake status 401")
    assert [(r.method, r.exec) for r in k8s.requests[-2:]] == [("GET", False), ("GET", True)]


def test_the_request_log(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    setup = len(k8s.requests)
    assert setup == 0  # the fixture's objects are not API requests
    apps.read_namespaced_deployment_scale("odoo", NS)
    core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR)
    watch_until(core.list_namespaced_pod, NS, done=lambda seen: len(seen) == 3)
    output(run(core, "postgres-0", ["true"]))
    requests = k8s.requests
    assert [(r.method, r.watch, r.exec) for r in requests] == [
        ("GET", False, False),
        ("GET", False, False),
        ("GET", True, False),
        ("GET", False, True),
    ]
    assert requests[0].path == f"/apis/apps/v1/namespaces/{NS}/deployments/odoo/scale"
    assert requests[1].query["labelSelector"] == [ODOO_SELECTOR]
    assert requests[3].path == f"/api/v1/namespaces/{NS}/pods/postgres-0/exec"
    assert requests[3].query["command"] == ["true"]
    core.delete_namespaced_pod("postgres-0", NS)
    assert {r.method for r in k8s.requests[len(requests) :]} == {"DELETE"}


# -- what real clusters add: admission, images, events, autoscalers, third parties ------------


def test_a_dry_run_create_is_admitted_and_validated_but_not_stored(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    made = core.create_namespaced_pod(NS, helper_pod("dry"), dry_run="All")
    assert made.metadata.name == "dry" and made.status.phase == "Pending"
    assert [p.metadata.name for p in core.list_namespaced_pod(NS).items if p.metadata.name ==
            "dry"] == []  # fmt: skip
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_pod(NS, helper_pod("dry"), dry_run="Some")
    assert raised.value.status == 400


def test_podsecurity_restricted_refuses_a_pod_in_the_plugins_words(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.set_pod_security(NS, "restricted")
    for dry_run in ("All", None):
        with pytest.raises(ApiException) as raised:
            core.create_namespaced_pod(NS, helper_pod("loose"), dry_run=dry_run)
        message = json.loads(raised.value.body)["message"]
        assert raised.value.status == 403
        assert message.startswith('pods "loose" is forbidden: violates PodSecurity '
                                  '"restricted:latest": allowPrivilegeEscalation != false '
                                  '(container "helper" must set')  # fmt: skip
        assert "runAsNonRoot != true" in message and "seccompProfile" in message
    tight = helper_pod("tight")
    tight["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    tight["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert core.create_namespaced_pod(NS, tight).metadata.name == "tight"


def test_an_image_that_cannot_be_pulled_waits_with_its_reason_and_events(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.fail_image("busybox:1.36")
    core.create_namespaced_pod(NS, helper_pod("nopull"))

    def waiting() -> Any:
        statuses = core.read_namespaced_pod("nopull", NS).status.container_statuses or []
        return statuses and statuses[0].state.waiting

    poll(lambda: bool(waiting()))
    assert waiting().reason == "ImagePullBackOff"
    assert core.read_namespaced_pod("nopull", NS).status.phase == "Pending"
    events = core.list_namespaced_event(
        NS, field_selector="involvedObject.name=nopull,type=Warning"
    ).items
    assert [e.reason for e in events] == ["Failed"]
    assert 'Back-off pulling image "busybox:1.36"' in events[0].message


def test_runasnonroot_with_a_named_user_is_a_container_config_error(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.image_user("busybox:1.36", "odoo")
    pod = helper_pod("named")
    pod["spec"]["securityContext"] = {"runAsNonRoot": True}
    core.create_namespaced_pod(NS, pod)
    poll(lambda: bool(core.read_namespaced_pod("named", NS).status.container_statuses))
    waiting = core.read_namespaced_pod("named", NS).status.container_statuses[0].state.waiting
    assert waiting.reason == "CreateContainerConfigError"
    assert "container has runAsNonRoot and image has non-numeric user (odoo)" in waiting.message


def test_an_unschedulable_pod_gets_a_failedscheduling_event(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    k8s.keep_pending()
    core.create_namespaced_pod(NS, helper_pod("stuck"))
    events = core.list_namespaced_event(NS, field_selector="involvedObject.name=stuck").items
    assert [(e.reason, e.message) for e in events] == [
        ("FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.")]  # fmt: skip


def test_autoscalers_are_listed_and_third_parties_scale_on_an_exec(
    k8s: K8sEmulator, odoo: Path, api: client.ApiClient, core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:  # fmt: skip
    k8s.add_hpa(NS, "odoo", "odoo", 2, 5)
    hpas = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(NS).items
    assert [(h.metadata.name, h.spec.scale_target_ref.name, h.spec.max_replicas)
            for h in hpas] == [("odoo", "odoo", 5)]  # fmt: skip
    apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 0}})
    k8s.on_exec(lambda e: e.command[0] == "echo", lambda: k8s.scale(NS, "odoo", 3))
    assert output(run(core, "postgres-0", ["echo", "hi"])) == (b"hi\n", b"")
    assert apps.read_namespaced_deployment("odoo", NS).spec.replicas == 3  # before it ended


def test_an_exec_is_authorized_as_get_and_create_on_pods_exec(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    """A WebSocket exec is a GET: RBAC checks `get pods/exec`; a 1.35 server with the
    AuthorizePodWebsocketUpgradeCreatePermission gate checks `create` as well."""
    for verb in ("get", "create"):
        k8s.forbid(verb, "pods/exec")
        # the client fails on a refused upgrade with an AttributeError whose context is it
        with pytest.raises((ApiException, AttributeError)) as raised:
            output(run(core, "postgres-0", ["echo", "hi"]))
        refusal = raised.value if isinstance(raised.value, ApiException) else (
            raised.value.__context__)  # fmt: skip
        assert f'cannot {verb} resource \\"pods/exec\\"' in str(refusal) or (
            f'cannot {verb} resource "pods/exec"' in str(refusal)), str(refusal)  # fmt: skip
        k8s.clear_faults()
    k8s.exec_needs_create = False
    k8s.forbid("create", "pods/exec")
    assert output(run(core, "postgres-0", ["echo", "hi"])) == (b"hi\n", b"")


def test_truncate_exec_loses_the_end_of_stdout_and_still_says_success(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    """kubernetes issue 124571: the command ran to its end and exited 0, the client got
    only the start of its stdout, then Success."""
    k8s.truncate_exec(lambda e: e.command[0] == "sh", after_bytes=1000)
    marker = odoo / "ran-to-its-end"
    resp = run(core, "postgres-0", ["sh", "-c", f"head -c 100000 /dev/zero; echo done >&2; "
                                    f"touch {marker}"])  # fmt: skip
    out, err = output(resp)
    assert (len(out), err, resp.returncode) == (1000, b"done\n", 0)
    assert marker.exists()
    assert k8s.exec_log[-1].outcome == "exited" and k8s.exec_log[-1].stdout_bytes == 1000


def test_a_silent_exec_is_cut_after_the_idle_timeout(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api
) -> None:
    """kubelet's streaming idle timeout, or a load balancer's: no frame either way for that
    long, and the stream is cut with no status."""
    k8s.stream_idle_timeout = 0.5
    resp = run(core, "postgres-0", ["sh", "-c", "echo start; sleep 60"])
    out, err = bytearray(), bytearray()
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        drain(resp, out, err)
    assert (bytes(out), resp.returncode) == (b"start\n", None)
    assert k8s.exec_log[-1].outcome == "idle"
    close(resp)


def test_a_readwriteonce_volume_attached_elsewhere_is_multi_attach(
    k8s: K8sEmulator, odoo: Path, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    """A pod on node-2 waits ContainerCreating while Odoo's pods on node-1 have the volume,
    and runs once they are gone; deleted with grace 0, it leaves the volume attached to
    node-2, and Odoo's new pods on node-1 wait in their turn."""
    k8s.place({"app": "k8s-migrate"}, "node-2")
    core.create_namespaced_pod(NS, helper_pod("helper"))

    def attach_events(prefix: str) -> list[str]:
        return [e["message"] for e in k8s.events(NS) if e["reason"] == "FailedAttachVolume"
                and e["involvedObject"]["name"].startswith(prefix)]  # fmt: skip

    poll(lambda: bool(attach_events("helper")))
    assert attach_events("helper")[0].startswith('Multi-Attach error for volume "pvc-')
    assert "Volume is already used by pod(s) odoo-" in attach_events("helper")[0]
    pod = core.read_namespaced_pod("helper", NS)
    assert pod.status.phase == "Pending" and pod.spec.node_name == "node-2"
    assert pod.status.container_statuses[0].state.waiting.reason == "ContainerCreating"
    apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 0}})
    poll(lambda: core.read_namespaced_pod("helper", NS).status.phase == "Running")
    core.delete_namespaced_pod("helper", NS, grace_period_seconds=0)
    apps.patch_namespaced_deployment_scale("odoo", NS, {"spec": {"replicas": 1}})
    poll(lambda: bool(attach_events("odoo-")))
    assert (
        "Volume is already exclusively attached to one node and can't be attached to "
        in (attach_events("odoo-")[0])
    )
    odoo_pods = core.list_namespaced_pod(NS, label_selector=ODOO_SELECTOR).items
    assert [p.status.phase for p in odoo_pods] == ["Pending"]
