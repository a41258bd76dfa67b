"""Audit a vault without changing it: every fact `generate` relies on, checked from the files.

Unlike `generate`, `check` trusts no cache: it decrypts every `.age`, verifies
every hash with libxcrypt, verifies every signature, and asks git itself what
it would commit.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vaultgen import agecrypt, crypthash, layout, pki
from vaultgen.errors import VaultError
from vaultgen.files import read_or_none, sha256_hex
from vaultgen.generate import password_from_bytes
from vaultgen.layout import Item, Kind
from vaultgen.records import Manifest
from vaultgen.sshkey import public_key_line


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
            "vault": self.vault,
            "ok": self.ok,
            "checked_files": self.checked,
            "problems": [asdict(p) for p in self.problems],
            "notes": self.notes,
        }


class Checker:
    def __init__(self, root: Path, now: dt.datetime | None = None) -> None:
        self.root = root
        self.now = now or dt.datetime.now(dt.UTC)
        self.report = Report(str(root))
        self.content: dict[str, bytes] = {}

    def run(self) -> Report:
        if not self.root.is_dir():
            raise VaultError(f"no vault at {self.root}: create one with `vaultgen generate`")
        identities = self.check_identity()
        recipients = self.check_recipients(identities)
        try:
            manifest = Manifest.load(self.root / layout.MANIFEST)
        except VaultError as e:
            self.report.add(layout.MANIFEST, str(e))
            manifest = Manifest()
        items = layout.discover(self.root)
        for item in items:
            self.check_encryption(item, identities, recipients, manifest)
        for item in items:
            if item.path in self.content:
                self.check_content(item)
        self.check_modes(items)
        self.check_git(items)
        return self.report

    def check_identity(self) -> list[agecrypt.Identity]:
        try:
            return agecrypt.load_identity_file(self.root / layout.IDENTITY)
        except VaultError as e:
            self.report.add(layout.IDENTITY, str(e))
            return []

    def check_recipients(self, identities: list[agecrypt.Identity]) -> list[agecrypt.Recipient]:
        own = [
            agecrypt.parse_recipient(i.recipient, layout.IDENTITY)
            for i in identities[:1]
            if i.recipient
        ]
        try:
            return own + agecrypt.parse_recipients_file(self.root / layout.RECIPIENTS)
        except VaultError as e:
            self.report.add(layout.RECIPIENTS, str(e))
            return own

    def check_encryption(
        self,
        item: Item,
        identities: list[agecrypt.Identity],
        recipients: list[agecrypt.Recipient],
        manifest: Manifest,
    ) -> None:
        clear = read_or_none(self.root / item.path)
        if clear is not None:
            self.report.checked += 1
            self.content[item.path] = clear
        if not item.encrypted:
            if clear is None:
                self.report.add(item.path, "missing")
            return
        age = read_or_none(self.root / item.age_path)
        if age is None:
            self.report.add(item.age_path, "missing" if clear is None else "not encrypted yet")
            return
        self.report.checked += 1
        if not identities:
            return
        try:
            plain = agecrypt.decrypt(age, identities, item.age_path)
        except VaultError as e:
            self.report.add(
                item.age_path, f"does not decrypt: tampered, corrupt or wrong key ({e})"
            )
            return
        if clear is None:
            self.content[item.path] = plain
        elif plain != clear:
            self.report.add(item.age_path, "holds something else than its cleartext")
        recorded = manifest.files.get(item.age_path, {})
        if recorded.get("sha256") != sha256_hex(age):
            self.report.add(
                item.age_path, f"changed outside vaultgen (not as {layout.MANIFEST} records)"
            )
        elif recipients and recorded.get("recipients") != agecrypt.recipients_fingerprint(
            recipients
        ):
            self.report.add(item.age_path, "not encrypted to the current recipients")

    def check_content(self, item: Item) -> None:
        data = self.content[item.path]
        try:
            problem = self.content_problem(item, data)
        except VaultError as e:
            problem = str(e)
        if problem:
            self.report.add(item.path, problem)

    def content_problem(self, item: Item, data: bytes) -> str:
        dep = self.content.get(item.deps[0]) if item.deps else None
        if item.kind in (Kind.SHA512, Kind.YESCRYPT):
            hashed = data.decode("ascii", errors="replace").strip()
            expected = "sha512" if item.kind is Kind.SHA512 else "yescrypt"
            if crypthash.method_of(hashed) != expected or "\n" in hashed:
                return f"is not a single {expected} crypt hash"
            if dep is not None and not crypthash.verify_password(
                password_from_bytes(dep, item.deps[0]), hashed
            ):
                return "hash does not match its password"
        elif item.kind is Kind.SSH_PUB and dep is not None:
            if data.split()[:2] != public_key_line(dep).split()[:2]:
                return "does not match ssh/id_ed25519"
        elif item.kind in (Kind.CA_CERT, Kind.LEAF_CERT):
            return self.cert_problem(item, data, dep)
        elif item.kind in (Kind.CA_KEY, Kind.LEAF_KEY):
            pki.load_private_key(data, item.path)
        return ""

    def cert_problem(self, item: Item, data: bytes, key: bytes | None) -> str:
        info = pki.cert_info(data, item.path)
        if key is not None and not pki.key_matches_cert(key, data, item.path):
            return f"does not match {item.deps[0]}"
        if item.kind is Kind.CA_CERT and not info.is_ca:
            return "is not a CA certificate (CA:TRUE)"
        if item.kind is Kind.LEAF_CERT:
            ca = self.content.get(item.deps[1])
            if info.vault_issued and ca is not None and not pki.signed_by(data, ca):
                return f"is not signed by {item.deps[1]}"
            if problem := pki.tls_server_problem(info, self.now):
                return problem
        if info.not_after <= self.now:
            return f"expired on {info.not_after:%Y-%m-%d}"
        if pki.needs_renewal(info, self.now):
            return f"expires within 30 days ({info.not_after:%Y-%m-%d})"
        return ""

    def check_modes(self, items: list[Item]) -> None:
        for folder in layout.PRIVATE_DIRS:
            path = self.root / folder
            if path.is_dir() and path.stat().st_mode & 0o077:
                mode = path.stat().st_mode & 0o777
                self.report.add(
                    folder or ".", f"folder mode {mode:04o}: others can list secrets (want 0700)"
                )
        for rel in [layout.IDENTITY, layout.STATE] + [i.path for i in items if i.secret]:
            path = self.root / rel
            if path.is_file() and path.stat().st_mode & 0o077:
                mode = path.stat().st_mode & 0o777
                self.report.add(rel, f"mode {mode:04o}: others can read this secret (want 0600)")

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
        cleartext = [layout.IDENTITY, layout.STATE, ".lock"] + [
            i.path for i in items if i.encrypted
        ]
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
        tracked = (
            subprocess.run(
                [git, "-C", str(self.root), "ls-files", "-z", "--", *cleartext],
                capture_output=True,
            )
            .stdout.decode()
            .split("\0")
        )
        for p in filter(None, tracked):
            self.report.add(
                p, "cleartext already committed: `git rm --cached` it and rotate the secret"
            )


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


def check(root: Path) -> Report:
    return Checker(root).run()
