"""Audit a vault without changing it: every fact `generate` relies on, checked from the files.

Unlike `generate`, `check` trusts no cache: it decrypts every `.age`, verifies
every hash with libxcrypt, verifies every signature, and asks git itself what
it would commit and what it ever committed.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from odbox_common import age
from odbox_common.errors import ToolError as VaultError
from vaultgen import agecrypt, layout, pki, records
from vaultgen.files import read_or_none, sha256_hex
from vaultgen.layout import Item, Kind
from vaultgen.records import Manifest
from vaultgen.verify import (
    cert_problem,
    hash_problem,
    password_from_bytes,
    password_problem,
    ssh_public_problem,
)


@dataclass(frozen=True)
class Problem:
    path: str
    problem: str


@dataclass
class Report:
    vault: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, problem: str) -> None:
        self.problems.append(Problem(path, problem))

    def to_json(self) -> dict[str, object]:
        return {
            "schema": 1,  # a key added keeps it; one renamed, removed or changed makes it 2
            "vault": self.vault,
            "ok": self.ok,
            "checked_files": self.checked,
            "problems": [asdict(p) for p in self.problems],
            "notes": self.notes,
        }


class Checker:
    def __init__(
        self, root: Path, now: dt.datetime | None = None, identity_file: Path | None = None
    ) -> None:
        self.root = root
        self.identity_file = identity_file
        self.now = now or dt.datetime.now(dt.UTC)
        self.report = Report(str(root))
        self.content: dict[str, bytes] = {}
        self.manifest = Manifest()

    def read(self, rel: str) -> bytes | None:
        """A file's bytes; a file that cannot be read (a symbolic link, say) is a problem."""
        try:
            return read_or_none(self.root / rel)
        except VaultError as e:
            self.report.add(rel, str(e).removeprefix(f"{self.root / rel} "))
            return None

    def run(self) -> Report:
        layout.require_vault(self.root)
        try:
            layout.refuse_symlinked_folders(self.root)
        except VaultError as e:
            self.report.add(".", str(e))
            return self.report
        try:
            self.manifest = Manifest.load(self.root / layout.MANIFEST)
        except VaultError as e:
            self.report.add(layout.MANIFEST, str(e))
        identities = self.check_identity()
        recipients = self.check_recipients(identities)
        items = layout.discover(self.root)
        for item in items:
            self.check_encryption(item, identities, recipients)
        for item in items:
            if item.path in self.content:
                self.check_content(item)
        for rel, mode, wanted in layout.loose_modes(self.root, items):
            self.report.add(rel, f"mode {mode:04o}: others can read it (want {wanted:04o})")
        for rel in layout.leftovers(self.root, items):
            self.report.add(rel, "left over: not part of the vault (delete it)")
        self.check_git(items)
        return self.report

    def check_identity(self) -> list[age.Identity]:
        if self.identity_file is not None:
            try:
                return agecrypt.load_identity_file(self.identity_file)
            except VaultError as e:
                self.report.add(str(self.identity_file), str(e))
                return []
        try:
            identities = agecrypt.load_identity_file(self.root / layout.IDENTITY)
            agecrypt.vault_recipient(identities, layout.IDENTITY)
            return identities
        except VaultError as e:
            self.report.add(layout.IDENTITY, str(e))
            return []

    def check_recipients(self, identities: list[age.Identity]) -> list[age.Recipient]:
        if self.identity_file is not None:
            vault_public = [self.manifest.identity] if self.manifest.identity else []
        else:
            vault_public = [i.recipient for i in identities[:1] if i.recipient]
        own = [age.parse_recipient(r, layout.IDENTITY) for r in vault_public]
        try:
            return own + agecrypt.parse_recipients_file(self.root / layout.RECIPIENTS)
        except VaultError as e:
            self.report.add(layout.RECIPIENTS, str(e))
            return own

    def check_encryption(
        self, item: Item, identities: list[age.Identity], recipients: list[age.Recipient]
    ) -> None:
        clear = self.read(item.path)
        if clear is not None:
            self.report.checked += 1
            self.content[item.path] = clear
        if not item.encrypted:
            if clear is None:
                self.report.add(item.path, "missing")
            return
        sealed = self.read(item.age_path)
        if sealed is None:
            self.report.add(item.age_path, "missing" if clear is None else "not encrypted yet")
            return
        self.report.checked += 1
        if not identities:
            return
        try:
            plain = age.decrypt(sealed, identities, item.age_path)
        except age.DecryptFailure as e:
            self.report.add(item.age_path, f"does not decrypt: {e.hint}")
            return
        if clear is None:
            self.content[item.path] = plain
        elif plain != clear:
            self.report.add(item.age_path, "holds something else than its cleartext")
        recorded = self.manifest.files.get(item.age_path, {})
        if recorded.get("sha256") != sha256_hex(sealed):
            if sha256_hex(sealed) in records.pending_hashes(self.root):
                problem = "written by an interrupted vaultgen run: run `vaultgen generate`"
            else:
                problem = (
                    f"not as {layout.MANIFEST} records: written outside vaultgen, maybe forged "
                    "(restore it from git, or `vaultgen generate --accept-age` it)"
                )
            self.report.add(item.age_path, problem)
        elif recipients and recorded.get("recipients") != age.recipients_fingerprint(recipients):
            self.report.add(item.age_path, "not encrypted to the current recipients")

    def check_content(self, item: Item) -> None:
        data = self.content[item.path]
        dep = self.content.get(item.deps[0]) if item.deps else None
        try:
            if item.kind is Kind.PASSWORD:
                raw = password_from_bytes(data, item.path)
                problem = password_problem(raw) or (
                    "ends with a newline" if raw.encode() != data else ""
                )
            elif item.kind in (Kind.SHA512, Kind.YESCRYPT):
                problem = hash_problem(item.kind, dep, data) if dep is not None else ""
            elif item.kind is Kind.SSH_PUB:
                problem = ssh_public_problem(data, dep) if dep is not None else ""
            elif item.kind in (Kind.CA_CERT, Kind.LEAF_CERT):
                imported = self.manifest.certificates.get(item.name, {}).get("imported", False)
                ca = self.content.get(item.deps[1]) if item.kind is Kind.LEAF_CERT else None
                if dep is not None and _unreadable_key(dep):
                    dep = None  # its key's own row says so
                problem = cert_problem(
                    item.kind, data, dep, ca, from_vault_ca=not imported, now=self.now
                )
            else:
                if item.kind in (Kind.CA_KEY, Kind.LEAF_KEY):
                    pki.load_private_key(data, item.path)
                problem = ""
        except VaultError as e:
            problem = str(e).removeprefix(f"{item.path} ")
        if problem:
            self.report.add(item.path, problem)

    def check_git(self, items: list[Item]) -> None:
        git = shutil.which("git")
        inside = (
            git
            and subprocess.run(
                [git, "-C", str(self.root), "rev-parse", "--is-inside-work-tree"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            == "true"
        )
        if not git or not inside:
            self.report.notes.append(
                "not in a git work tree: what git would commit was not checked"
            )
            return
        assert git is not None
        secrets = [p for p in layout.secret_files(self.root, items) if p != layout.STATE]
        cleartext = [*secrets, layout.STATE, layout.PENDING, ".lock"]
        cleartext += [i.path for i in items if i.encrypted and not i.secret]
        public = [layout.GITIGNORE, layout.MANIFEST, layout.RECIPIENTS]
        public += [i.age_path if i.encrypted else i.path for i in items]
        paths = [p for p in cleartext + public if (self.root / p).exists()]
        ignored = git_ignored(git, self.root, paths)
        for p in cleartext:
            if p in paths and p not in ignored:
                self.report.add(p, "cleartext that git would commit (check .gitignore)")
        for p in public:
            if p in paths and p in ignored:
                self.report.add(p, "ignored by git, so it would never be committed")
        local = [layout.STATE, layout.PENDING]  # no secrets, but this checkout's own
        tracked, history = git_history(git, self.root, [*secrets, *local])
        for p in tracked:
            if p in local:
                self.report.add(
                    p, "tracked by git, yet local to each checkout: `git rm --cached` it"
                )
            else:
                self.report.add(p, "tracked by git: `git rm --cached` it, then rotate the secret")
        for p, commit in history.items():
            if p not in tracked and p not in local:
                self.report.add(p, f"in git history (commit {commit}): rotate this secret")


def _unreadable_key(key: bytes) -> bool:
    try:
        pki.load_private_key(key, "key")
    except VaultError:
        return True
    return False


def git_ignored(git: str, root: Path, paths: list[str]) -> set[str]:
    """Which paths git would ignore, asking git itself (all .gitignore files, excludes, config)."""
    result = subprocess.run(
        [git, "-C", str(root), "check-ignore", "--no-index", "-z", "--stdin"],
        input="\0".join(paths).encode(),
        capture_output=True,
    )
    if result.returncode not in (0, 1):
        raise VaultError(f"git check-ignore failed: {result.stderr.decode().strip()}")
    return set(filter(None, result.stdout.decode().split("\0")))


def git_history(git: str, root: Path, paths: list[str]) -> tuple[set[str], dict[str, str]]:
    """The secret paths git tracks now, and those any commit ever held (with the newest)."""
    listed = subprocess.run(
        [git, "-C", str(root), "ls-files", "-z", "--", *paths], capture_output=True
    ).stdout.decode()
    log = subprocess.run(
        [git, "-C", str(root), "log", "--all", "--relative", "--name-only", "--format=@%h",
         "--", *paths],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    history: dict[str, str] = {}
    commit = ""
    for line in log.splitlines():
        if line.startswith("@"):
            commit = line[1:]
        elif line:
            history.setdefault(line, commit)
    return set(filter(None, listed.split("\0"))), history


def check(root: Path, identity_file: Path | None = None) -> Report:
    return Checker(root, identity_file=identity_file).run()
