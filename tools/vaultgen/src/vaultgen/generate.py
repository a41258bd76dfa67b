"""Make exactly what is missing or out of date in a vault, deciding from content, never file times.

A run first plans every change in memory (nothing is written while anything
can still fail: a wrong key, a corrupt `.age`, a bad recipient), then stages
every file and renames them into place. The plan is also what `status` shows.

How each cleartext file and its `.age` twin are reconciled:
- only the `.age` exists (a fresh clone): decrypt it, don't regenerate;
- only the cleartext exists: encrypt it;
- both, and they agree: nothing to do;
- both, and they differ: the side that changed since the last run wins (the
  local state cache says which); if the cache cannot tell, stop and ask.
A derived file (hash, certificate, public key) is remade when it no longer
matches its inputs: the hash does not verify, the certificate is not signed by
the CA or expires within 30 days, the public key is not the private key's.
A `.age` is re-encrypted when its content or the recipient set changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vaultgen import agecrypt, layout
from vaultgen.errors import VaultError
from vaultgen.files import (
    DIR_MODE,
    PUBLIC_FILE_MODE,
    SECRET_FILE_MODE,
    Transaction,
    ensure_dir,
    exclusive_lock,
    read_or_none,
    remove_stale_temp_files,
    sha256_hex,
)
from vaultgen.layout import Item, Kind
from vaultgen.records import Manifest, State

MIN_PASSWORD_LENGTH = 8
PasswordPrompt = Callable[[str], str | None]


@dataclass(frozen=True)
class LeafRequest:
    """`vaultgen certs CN --san …`: what the certificate must be valid for."""

    common_name: str
    sans: tuple[str, ...]
    days: int | None = None


@dataclass
class Request:
    """What a command asks for beyond bringing the vault up to date."""

    passwords: dict[str, str] = field(default_factory=dict)  # name -> new password
    leaves: dict[str, LeafRequest] = field(default_factory=dict)  # stem -> request
    imports: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # stem -> cert, key
    ask_password: PasswordPrompt | None = None  # None: never prompt (--batch, no terminal)


@dataclass(frozen=True)
class Write:
    path: str
    data: bytes
    mode: int
    reason: str


@dataclass(frozen=True)
class Chmod:
    path: str
    mode: int
    reason: str


@dataclass(frozen=True)
class FileStatus:
    path: str
    state: str  # ok | missing | stale
    reason: str


@dataclass
class Plan:
    root: Path
    writes: list[Write]
    chmods: list[Chmod]
    tracked: list[str]  # every file the vault should have, in layout order

    @property
    def empty(self) -> bool:
        return not self.writes and not self.chmods

    def statuses(self) -> list[FileStatus]:
        written = {w.path: w for w in self.writes}
        chmodded = {c.path: c for c in self.chmods}
        result = []
        for path in self.tracked:
            if path in written:
                exists = (self.root / path).exists()
                reason = written[path].reason
                result.append(FileStatus(path, "stale" if exists else "missing", reason))
            elif path in chmodded:
                result.append(FileStatus(path, "stale", chmodded[path].reason))
            else:
                result.append(FileStatus(path, "ok", ""))
        return result


def password_from_bytes(data: bytes, where: str) -> str:
    """A password file holds one line; a single trailing newline (an editor's) is not part of it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VaultError(f"{where} is not UTF-8 text") from None
    if text.endswith("\n"):
        text = text[:-1].removesuffix("\r")
    return text


def check_password(password: str, where: str) -> str:
    if "\n" in password or "\r" in password or "\0" in password:
        raise VaultError(f"{where}: a password is one line, without NUL bytes")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise VaultError(f"{where}: a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


class Planner:
    def __init__(self, root: Path, request: Request, now: dt.datetime | None = None) -> None:
        self.root = root
        self.request = request
        self.now = now or dt.datetime.now(dt.UTC)
        self._disk: dict[str, bytes | None] = {}
        self.content: dict[str, bytes] = {}
        self.age_plain: dict[str, bytes] = {}  # what each .age holds, where known
        self.writes: dict[str, Write] = {}
        self.chmods: list[Chmod] = []
        self.old_state = State.load(root / layout.STATE)
        self.new_state = State()
        self.old_manifest = Manifest.load(root / layout.MANIFEST)
        self.new_manifest = Manifest()
        self.identities: list[agecrypt.Identity] = []
        self.recipients: list[agecrypt.Recipient] = []
        self.fingerprint = ""

    # -- reading ------------------------------------------------------------

    def read(self, rel: str) -> bytes | None:
        if rel not in self._disk:
            self._disk[rel] = read_or_none(self.root / rel)
        return self._disk[rel]

    def write(self, rel: str, data: bytes, mode: int, reason: str) -> None:
        self.writes[rel] = Write(rel, data, mode, reason)

    def decrypt(self, item: Item) -> bytes:
        if item.path not in self.age_plain:
            data = self.read(item.age_path)
            assert data is not None
            self.age_plain[item.path] = agecrypt.decrypt(
                data, self.identities, str(self.root / item.age_path)
            )
        return self.age_plain[item.path]

    # -- the plan -----------------------------------------------------------

    def plan(self) -> Plan:
        self.load_identity()
        self.load_recipients()
        items = layout.discover(
            self.root,
            passwords=self.request.passwords,
            leaf_stems=[*self.request.leaves, *self.request.imports],
        )
        for item in items:
            self.resolve(item)
        for item in items:
            if item.encrypted:
                self.encrypt(item)
        if self.read(layout.GITIGNORE) != layout.GITIGNORE_TEXT:
            reason = (
                "new" if self.read(layout.GITIGNORE) is None else "differs from vaultgen's rules"
            )
            self.write(layout.GITIGNORE, layout.GITIGNORE_TEXT, PUBLIC_FILE_MODE, reason)
        self.tighten_modes(items)
        self.new_manifest.identity = self.identities[0].recipient
        manifest = self.new_manifest.to_bytes()
        if self.read(layout.MANIFEST) != manifest:
            self.write(layout.MANIFEST, manifest, PUBLIC_FILE_MODE, "records the .age files")
        state = self.new_state.to_bytes()
        if self.read(layout.STATE) != state:
            self.write(layout.STATE, state, SECRET_FILE_MODE, "local cache")
        tracked = [layout.IDENTITY, layout.GITIGNORE, layout.MANIFEST]
        for item in items:
            tracked += [item.path, item.age_path] if item.encrypted else [item.path]
        ordered = sorted(self.writes.values(), key=_commit_order)
        return Plan(self.root, ordered, self.chmods, tracked)

    def load_identity(self) -> None:
        if self.read(layout.IDENTITY_NEW) is not None:
            raise VaultError(
                "an interrupted `vaultgen rekey --new-identity` left "
                f"{self.root / layout.IDENTITY_NEW}: run `vaultgen rekey --new-identity` again "
                "to finish it"
            )
        data = self.read(layout.IDENTITY)
        if data is None:
            if any(self.root.glob("*/*.age")):
                raise VaultError(
                    f"{self.root / layout.IDENTITY} is missing but the vault has .age files: "
                    "copy the vault's identity there (it is never committed)"
                )
            secret, public = agecrypt.generate_identity()
            data = agecrypt.identity_file_text(secret, public)
            self.write(layout.IDENTITY, data, SECRET_FILE_MODE, "new vault identity")
        self.identities = agecrypt.parse_identity_file(data, str(self.root / layout.IDENTITY))
        mine, recorded = self.identities[0].recipient, self.old_manifest.identity
        if recorded and mine != recorded:
            raise VaultError(
                f"{self.root / layout.IDENTITY} is {mine}, but this vault is encrypted to "
                f"{recorded} ({layout.MANIFEST}): put the vault's identity in {layout.IDENTITY}, "
                "or change identities with `vaultgen rekey --new-identity`"
            )

    def load_recipients(self) -> None:
        own = self.identities[0].recipient
        assert own is not None
        extra = agecrypt.parse_recipients_file(self.root / layout.RECIPIENTS)
        self.recipients = [agecrypt.parse_recipient(own, layout.IDENTITY), *extra]
        self.fingerprint = agecrypt.recipients_fingerprint(self.recipients)

    def resolve(self, item: Item) -> None:
        """Settle the cleartext content of one item, remaking it if missing or stale."""
        clear = self.read(item.path)
        requested = self.requested_content(item)
        if requested is not None:
            content: bytes | None = requested
            reason = f"set by this command ({item.kind.value})"
        else:
            content, reason = self.sync_with_age(item, clear)
        if item.derived:
            if content is None:
                content, reason = self.derive(item, None), "missing"
            elif requested is None and (stale := self.staleness(item, content)):
                content, reason = self.derive(item, content), stale
        elif content is None:
            content, reason = self.generate_source(item), "missing"
        self.content[item.path] = content
        self.remember(item, content)
        if clear != content:
            self.write(item.path, content, item.mode, reason if clear is not None else "missing")

    def sync_with_age(self, item: Item, clear: bytes | None) -> tuple[bytes | None, str]:
        age = self.read(item.age_path) if item.encrypted else None
        if age is None:
            return clear, ""
        if clear is None:
            return self.decrypt(item), "restored from its .age"
        known = self.old_state.files.get(item.path, {})
        clear_sha, age_sha = sha256_hex(clear), sha256_hex(age)
        if known.get("sha256") == clear_sha and known.get("age_sha256") == age_sha:
            self.age_plain[item.path] = clear  # as the last run left them: in sync
            return clear, ""
        plain = self.decrypt(item)
        if plain == clear:
            return clear, ""
        if known.get("age_sha256") == age_sha:
            return clear, ""  # the cleartext was edited: encrypt() re-encrypts it
        if known.get("sha256") == clear_sha:
            return plain, "its .age changed (e.g. by git pull)"
        raise VaultError(
            f"{self.root / item.path} and its .age hold different content and vaultgen cannot "
            "tell which is newer: delete the one to discard, then run vaultgen again"
        )

    def requested_content(self, item: Item) -> bytes | None:
        if item.kind is Kind.PASSWORD and item.name in self.request.passwords:
            return self.request.passwords[item.name].encode()
        if item.name in self.request.imports:
            cert, key = self.request.imports[item.name]
            if item.kind is Kind.LEAF_CERT:
                return cert
            if item.kind is Kind.LEAF_KEY:
                return key
        return None

    def generate_source(self, item: Item) -> bytes:
        if item.kind is Kind.PASSWORD:
            from vaultgen.passphrase import generate_passphrase

            answer = self.request.ask_password(item.name) if self.request.ask_password else None
            if answer:
                return check_password(answer, f"password for {item.name}").encode()
            return generate_passphrase().encode()
        if item.kind in (Kind.CA_KEY, Kind.LEAF_KEY):
            from vaultgen.pki import new_private_key_pem

            return new_private_key_pem()
        if item.kind is Kind.SSH_KEY:
            from vaultgen.sshkey import new_private_key

            return new_private_key()
        raise AssertionError(f"{item.kind} is not a source")

    # -- derived files ------------------------------------------------------

    def inputs_signature(self, item: Item) -> str:
        shas = [sha256_hex(self.content[dep]) for dep in item.deps]
        if (leaf := self.request.leaves.get(item.name)) and item.kind is Kind.LEAF_CERT:
            shas.append(repr(leaf))
        return sha256_hex("\n".join(shas).encode())

    def staleness(self, item: Item, content: bytes) -> str:
        """Why a derived file must be remade, or "" when it is current."""
        known = self.old_state.files.get(item.path, {})
        renew_after = known.get("renew_after")
        if (
            known.get("sha256") == sha256_hex(content)
            and known.get("inputs") == self.inputs_signature(item)
            and (renew_after is None or self.now.isoformat() < renew_after)
        ):
            return ""  # unchanged since it was last verified
        return self.verify_derived(item, content)

    def verify_derived(self, item: Item, content: bytes) -> str:
        dep = self.content[item.deps[0]]
        if item.kind in (Kind.SHA512, Kind.YESCRYPT):
            from vaultgen import crypthash

            password = password_from_bytes(dep, item.deps[0])
            hashed = content.decode("ascii", errors="replace").strip()
            expected = "sha512" if item.kind is Kind.SHA512 else "yescrypt"
            if crypthash.method_of(hashed) != expected or not crypthash.verify_password(
                password, hashed
            ):
                return "does not match its password"
            return ""
        if item.kind is Kind.SSH_PUB:
            from vaultgen.sshkey import public_key_line

            return (
                ""
                if content.split()[:2] == public_key_line(dep).split()[:2]
                else ("does not match ssh/id_ed25519")
            )
        return self.verify_cert(item, content)

    def verify_cert(self, item: Item, content: bytes) -> str:
        from vaultgen import pki

        where = str(self.root / item.path)
        try:
            info = pki.cert_info(content, where)
            matches = pki.key_matches_cert(self.content[item.deps[0]], content, where)
        except VaultError:
            return "unreadable"
        if item.kind is Kind.CA_CERT:
            if not matches:
                return "does not match the CA key"
            if not info.is_ca:
                return "is not a CA certificate"
        elif not info.vault_issued:
            if item.name in self.request.leaves:
                return "replaced by a certificate from the vault CA"
            if not matches:
                raise VaultError(
                    f"{where} was not issued by the vault CA and does not match "
                    f"{self.root / item.deps[0]}: import the certificate and its key again"
                )
            return ""  # imported: only its owner can renew it
        else:
            if not matches:
                return "does not match its key"
            if not pki.signed_by(content, self.content[item.deps[1]]):
                return "not signed by the current vault CA"
            leaf = self.request.leaves.get(item.name)
            if leaf and sorted({leaf.common_name, *leaf.sans}) != sorted(info.sans):
                return "names (SANs) changed"
            if leaf and leaf.days and abs((info.not_after - info.not_before).days - leaf.days) > 1:
                return "validity changed"
        if pki.needs_renewal(info, self.now):
            return f"expires {info.not_after:%Y-%m-%d}"
        return ""

    def derive(self, item: Item, existing: bytes | None) -> bytes:
        dep = self.content[item.deps[0]]
        if item.kind in (Kind.SHA512, Kind.YESCRYPT):
            from vaultgen import crypthash

            password = password_from_bytes(dep, item.deps[0])
            method: crypthash.Method = "sha512" if item.kind is Kind.SHA512 else "yescrypt"
            return (crypthash.hash_password(password, method) + "\n").encode()
        if item.kind is Kind.SSH_PUB:
            from vaultgen.sshkey import public_key_line

            return public_key_line(dep)
        from vaultgen import pki

        if item.kind is Kind.CA_CERT:
            return pki.make_ca_cert(dep)
        cn, sans, days = self.leaf_names(item, existing)
        ca_cert, ca_key = self.content[item.deps[1]], self.content[item.deps[2]]
        return pki.make_leaf_cert(dep, cn, sans, ca_cert, ca_key, days)

    def leaf_names(self, item: Item, existing: bytes | None) -> tuple[str, list[str], int]:
        from vaultgen import pki

        if leaf := self.request.leaves.get(item.name):
            return leaf.common_name, [leaf.common_name, *leaf.sans], leaf.days or pki.LEAF_DAYS
        if existing is not None:
            try:
                info = pki.cert_info(existing, item.path)
                if info.common_name:
                    return info.common_name, info.sans or [info.common_name], pki.LEAF_DAYS
            except VaultError:
                pass
        cn = layout.cn_of_stem(item.name)
        return cn, pki.default_sans(cn), pki.LEAF_DAYS

    def remember(self, item: Item, content: bytes) -> None:
        entry = {"sha256": sha256_hex(content)}
        if item.derived:
            entry["inputs"] = self.inputs_signature(item)
        known = self.old_state.files.get(item.path, {})
        if known.get("sha256") == entry["sha256"] and "renew_after" in known:
            entry["renew_after"] = known["renew_after"]  # same certificate, same dates
        elif item.kind in (Kind.CA_CERT, Kind.LEAF_CERT):
            from vaultgen import pki

            try:
                info = pki.cert_info(content, item.path)
                entry["renew_after"] = (info.not_after - pki.RENEW_WITHIN).isoformat()
            except VaultError:
                pass
        self.new_state.files[item.path] = entry

    # -- encryption ---------------------------------------------------------

    def encrypt(self, item: Item) -> None:
        content = self.content[item.path]
        age = self.read(item.age_path)
        recorded = self.old_manifest.files.get(item.age_path, {})
        if age is None:
            reason = "missing"
        elif self.decrypt(item) != content:
            reason = "its cleartext changed"
        elif recorded.get("recipients") != self.fingerprint:
            reason = "recipients changed"
        elif recorded.get("sha256") != sha256_hex(age):
            reason = "changed outside vaultgen"
        else:
            reason = ""
        if reason or age is None:
            age = agecrypt.encrypt(content, self.recipients)
            self.write(item.age_path, age, PUBLIC_FILE_MODE, reason)
        self.new_manifest.files[item.age_path] = {
            "sha256": sha256_hex(age),
            "recipients": self.fingerprint,
        }
        self.new_state.files[item.path]["age_sha256"] = sha256_hex(age)

    # -- modes --------------------------------------------------------------

    def tighten_modes(self, items: list[Item]) -> None:
        for folder in layout.PRIVATE_DIRS:
            path = self.root / folder
            if path.is_dir() and path.stat().st_mode & 0o077:
                self.chmods.append(Chmod(folder or ".", DIR_MODE, _loose(path)))
        secret_files = [layout.IDENTITY, layout.STATE] + [i.path for i in items if i.secret]
        for rel in secret_files:
            path = self.root / rel
            if rel not in self.writes and path.is_file() and path.stat().st_mode & 0o077:
                self.chmods.append(Chmod(rel, SECRET_FILE_MODE, _loose(path)))


def _loose(path: Path) -> str:
    return f"mode {path.stat().st_mode & 0o777:04o} lets others read it"


def _commit_order(write: Write) -> int:
    """Cleartext first, then `.age`, then the records: a crash between renames is repaired
    by the next run, because the state cache is written last."""
    if write.path == layout.STATE:
        return 3
    if write.path == layout.MANIFEST:
        return 2
    return 1 if write.path.endswith(layout.AGE_SUFFIX) else 0


def apply(plan: Plan) -> None:
    with Transaction() as tx:
        for w in plan.writes:
            tx.stage(plan.root / w.path, w.data, w.mode)
    for c in plan.chmods:
        try:
            (plan.root / c.path).chmod(c.mode)
        except OSError as e:
            raise VaultError(f"cannot change the mode of {plan.root / c.path}: {e.strerror}") from e


def generate(root: Path, request: Request | None = None) -> Plan:
    """Bring the vault at `root` up to date; returns what was done."""
    ensure_dir(root)
    with exclusive_lock(root):
        remove_stale_temp_files(root)
        plan = Planner(root, request or Request()).plan()
        apply(plan)
    return plan


def plan_only(root: Path) -> Plan:
    """What `generate --batch` would do, without doing it (for `status`)."""
    return Planner(root, Request()).plan()
