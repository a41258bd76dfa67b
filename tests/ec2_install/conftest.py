"""ec2-install's fixtures: moto server behind a recording proxy that can fail a chosen call.

The proxy sits between boto3 and moto on 127.0.0.1. It records the operation
of every request (EC2, IAM and STS name it in the body's Action; S3's REST
calls are named from their method, path and query) and the IAM permissions it
needs, so a test can say "only reads were made", or check the IAM policy
against what really ran. It answers a chosen operation with an AWS error
instead of forwarding it: a real wire-level failure, as AWS sends it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MotoServer

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Fault:
    code: str
    message: str
    status: int = 403
    after: int = 0  # let this many calls through first
    times: int | None = None  # then fail this many (None: every one)
    seen: int = 0


# S3 REST calls: (method, a query key it carries or "" for none, on the bucket or an
# object) -> (the operation's name, the IAM permission it needs).
S3_BUCKET = {
    ("PUT", ""): ("CreateBucket", "s3:CreateBucket"),
    ("PUT", "publicAccessBlock"): ("PutPublicAccessBlock", "s3:PutBucketPublicAccessBlock"),
    ("PUT", "encryption"): ("PutBucketEncryption", "s3:PutEncryptionConfiguration"),
    ("PUT", "versioning"): ("PutBucketVersioning", "s3:PutBucketVersioning"),
    ("PUT", "lifecycle"): ("PutBucketLifecycleConfiguration", "s3:PutLifecycleConfiguration"),
    ("PUT", "tagging"): ("PutBucketTagging", "s3:PutBucketTagging"),
    ("PUT", "policy"): ("PutBucketPolicy", "s3:PutBucketPolicy"),
    ("GET", "versioning"): ("GetBucketVersioning", "s3:GetBucketVersioning"),
    ("GET", "tagging"): ("GetBucketTagging", "s3:GetBucketTagging"),
    ("GET", "versions"): ("ListObjectVersions", "s3:ListBucketVersions"),
    ("GET", "list-type"): ("ListObjectsV2", "s3:ListBucket"),
    ("HEAD", ""): ("HeadBucket", "s3:ListBucket"),
    ("DELETE", ""): ("DeleteBucket", "s3:DeleteBucket"),
}
S3_OBJECT = {
    "GET": ("GetObject", "s3:GetObject"),
    "HEAD": ("HeadObject", "s3:GetObject"),
    "PUT": ("PutObject", "s3:PutObject"),
    "DELETE": ("DeleteObject", "s3:DeleteObject"),
}
# Query-protocol calls that need a permission besides their own (AWS's service
# authorization reference): a parameter in the body -> the extra permission.
ALSO_NEEDS = {
    ("ec2", "RunInstances", "IamInstanceProfile."): "iam:PassRole",
    ("iam", "AddRoleToInstanceProfile", ""): "iam:PassRole",
    ("iam", "CreateRole", "Tags.member."): "iam:TagRole",
    ("iam", "CreateInstanceProfile", "Tags.member."): "iam:TagInstanceProfile",
}
# Calls IAM never refuses: no policy names them.
NO_PERMISSION = {"sts:GetCallerIdentity"}


def operation(method: str, path: str, headers: Any, body: bytes) -> tuple[str, list[str]]:
    """The operation a request makes and the IAM permissions it needs."""
    scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    service = scope[1] if scope else "?"
    split = urllib.parse.urlsplit(path)
    if service == "s3":
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        _, _, key = split.path.lstrip("/").partition("/")
        if key:
            name, permission = S3_OBJECT[method]
        else:
            [name, permission] = next(
                (found for (m, q), found in S3_BUCKET.items() if m == method and q in query),
                S3_BUCKET.get((method, ""), (f"S3 {method} ?{split.query}", "s3:?")),
            )
        return name, [permission]
    text = body.decode("utf-8", "replace")
    action = urllib.parse.parse_qs(text).get("Action", [""])[0]
    action = action or headers.get("X-Amz-Target", "").rpartition(".")[2]
    permissions = [f"{service}:{action}"]
    for (on, name, parameter), extra in ALSO_NEEDS.items():
        if (on, name) == (service, action) and parameter in text:
            permissions.append(extra)
    return action, [p for p in permissions if p not in NO_PERMISSION]


@dataclass
class Proxy:
    upstream: str
    actions: list[str] = field(default_factory=list)
    # The IAM permissions of those calls, "service:Action", in order.
    permissions: list[str] = field(default_factory=list)
    # Each S3 call's permission and request path (/bucket/key?query), in order.
    s3_paths: list[tuple[str, str]] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    # Called (in the proxy's thread) when the Action arrives, before it is forwarded:
    # a test kills the tool there, and the request still reaches moto, as one on the wire.
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)
    # moto's GetConsoleOutput answers a fixed Xen boot log with no host key fingerprints;
    # set, this text (what NixOS's print-host-key unit writes) is answered instead.
    console: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # One request at a time, hook and forwarding included: what a killed client sent
    # reaches moto before anything the next run (or a rollback) asks.
    serial: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""

    def fail(self, action: str, code: str = "UnauthorizedOperation",
             message: str = "You are not authorized to perform this operation.",
             status: int = 403, after: int = 0, times: int | None = None) -> None:  # fmt: skip
        self.faults[action] = Fault(code, message, status, after, times)

    def clear(self) -> None:
        with self.lock:
            self.actions.clear()
            self.permissions.clear()
            self.s3_paths.clear()
            self.faults.clear()
            self.delays.clear()
            self.hooks.clear()
            self.console = None

    def mutating(self) -> list[str]:
        return [a for a in self.actions if not a.startswith(("Describe", "Get", "List", "Head"))]


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    upstream = urllib.parse.urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _any(self) -> None:
            with proxy.serial:
                self._serially()

        def _serially(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action, permissions = operation(self.command, self.path, self.headers, body)
            with proxy.lock:
                proxy.actions.append(action)
                proxy.permissions += permissions
                if "s3:" in "".join(permissions):
                    proxy.s3_paths += [(p, self.path) for p in permissions]
                fault = proxy.faults.get(action)
                failing = (
                    fault is not None
                    and fault.seen >= fault.after
                    and (fault.times is None or fault.seen < fault.after + fault.times)
                )
                if fault is not None:
                    fault.seen += 1
                delay = proxy.delays.get(action, 0)
                hook = proxy.hooks.pop(action, None)
            if hook is not None:
                hook()
            if delay:
                time.sleep(delay)
            if failing:
                assert fault is not None
                self._error(fault)
                return
            if action == "GetConsoleOutput" and proxy.console is not None:
                self._console(body, proxy.console)
                return
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except OSError:  # moto already stopped (a client interrupted at the session's end)
                self._error(Fault("ServiceUnavailable", "moto is gone", 503))
                return
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client was killed meanwhile
                self.wfile.write(data)
            conn.close()

        def _console(self, body: bytes, text: str) -> None:
            instance = urllib.parse.parse_qs(body.decode()).get("InstanceId", [""])[0]
            output = base64.b64encode(text.encode()).decode()
            data = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<GetConsoleOutputResponse '
                'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>proxy</requestId>'
                f"<instanceId>{instance}</instanceId><timestamp>2026-01-01T00:00:00.000Z"
                f"</timestamp><output>{output}</output></GetConsoleOutputResponse>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, fault: Fault) -> None:
            data = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{fault.code}</Code><Message>{fault.message}</Message>"
                "</Error></Errors><RequestID>proxy-fault</RequestID></Response>"
            ).encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

    return Handler


@pytest.fixture(scope="session")
def aws_proxy(moto_server: MotoServer) -> Iterator[Proxy]:
    proxy = Proxy(moto_server.endpoint)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    proxy.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


@dataclass
class Aws:
    """A clean moto (reset per test) reached through the proxy, and how to run the tool."""

    moto: MotoServer
    proxy: Proxy
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in self.moto.env.items() if not k.startswith("ODBOX_")}
        return {**env, "AWS_ENDPOINT_URL": self.proxy.endpoint, "AWS_DEFAULT_REGION": REGION,
                "HOME": str(self.home), "AWS_CONFIG_FILE": str(self.home / "no-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "no-credentials"),
                "AWS_EC2_METADATA_DISABLED": "true", "COLUMNS": "200",
                "EC2_INSTALL_POLL_SECONDS": "0.1"}  # fmt: skip

    def run(self, *args: str | Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "ec2_install", *map(str, args)], capture_output=True, text=True,
            env=env or self.env, cwd=cwd or self.home, timeout=300,
        )  # fmt: skip

    def spawn(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ec2_install", *map(str, args)], env=env or self.env,
            cwd=self.home,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def signalled_at(self, action: str, signum: int, *args: str | Path,
                     env: dict[str, str] | None = None,
                     hooks: dict[str, Callable[[], None]] | None = None,
                     ) -> tuple[int, str, str]:  # fmt: skip
        """Run the tool; send it `signum` the moment `action` reaches the proxy (the request
        is forwarded all the same), or whatever serves `hooks`; return its exit code and
        output once it has ended."""
        hooks = self.proxy.hooks if hooks is None else hooks
        started = threading.Event()
        box: list[subprocess.Popen[str]] = []

        def hook() -> None:
            started.wait(60)
            box[0].send_signal(signum)
            if signum == signal.SIGKILL:
                box[0].wait(60)  # dead before its request goes on

        hooks[action] = hook
        box.append(self.spawn(*args, env=env))
        started.set()
        out, err = box[0].communicate(timeout=300)
        with self.proxy.serial:  # what it sent last has reached moto
            pass
        assert action not in hooks, f"{action} was never called"
        return box[0].returncode, out, err

    def client(self, service: str = "ec2") -> Any:
        import boto3

        return boto3.client(
            service, endpoint_url=self.moto.endpoint, region_name=REGION,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip


@pytest.fixture
def aws(moto_server: MotoServer, aws_proxy: Proxy, tmp_path: Path) -> Iterator[Aws]:
    moto_server.reset()
    aws_proxy.clear()
    home = tmp_path / "home"
    home.mkdir()
    yield Aws(moto_server, aws_proxy, home)
    aws_proxy.clear()


@pytest.fixture
def ssh_pub(tmp_path: Path) -> Path:
    """A fresh ed25519 key made by the real ssh-keygen; returns the .pub path."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop",
                    "-f", key], check=True)  # fmt: skip
    return key.with_suffix(".pub")


def up_args(ssh_pub: Path, *extra: str, name: str = "shop", install: bool = False) -> list[str]:
    """`up` of box `name`; the AWS side only unless `install` (which needs the box_ssh)."""
    return ["up", "--name", name, "--instance-type", "m6g.xlarge", "--ssh-key", str(ssh_pub),
            "--ssh-cidr", "203.0.113.7/32", "--flake", "github:acme/odoo-box",
            *([] if install else ["--no-install"]), *extra]  # fmt: skip


def backup_volume(aws: Aws, name: str = "shop") -> str:
    """The volume at the backup device of box `name`'s live instance (read from moto)."""
    reservations = aws.client().describe_instances(
        Filters=[{"Name": "tag:odbox:box", "Values": [name]},
                 {"Name": "instance-state-name", "Values": ["pending", "running", "stopped"]}]
    )["Reservations"]  # fmt: skip
    [instance] = [i for r in reservations for i in r["Instances"]]
    return next(
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == "/dev/sdf"
    )


STANDINS = Path(__file__).with_name("standins")


@dataclass
class BoxSsh:
    """A real sshd on 127.0.0.1 standing in for the box (see standins/README.md): a
    throwaway host key, root's authorized key, a scratch root for `/`, and an
    /odbox/health that passes once the stand-in switch-to-configuration has run."""

    dir: Path
    root: Path
    port: int
    host_key: Path
    ssh_config: Path
    health_url: str
    health_requests: list[str] = field(default_factory=list)
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)  # "health": at a request

    def fingerprints(self, key: Path | None = None) -> str:
        """The console text print-host-key writes, for `key` (default: the real one)."""
        out = subprocess.run(["ssh-keygen", "-l", "-f", f"{key or self.host_key}.pub"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return (
            "[   10.1] systemd[1]: Starting sshd.service\r\n"
            "-----BEGIN SSH HOST KEY FINGERPRINTS-----\r\n"
            f"{out.strip()}\r\n"
            "-----END SSH HOST KEY FINGERPRINTS-----\r\n"
            "[   11.2] systemd[1]: Reached target multi-user.target\r\n"
        )

    def switches(self) -> list[str]:
        log = self.root / "switches"
        return log.read_text().splitlines() if log.exists() else []

    def rebuilds(self) -> list[str]:
        log = self.dir / "log" / "nixos-rebuild.calls"
        return log.read_text().splitlines() if log.exists() else []

    def env(self, aws: Aws) -> dict[str, str]:
        return {**aws.env, "PATH": f"{STANDINS / 'laptop'}:{os.environ['PATH']}",
                "STANDIN_LOG": str(self.dir / "log"), "XDG_STATE_HOME": str(self.dir / "state"),
                "EC2_INSTALL_SSH_CONFIG": str(self.ssh_config)}  # fmt: skip


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
                   check=True)  # fmt: skip


@pytest.fixture
def box_ssh(tmp_path: Path, ssh_pub: Path) -> Iterator[BoxSsh]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    assert Path(sshd).exists(), "openssh-server is in .ci/debian-packages.txt"
    assert os.geteuid() == 0, "the box logs in root, and the key must be chowned to root"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    d = tmp_path / "box"
    (d / "log").mkdir(parents=True)
    root = d / "root"
    root.mkdir()
    host_key = d / "ssh_host_ed25519_key"
    _keygen(host_key, "root@shop")
    (d / "authorized_keys").write_text(ssh_pub.read_text())

    box: BoxSsh

    class Health(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            box.health_requests.append(self.path)
            if (hook := box.hooks.pop("health", None)) is not None:
                hook()
            ok = self.path == "/odbox/health" and (root / "run" / "switched").exists()
            data = b'{"status": "pass"}' if ok else b'{"status": "fail"}'
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    health = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    port = _free_port()
    health_url = f"http://127.0.0.1:{health.server_address[1]}/odbox/health"
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\n"
        f"SetEnv ODBOX_ROOT={root} ODBOX_HEALTH_URL={health_url} "
        f"PATH={STANDINS / 'box'}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"
    )
    server = subprocess.Popen([sshd, "-D", "-e", "-f", config], stderr=(d / "sshd.log").open("w"))
    ssh_config = d / "ssh_config"
    ssh_config.write_text(f"Host *\n    HostName 127.0.0.1\n    Port {port}\n")
    box = BoxSsh(d, root, port, host_key, ssh_config, health_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, (d / "sshd.log").read_text()
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.05)
        yield box
    finally:
        server.terminate()
        server.wait(timeout=10)
        health.shutdown()
        health.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A flake checkout with its vault's age identity (made by the real age-keygen)."""
    repo = tmp_path / "odoo-box"
    (repo / "vault").mkdir(parents=True)
    (repo / "flake.nix").write_text("{ outputs = _: { }; }\n")
    subprocess.run(["age-keygen", "-o", repo / "vault" / "age.key"], check=True,
                   capture_output=True)  # fmt: skip
    return repo
