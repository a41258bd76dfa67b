"""The kubeconfig's parts the official client does not handle: its clusters' `proxy-url`,
and one usage line naming the file for a kubeconfig it cannot read."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from odbox_common.errors import UsageError


def proxy_url(kubeconfig: Path | None, cluster: str) -> str | None:
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


def use_proxy(configuration: Any, url: str | None, cluster: str) -> bool:
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


def _kubeconfig_files(kubeconfig: Path | None) -> tuple[list[str], str]:
    """The files the client reads, in its order (--kubeconfig, else $KUBECONFIG's list, else
    ~/.kube/config), and which of those it is."""
    if kubeconfig is not None:
        return [str(kubeconfig)], "--kubeconfig"
    if os.environ.get("KUBECONFIG", "").strip():
        return [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p], "$KUBECONFIG"
    return [str(Path.home() / ".kube" / "config")], "the default"


def kubeconfig_missing(e: Exception, kubeconfig: Path | None) -> UsageError:
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


def kubeconfig_error(e: Exception, kubeconfig: Path | None) -> Exception:
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
