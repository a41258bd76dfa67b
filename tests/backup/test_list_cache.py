"""`list` checks each manifest's MAC, which on S3 is a GET a snapshot: with many snapshots
that was most of its time, every time. It keeps the rows it checked in the local cache
under each manifest's ID and ETag, so the next `list` fetches only the new ones; a manifest
rewritten in the bucket has another ETag and is checked again.

The requests are counted where they happen: an HTTP proxy between odbox-backup and moto.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.backup.helpers import backup, backup_ok, backup_run, store_for
from tests.conftest import MotoServer


class CountingProxy:
    """Forwards every request to moto and records (method, path) of each."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy.requests.append((self.command, urllib.parse.urlsplit(self.path).path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                upstream.request(self.command, self.path, body, dict(self.headers.items()))
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def manifest_gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/snapshots/" in path]


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[CountingProxy]:
    counting = CountingProxy(moto_server.endpoint)
    yield counting
    counting.server.shutdown()


def test_a_second_list_fetches_only_the_manifests_it_has_not_seen(
    odoo, moto_server, proxy, local_env, tmp_path
):
    bucket = "odbox-list-cache"
    moto_server.client("s3").create_bucket(Bucket=bucket)
    repo = f"s3://{bucket}/repo"
    aws = {k: v for k, v in moto_server.env.items() if k.startswith("AWS_")}
    env = {**local_env, **aws, "AWS_ENDPOINT_URL": proxy.endpoint,
           "ODBOX_BACKUP_CACHE": str(tmp_path / "cache")}  # fmt: skip
    backup_ok(env, "init", "--repo", repo)
    for _ in range(3):
        backup_run(env, repo, odoo)

    def listed() -> list[dict[str, object]]:
        proxy.requests.clear()
        return json.loads(backup_ok(env, "list", "--repo", repo, "--json"))  # type: ignore[no-any-return]

    first = listed()
    assert len(first) == 3 and len(proxy.manifest_gets()) == 3  # each checked once
    assert listed() == first and proxy.manifest_gets() == []  # none again
    backup_run(env, repo, odoo)
    fourth = listed()
    assert fourth[:3] == first and proxy.manifest_gets() == [f"/{bucket}/repo/snapshots/"
                                                             f"{fourth[3]['id']}"]  # fmt: skip

    # A manifest rewritten in the bucket (here: forged) has another ETag: checked again,
    # and left out, as without the cache.
    store = store_for(repo, moto_server)
    forged = first[1]["id"]
    store.put(
        f"snapshots/{forged}", store.get(f"snapshots/{forged}").replace(b"odbox", b"odbax", 1)
    )
    proxy.requests.clear()
    result = backup(env, "list", "--repo", repo, "--json")
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == [
        r["id"] for r in fourth if r["id"] != forged
    ]
    assert "not authenticated" in result.stderr and proxy.manifest_gets() == [
        f"/{bucket}/repo/snapshots/{forged}"
    ]
