"""A real Odoo, run as the box runs it: see README.md beside this file.

What comes from the box itself: odoo.conf and the odoo unit's start scripts (evaluated from
nix/modules/service-stack/odoo.nix with bare nix-instantiate), our addons
(nix/pkgs/odoo-addons/addons), `dbinit setup` with the box's names, peer authentication with the
backup module's ident map. What stands in: a throwaway cluster in a temp folder instead of the
box's /run/postgresql, free ports instead of 8069/8072, a wrapper script for the Odoo package's
bin/odoo, and root with `user=postgres` for the unit that runs as postgres.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from odbox_common.processes import running
from tests.conftest import PostgresCluster, StoppedCluster, new_postgres_cluster

ROOT = Path(__file__).resolve().parents[2]
ODOO_CACHE = Path("~/.cache/odbox/odoo-17.0").expanduser()
# The venv and a copy of the tree Odoo's unprivileged user can read (a home folder is often 700).
RUNTIME = Path(os.environ.get("ODBOX_ODOO_RUNTIME", "/var/tmp/odbox-odoo"))
PINS = Path(__file__).with_name("odoo-requirements-py311.txt")
ODOO_NIX = ROOT / "nix" / "modules" / "service-stack" / "odoo.nix"
ADDONS = ROOT / "nix" / "pkgs" / "odoo-addons" / "addons"
CTL_ENV = dict(os.environ)
NIX_ENV = {**os.environ, "NIX_CONFIG": "build-users-group =\nexperimental-features = nix-command"}

DB = "odoo"  # the box's names (service-stack's odoo.db, dbinit's defaults)
ODOO_USER = "odoo"
ADMIN_PASSWORD = "admin"  # of Odoo's admin user on a database made without demo data
MASTER_PASSWORD = "box-master-password"  # the vault's odoo-admin password
# The box installs base and odbox_health on a new box; its owner adds what the shop uses.
INITIAL_MODULES = ["base", "odbox_health", "mail", "contacts"]
START_DEADLINE = 600  # seconds: a start on a busy 2-core machine


def odoo_source() -> Path | None:
    """ODOO_SRC, else the documented cache folder, if it holds an Odoo tree."""
    for candidate in (os.environ.get("ODOO_SRC"), ODOO_CACHE):
        if candidate and (Path(candidate) / "odoo-bin").is_file():
            return Path(candidate).resolve()
    return None


def why_not() -> str | None:
    """Why the real-Odoo tests cannot run here, or None."""
    if odoo_source() is None:
        return (
            f"no Odoo source tree: set ODOO_SRC or extract Odoo 17.0 into {ODOO_CACHE} "
            "(tests/box/README.md)"
        )
    if os.geteuid() != 0:
        return "runs PostgreSQL and Odoo as their own unprivileged users: needs root"
    if shutil.which("nix-instantiate") is None:
        return "reads odoo.conf from the Nix module: needs nix-instantiate (Debian's nix-bin)"
    return None


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _runtime_lock() -> Iterator[None]:
    RUNTIME.mkdir(parents=True, exist_ok=True)
    RUNTIME.chmod(0o755)
    with open(RUNTIME / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _uv() -> list[str]:
    if uv := os.environ.get("UV") or shutil.which("uv"):
        return [uv]
    return [sys.executable, "-m", "uv"]


@dataclass(frozen=True)
class OdooInstall:
    python: Path
    tree: Path

    @property
    def version(self) -> str:
        out = subprocess.run(
            [self.python, "-c", "import odoo.release as r; print(r.version)"],
            cwd=self.tree, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()


def prepare_odoo(source: Path) -> OdooInstall:
    """The venv of the pins (built once, keyed by their hash) and a readable copy of the tree."""
    with _runtime_lock():
        venv = RUNTIME / f"venv-{_digest(PINS.read_bytes())}"
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([*_uv(), "venv", "-q", "--python", "/usr/bin/python3", venv], check=True)
            subprocess.run(
                [*_uv(), "pip", "install", "-q", "--python", venv / "bin" / "python", "-r", PINS],
                check=True,
            )
            (venv / ".complete").touch()
        release = source / "odoo" / "release.py"
        tree = RUNTIME / f"src-{_digest(str(source), str(release.stat().st_mtime_ns))}"
        if not (tree / ".complete").exists():
            shutil.rmtree(tree, ignore_errors=True)
            # Hard links when on the same file system: a second of work, not a GB of copies.
            if subprocess.run(["cp", "-al", source, tree], capture_output=True).returncode != 0:
                shutil.rmtree(tree, ignore_errors=True)
                subprocess.run(["cp", "-a", source, tree], check=True)
            (tree / "odoo-bin").chmod(0o755)
            # Compiled once as root: the odoo user cannot write __pycache__ here.
            subprocess.run(
                [venv / "bin" / "python", "-m", "compileall", "-q", "-j", "0", tree / "odoo"],
                capture_output=True,
            )
            (tree / ".complete").touch()
        return OdooInstall(venv / "bin" / "python", tree)


def prepare_tools() -> Path:
    """odbox-backup installed where every user may run it, as the Nix store has it: a restore
    run as root loads a plain dump as the owner's OS user with the tool's own Python (this
    checkout's venv may sit on an interpreter under a private home). Its odbox-backup script."""
    exported = subprocess.run(
        [*_uv(), "export", "--frozen", "--package", "odbox-backup", "--no-dev", "--no-hashes",
         "-q"], cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    requirements = exported.replace("-e ./tools/", f"{ROOT}/tools/")
    sources = sorted(p for t in ("backup", "common") for p in (ROOT / "tools" / t).rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)  # fmt: skip
    # Keyed by the code alone (paths relative to the checkout): two checkouts of the same
    # code share one venv, and a venv another checkout's session may be using is left alone
    # until it is a day old (a session deleting it mid-run made the other's tests fail).
    key = _digest(exported, *(str(p.relative_to(ROOT)) + p.read_text(errors="replace")
                              for p in sources))  # fmt: skip
    with _runtime_lock():
        venv = RUNTIME / f"tools-{key}"
        if not (venv / ".complete").exists():
            for old in RUNTIME.glob("tools-*"):  # each change of the tools' code makes one
                if old.stat().st_mtime < time.time() - 86400:
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(venv, ignore_errors=True)  # a build that was killed half-way
            subprocess.run([*_uv(), "venv", "-q", "--python", "/usr/bin/python3", venv], check=True)
            (venv / "requirements.txt").write_text(requirements)
            # uv caches a wheel it built from a folder by the folder's pyproject.toml, not by
            # its code: without a refresh the venv got a wheel of older sources.
            ours = [f"--refresh-package={name}" for name in ("odbox-backup", "odbox-common")]
            subprocess.run(
                [*_uv(), "pip", "install", "-q", *ours, "--python", venv / "bin" / "python",
                 "-r", venv / "requirements.txt"], check=True,
            )  # fmt: skip
            (venv / ".complete").touch()
    return venv / "bin" / "odbox-backup"


def odoo_user() -> pwd.struct_passwd:
    """The unprivileged OS user that plays `odoo` (made if missing, as the box's module does)."""
    try:
        return pwd.getpwnam(ODOO_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", ODOO_USER],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(ODOO_USER)


# pg_hba and pg_ident as the box has them: service-stack's `local all all peer`, after the
# backup module's map that lets root in as postgres.
PG_HBA = "local all postgres peer map=odbox-backup\nlocal all all peer\n"
PG_IDENT = "odbox-backup root postgres\nodbox-backup postgres postgres\n"


@contextlib.contextmanager
def peer_postgres() -> Iterator[StoppedCluster]:
    """A throwaway cluster on a Unix socket with the box's peer authentication, started."""
    with new_postgres_cluster() as stopped:
        datadir = stopped.cluster.datadir
        for name, text in (("pg_hba.conf", PG_HBA), ("pg_ident.conf", PG_IDENT)):
            (datadir / name).write_text(text)
            if stopped.user is not None:
                os.chown(datadir / name, stopped.user.uid, stopped.user.gid)
        stopped.start()
        yield stopped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Box:
    """One box: its cluster, Odoo's folders as the module makes them, and Odoo as `odoo`."""

    pg: StoppedCluster
    install: OdooInstall
    base: Path
    user: pwd.struct_passwd
    http_port: int = field(default_factory=free_port)
    gevent_port: int = field(default_factory=free_port)
    workers: int = 0
    _uid: int | None = None
    tools: Path = field(default_factory=prepare_tools)  # odbox-backup

    # ---------------------------------------------------------------- the box's folders

    @classmethod
    def make(cls, pg: StoppedCluster, install: OdooInstall, base: Path) -> Box:
        box = cls(pg, install, base, odoo_user())
        base.chmod(0o755)
        for folder in ("bin", "etc", "secret"):
            (base / folder).mkdir(mode=0o755)
        wrapper = base / "bin" / "odoo"  # the Odoo package's bin/odoo
        wrapper.write_text(
            f"#!/bin/sh\nexec {shlex.quote(str(install.python))} "
            f'{shlex.quote(str(install.tree / "odoo-bin"))} "$@"\n'
        )
        wrapper.chmod(0o755)
        shutil.copytree(ADDONS, base / "addons")  # what nix/pkgs/odoo-addons installs
        subprocess.run(["chmod", "-R", "a+rX", base / "addons"], check=True)
        box.secret.write_text(MASTER_PASSWORD + "\n")
        box.own(box.secret, 0o600)
        box.run_dir.mkdir()
        box.own(box.run_dir, 0o700)  # RuntimeDirectory=odoo, mode 0700
        for folder in (box.home, box.data_dir, box.data_dir / "filestore"):  # tmpfiles rules
            folder.mkdir()
            box.own(folder, 0o750)
        return box

    def own(self, path: Path, mode: int) -> None:
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        path.chmod(mode)

    @property
    def cluster(self) -> PostgresCluster:
        return self.pg.cluster

    @property
    def home(self) -> Path:
        return self.base / "home"  # /var/lib/odoo

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def filestore(self) -> Path:
        return self.data_dir / "filestore" / DB

    @property
    def run_dir(self) -> Path:
        return self.base / "run"  # /run/odoo

    @property
    def secret(self) -> Path:
        return self.base / "secret" / "odoo-admin-password"

    @property
    def log(self) -> Path:
        return self.base / "odoo.log"

    # ---------------------------------------------------------------- the module's unit

    def unit(self, workers: int) -> dict[str, Any]:
        """odoo.conf, the start scripts and ExecStart, as odoo.nix makes them for this box."""
        params = {
            "db": DB, "httpPort": self.http_port, "geventPort": self.gevent_port,
            "workers": workers, "maxCronThreads": 1, "addons": [str(self.base / "addons")],
            "initialModules": INITIAL_MODULES, "socket": str(self.cluster.socket_dir),
            "dataDir": str(self.data_dir), "runtimeConf": str(self.run_dir / "odoo.conf"),
            "adminPasswordFile": str(self.secret), "psql": str(self.cluster.bindir / "psql"),
            "odoo": str(self.base / "bin" / "odoo"),
        }  # fmt: skip
        conf_file = self.base / "etc" / "odoo.conf"
        expression = (
            "{ params, confFile, unitFile }: let unit = import (/. + unitFile) "
            "(builtins.fromJSON params); in "
            "{ inherit (unit) conf initialize start; configure = unit.configure confFile; }"
        )
        out = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", "--expr", expression,
             "--argstr", "params", json.dumps(params), "--argstr", "confFile", str(conf_file),
             "--argstr", "unitFile", str(ODOO_NIX)],
            capture_output=True, text=True, check=True, env=NIX_ENV,
        )  # fmt: skip
        unit: dict[str, Any] = json.loads(out.stdout)
        unit["conf_file"] = conf_file
        return unit

    def as_odoo(self, command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command as the odoo user, in the unit's environment."""
        return subprocess.run(
            command, user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[],
            cwd=self.home, env=self.odoo_env, capture_output=True, text=True, **kwargs,
        )  # fmt: skip

    @property
    def odoo_env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8"}

    def configure(self, workers: int) -> dict[str, Any]:
        """ExecStartPre's odoo-configure: the module's odoo.conf plus the admin password."""
        unit = self.unit(workers)
        unit["conf_file"].write_text(unit["conf"])
        unit["conf_file"].chmod(0o644)  # a store path
        result = self.as_odoo(["bash", "-c", unit["configure"]])
        assert result.returncode == 0, result.stderr
        return unit

    def odoo_python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Python with Odoo imported and the box's odoo.conf parsed, as the odoo user (sys.argv
        holds `args`); the PostgreSQL tools of the cluster first on PATH."""
        self.configure(0)
        prelude = (
            f"import sys; sys.path.insert(0, {str(self.install.tree)!r}); import odoo; "
            f"odoo.tools.config.parse_config(['-c', {str(self.run_dir / 'odoo.conf')!r}]); "
        )
        env = {**self.odoo_env, "PATH": f"{self.cluster.bindir}:{self.odoo_env['PATH']}"}
        return subprocess.run(
            [self.install.python, "-c", prelude + code, *args], user=self.user.pw_uid,
            group=self.user.pw_gid, extra_groups=[], cwd=self.home, env=env,
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip

    def initialize(self) -> subprocess.CompletedProcess[str]:
        """ExecStartPre's odoo-initialize (installs the initial modules on an empty database)."""
        unit = self.configure(0)
        return self.as_odoo(["bash", "-c", unit["initialize"]], timeout=3600)

    # ---------------------------------------------------------------- dbinit and PostgreSQL

    def dbinit(self, *args: str) -> subprocess.CompletedProcess[str]:
        """dbinit as the odbox-dbinit unit runs it (root plays postgres, through the ident map)."""
        env = {
            "PATH": os.environ["PATH"],
            "ODBOX_DSN": f"host={self.cluster.socket_dir} dbname=postgres user=postgres",
            "ODBOX_DB": DB,
            "ODBOX_ADMIN_ROLE": "admin",
        }
        dbinit = Path(sys.executable).with_name("dbinit")
        return subprocess.run([dbinit, *args], env=env, capture_output=True, text=True)

    def setup(self) -> str:
        """ExecStart of odbox-dbinit (without pgAdmin: this box has none)."""
        result = self.dbinit("setup", "--lock-timeout", "300", "--no-pgadmin")
        assert result.returncode == 0, result.stderr
        return result.stdout

    def check(self) -> subprocess.CompletedProcess[str]:
        return self.dbinit("check", "--no-pgadmin")

    def backup_env(
        self, repo: Path, identity: Path | None = None, odoo_service: bool = True
    ) -> dict[str, str]:
        """The backup module's environment (its units run as root); without odoo_service, as in
        bootstrap mode: no Odoo to stop or start."""
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "ODBOX_BACKUP_REPO": str(repo),
            "ODBOX_DB": DB,
            "ODBOX_FILESTORE": str(self.filestore),
            "ODBOX_DSN": f"host={self.cluster.socket_dir} user=postgres dbname=postgres",
            "ODBOX_PG_BIN": str(self.cluster.bindir),
            "ODBOX_BACKUP_CACHE": str(repo.parent / "backup-cache"),
            # the module's authKeyFile: outside the repository; `init` writes it
            "ODBOX_BACKUP_AUTH_KEY_FILE": str(repo.parent / "backup-auth.key"),
        }
        if odoo_service:
            env["ODBOX_ODOO_STOP"] = shlex.join(self.ctl("stop"))
            env["ODBOX_ODOO_START"] = shlex.join(self.ctl("start"))
        if identity is not None:
            env["ODBOX_BACKUP_IDENTITY"] = str(identity)
        return env

    def odbox_backup(
        self, repo: Path, *args: str, identity: Path | None = None, odoo_service: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self.tools), *args]
        return subprocess.run(
            command, env=self.backup_env(repo, identity, odoo_service),
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip

    def restart_postgres(self) -> None:
        c = self.cluster
        # -l: the new server must not inherit pg_ctl's output pipes (run() would wait on them).
        self.pg.run([c.bindir / "pg_ctl", "-D", c.datadir, "-m", "fast", "-w", "-t", "120",
                     "-l", c.datadir.parent / "server.log", "restart"])  # fmt: skip

    def sql(self, query: str, db: str = "postgres", *params: Any) -> list[tuple[Any, ...]]:
        """As the superuser (root through the ident map)."""
        with psycopg.connect(
            host=str(self.cluster.socket_dir), port=self.cluster.port, user="postgres",
            dbname=db, autocommit=True,
        ) as conn:  # fmt: skip
            cursor = conn.execute(query, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description is not None else []

    # ---------------------------------------------------------------- Odoo's server

    def ctl(self, action: str) -> list[str]:
        """The command that starts or stops this box's Odoo (odbox-backup's --odoo-stop/start)."""
        return [sys.executable, str(Path(__file__).with_name("odooctl.py")), action, str(self.base)]

    def write_unit(self, workers: int) -> None:
        """What odooctl runs: the module's scripts and ExecStart for this many workers."""
        unit = self.unit(workers)
        unit["conf_file"].write_text(unit["conf"])
        unit["conf_file"].chmod(0o644)  # a store path
        self.workers = workers
        (self.base / "unit.json").write_text(json.dumps({
            "pre": [unit["configure"], unit["initialize"]], "start": shlex.split(unit["start"]),
            "uid": self.user.pw_uid, "gid": self.user.pw_gid, "home": str(self.home),
            "env": self.odoo_env,
        }))  # fmt: skip

    def start(self, workers: int = 0) -> None:
        """systemctl start odoo (ExecStartPre, then ExecStart as odoo); until Odoo answers."""
        assert self.pid() is None, "Odoo runs already"
        self.write_unit(workers)
        result = subprocess.run(self.ctl("start"), capture_output=True, text=True, env=CTL_ENV)
        assert result.returncode == 0, result.stderr
        self.wait_ready()

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.base / "odoo.pid").read_text())
            return pid if running(pid) else None
        return None

    def wait_ready(self, deadline: float = START_DEADLINE) -> None:
        """Until Odoo answers HTTP (and the gevent worker its port); fails if it exits first."""
        until = time.monotonic() + deadline
        ports = [self.http_port] + ([self.gevent_port] if self.workers else [])
        for port in ports:
            while True:
                if self.pid() is None:
                    raise AssertionError(f"Odoo does not run:\n{self.tail()}")
                with contextlib.suppress(OSError, http.client.HTTPException):
                    self.get("/web/webclient/version_info", port=port)
                    break
                if time.monotonic() > until:
                    raise AssertionError(f"Odoo did not answer on port {port}:\n{self.tail()}")
                time.sleep(0.2)

    def stop(self) -> None:
        """systemctl stop odoo: SIGTERM, 90 s (TimeoutStopSec), then SIGKILL of what is left."""
        if (self.base / "odoo.pid").exists():
            result = subprocess.run(self.ctl("stop"), capture_output=True, text=True, env=CTL_ENV)
            assert result.returncode == 0, result.stderr

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_errors(self, since: int = 0) -> list[str]:
        """Lines of Odoo's log (from byte `since`) at level ERROR or CRITICAL."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        return [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    # ---------------------------------------------------------------- as a client would

    def get(self, path: str, port: int | None = None, timeout: float = 120) -> Response:
        """One GET by a new browser (no cookie), redirects not followed."""
        conn = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def uid(self) -> int:
        if self._uid is None:
            self._uid = self._login()
        return self._uid

    def _login(self) -> int:
        common = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.http_port}/xmlrpc/2/common")
        uid = common.authenticate(DB, "admin", ADMIN_PASSWORD, {})
        assert isinstance(uid, int) and uid, f"cannot log in as admin: {uid!r}"
        return uid

    def rpc(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """execute_kw as Odoo's admin user over XML-RPC on 127.0.0.1."""
        url = f"http://127.0.0.1:{self.http_port}/xmlrpc/2/object"
        proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
        return proxy.execute_kw(DB, self.uid(), ADMIN_PASSWORD, model, method, list(args), kwargs)


@contextlib.contextmanager
def temp_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="odbox-box-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
