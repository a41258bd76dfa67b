"""The cluster, through the official `kubernetes` client: `Cluster`, what k8s-migrate asks
of it. Its base classes are kube_api.py's `ApiCalls` (connecting, every REST call and its
error line) and kube_pods.py's `Pods` (the helper pod, exec); here are the deployment's
annotations and scale, and the Secret a database password is read from.
"""

from __future__ import annotations

from typing import Any

from k8s_migrate.kube_api import CommandFailed, KubeError, StreamCut, conflict, lines, refused
from k8s_migrate.kube_pods import HELPER_LABELS, Pods
from odbox_common.errors import UsageError

__all__ = [
    "HELPER_LABELS",
    "Cluster",
    "CommandFailed",
    "KubeError",
    "StreamCut",
    "conflict",
    "lines",
    "refused",
]  # fmt: skip
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


class Cluster(Pods):
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
