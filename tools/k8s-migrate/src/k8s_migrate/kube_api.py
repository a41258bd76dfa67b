"""The cluster's API, through the official `kubernetes` client: connecting with the user's
kubeconfig (its proxy and errors are kubeconfig.py's), and every REST call with the error
line a user reads (which object, which verb, what to do).

`ApiCalls` is the base of `kube.Cluster`; the helper pod and exec are kube_pods.py's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from k8s_migrate.kubeconfig import kubeconfig_error, kubeconfig_missing, proxy_url, use_proxy
from odbox_common.errors import ToolError, UsageError

T = TypeVar("T")
REQUEST_TIMEOUT = (10, 60)  # connect, read: seconds, for every REST call


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
class ApiCalls:
    api_client: Any
    context: str
    server: str
    namespace: str = "default"  # the context's `namespace:`, as kubectl defaults -n to it
    client_log: _ClientLog | None = None
    _plugin_said: bool = False  # its message is in one error phrase, not in each

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None) -> Self:
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
            raise kubeconfig_missing(e, kubeconfig) from e
        except UsageError:
            raise
        except Exception as e:
            raise kubeconfig_error(e, kubeconfig) from e
        cluster_name = str((chosen.get("context") or {}).get("cluster") or "")
        if use_proxy(api_client.configuration, proxy_url(kubeconfig, cluster_name), cluster_name):
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

    def wait_until(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.1
        while not done():
            if time.monotonic() >= deadline:
                raise KubeError(f"gave up after {timeout:.0f} s waiting for {what}")
            time.sleep(pause)
            pause = min(pause * 1.5, 2.0)


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


def lines(data: bytes) -> Iterator[str]:
    """Lines split on newlines only (str.splitlines would also split a file name at \r)."""
    for line in data.decode(errors="surrogateescape").split("\n"):
        if line.strip():
            yield line
