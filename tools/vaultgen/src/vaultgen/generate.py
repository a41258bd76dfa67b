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

The planner's derived files (hashes, public key, certificates) are in derive.py, what a
run is asked for and what it plans in plans.py.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from pathlib import Path

from odbox_common import age
from odbox_common.errors import ToolError as VaultError
from odbox_common.errors import UsageError
from vaultgen import agecrypt, layout, records
from vaultgen.derive import DerivedFiles
from vaultgen.files import (
    PUBLIC_FILE_MODE,
    SECRET_FILE_MODE,
    Transaction,
    ensure_dir,
    exclusive_lock,
    read_or_none,
    remove_stale_temp_files,
    sha256_hex,
    write_atomic,
)
from vaultgen.layout import Item, Kind
from vaultgen.plans import RECIPIENTS_CHANGED, Chmod, Plan, Request, Write
from vaultgen.records import Manifest, State
from vaultgen.verify import check_password, password_from_bytes, password_problem


class Planner(DerivedFiles):
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
        self.imported: set[str] = set()  # certificate stems the vault CA must never re-sign
        self.identities: list[age.Identity] = []
        self.recipients: list[age.Recipient] = []
        self.fingerprint = ""
        self.vault_public = ""  # age.key's public key: always among the recipients

    # -- reading ------------------------------------------------------------

    def read(self, rel: str) -> bytes | None:
        if rel not in self._disk:
            self._disk[rel] = read_or_none(self.root / rel)
        return self._disk[rel]

    def write(self, rel: str, data: bytes, mode: int, reason: str) -> None:
        self.writes[rel] = Write(rel, data, mode, reason, self.read(rel) is not None)

    def decrypt(self, item: Item) -> bytes:
        if item.path not in self.age_plain:
            data = self.read(item.age_path)
            assert data is not None
            self.age_plain[item.path] = age.decrypt(
                data, self.identities, str(self.root / item.age_path)
            )
        return self.age_plain[item.path]

    # -- the plan -----------------------------------------------------------

    def plan(self) -> Plan:
        layout.refuse_symlinked_folders(self.root)
        self.load_identity()
        self.load_recipients()
        items = layout.discover(
            self.root,
            passwords=self.request.passwords,
            leaf_stems=[*self.request.leaves, *self.request.imports],
        )
        leaves = {i.name for i in items if i.kind is Kind.LEAF_CERT}
        recorded_imports = {
            s for s, r in self.old_manifest.certificates.items() if r.get("imported")
        }
        self.imported = (recorded_imports | set(self.request.imports)) & leaves
        self.imported -= set(self.request.leaves)
        self.refuse_foreign_age_files(items)
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
        for rel, mode, wanted in layout.loose_modes(self.root, items):
            if rel not in self.writes:
                self.chmods.append(Chmod(rel, wanted, f"mode {mode:04o} lets others read it"))
        self.new_manifest.identity = self.vault_public
        manifest = self.new_manifest.to_bytes()
        if self.read(layout.MANIFEST) != manifest:
            self.write(layout.MANIFEST, manifest, PUBLIC_FILE_MODE, "records the .age files")
        state = self.new_state.to_bytes()
        if self.read(layout.STATE) != state:
            self.write(layout.STATE, state, SECRET_FILE_MODE, "local cache")
        tracked = [layout.GITIGNORE, layout.MANIFEST]
        if self.request.identity_file is None:  # a teammate's checkout need not hold age.key
            tracked.insert(0, layout.IDENTITY)
        for item in items:
            tracked += [item.path, item.age_path] if item.encrypted else [item.path]
        ordered = sorted(self.writes.values(), key=_commit_order)
        recipients = [r.canonical for r in self.recipients]
        return Plan(self.root, ordered, self.chmods, tracked, recipients)

    def refuse_foreign_age_files(self, items: list[Item]) -> None:
        """Before any .age is decrypted into the cleartext or re-encrypted (and so recorded)."""
        ages, by_age_path = {}, {}
        for item in items:
            if item.encrypted and (data := self.read(item.age_path)) is not None:
                ages[item.age_path], by_age_path[item.age_path] = data, item
        found = records.untrusted(
            self.old_manifest, records.pending_hashes(self.root), ages, self.request.accept_age
        )
        for rel in found:
            self.decrypt(by_age_path[rel])  # a corrupt or truncated file says so first
        records.refuse_untrusted(found, "generate")

    def load_identity(self) -> None:
        if self.read(layout.IDENTITY_NEW) is not None:
            raise VaultError(
                "an interrupted `vaultgen rekey --new-identity` left "
                f"{self.root / layout.IDENTITY_NEW}: run `vaultgen rekey --new-identity` again "
                "to finish it"
            )
        if self.request.identity_file is not None:
            self.load_own_identity(self.request.identity_file)
            return
        data = self.read(layout.IDENTITY)
        if data is None:
            if any(self.root.glob("*/*.age")):
                raise VaultError(
                    f"{self.root / layout.IDENTITY} is missing but the vault has .age files: "
                    "copy the vault's identity there (it is never committed)"
                )
            layout.refuse_foreign_folder(self.root)
            secret, public = age.generate_identity()
            data = age.identity_file_text(secret, public)
            self.write(layout.IDENTITY, data, SECRET_FILE_MODE, "new")
        where = str(self.root / layout.IDENTITY)
        self.identities = age.parse_identity_file(data, where)
        mine, recorded = (
            agecrypt.vault_recipient(self.identities, where),
            self.old_manifest.identity,
        )
        if recorded and mine != recorded:
            raise VaultError(
                f"{where} is {mine}, but this vault is encrypted to {recorded} "
                f"({layout.MANIFEST}): get the vault's current identity (after a "
                "`vaultgen rekey --new-identity`, from whoever ran it) and put it there"
            )
        self.vault_public = mine

    def load_own_identity(self, path: Path) -> None:
        """A teammate's own key, listed in recipients.txt: the vault's age.key stays a recipient
        (manifest.json names it) though this checkout need not hold it."""
        recorded = self.old_manifest.identity
        if recorded is None:
            raise VaultError(
                f"--identity works in an existing vault, and {self.root / layout.MANIFEST} "
                "names no vault identity: make the vault with `vaultgen generate` first"
            )
        self.identities = agecrypt.load_identity_file(path)
        self.vault_public = recorded

    def load_recipients(self) -> None:
        extra = agecrypt.parse_recipients_file(self.root / layout.RECIPIENTS)
        self.recipients = [age.parse_recipient(self.vault_public, layout.IDENTITY), *extra]
        self.fingerprint = age.recipients_fingerprint(self.recipients)
        if self.request.identity_file is not None:
            agecrypt.require_recipient(self.identities, self.recipients, self.request.identity_file)

    def resolve(self, item: Item) -> None:
        """Settle the cleartext content of one item, remaking it if missing or stale."""
        clear = self.read(item.path)
        requested = self.requested_content(item)
        began = self.request.expected.get(item.path)
        if began is not None and self.sync_with_age(item, clear)[0] != began:
            raise VaultError(
                f"{self.root / item.path} changed while it was being edited (a git pull, "
                "another run?): nothing was changed; edit it again"
            )
        if requested is not None:
            content: bytes | None = requested
            reason = "imported" if item.kind in (Kind.LEAF_CERT, Kind.LEAF_KEY) else "new password"
        else:
            content, reason = self.sync_with_age(item, clear)
        if content is not None and not item.derived:
            content, reason = self.accept_source(item, content, reason)
        if item.kind is Kind.LEAF_CERT:
            self.record_leaf(item, content)
        if item.derived:
            if content is None:
                content, reason = self.derive(item), reason or "new"
            elif requested is None and (stale := self.staleness(item, content)):
                content, reason = self.derive(item), stale
        elif content is None:
            content, reason = self.generate_source(item), "new"
        self.content[item.path] = content
        self.remember(item, content)
        if clear != content:
            self.write(item.path, content, item.mode, reason)

    def sync_with_age(self, item: Item, clear: bytes | None) -> tuple[bytes | None, str]:
        sealed = self.read(item.age_path) if item.encrypted else None
        if sealed is None:
            return clear, ""
        if clear is None:
            return self.decrypt(item), "restored from its .age"
        known = self.known(item)
        clear_sha, age_sha = sha256_hex(clear), sha256_hex(sealed)
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

    def accept_source(self, item: Item, content: bytes, reason: str) -> tuple[bytes, str]:
        """Refuse a source secret that is unusable; write a password in its one-line form."""
        where = str(self.root / item.path)
        if item.kind is Kind.PASSWORD:
            password = password_from_bytes(content, where)
            if problem := password_problem(password):
                raise VaultError(f"{where}: {problem}; fix it or set it with `vaultgen password`")
            if password.encode() != content:
                return password.encode(), reason or "trailing newline removed"
        elif item.kind is Kind.BACKUP_AUTH_KEY and len(BACKUP_AUTH_KEY_LINE.findall(content)) != 1:
            raise VaultError(
                f"{where} is not an odbox-backup authentication key (one line "
                "odbox-backup-auth-key-1:<64 hex digits>): put back the box's key, or delete "
                "it and its .age to make a new one (a repository made with the old one then "
                "refuses the new one)"
            )
        elif item.kind in (Kind.CA_KEY, Kind.LEAF_KEY) and self.known(item).get(
            "sha256"
        ) != sha256_hex(content):
            from vaultgen.pki import load_private_key

            try:
                load_private_key(content, where)
            except VaultError as e:
                raise VaultError(
                    f"{e}; restore it from its .age, or delete it and its .age to make a new one"
                ) from None
        return content, reason

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
        if item.kind is Kind.BACKUP_AUTH_KEY:
            return backup_auth_key()
        raise AssertionError(f"{item.kind} is not a source")

    def encrypt(self, item: Item) -> None:
        content = self.content[item.path]
        sealed = self.read(item.age_path)
        recorded = self.old_manifest.files.get(item.age_path, {})
        if sealed is None:
            reason = "new"
        elif self.decrypt(item) != content:
            reason = "its cleartext changed"
        elif recorded.get("recipients") != self.fingerprint:
            reason = RECIPIENTS_CHANGED
        elif recorded.get("sha256") != sha256_hex(sealed):
            reason = "changed outside vaultgen"
        else:
            reason = ""
        if sealed is None or reason:
            sealed = age.encrypt(content, self.recipients)
            self.write(item.age_path, sealed, PUBLIC_FILE_MODE, reason)
        self.new_manifest.files[item.age_path] = {
            "sha256": sha256_hex(sealed),
            "recipients": self.fingerprint,
        }
        self.new_state.files[item.path]["age_sha256"] = sha256_hex(sealed)


# odbox-backup's key file as its `AuthKey.text` writes it and `AuthKey.parse` reads it (32
# random bytes in hex on a line of their own; comments allowed). Written here, not imported:
# vaultgen does not depend on odbox-backup.
BACKUP_AUTH_KEY_LINE = re.compile(rb"^odbox-backup-auth-key-1:[0-9a-f]{64}$", re.MULTILINE)


def backup_auth_key() -> bytes:
    """A new odbox-backup authentication key file."""
    return (
        "# odbox-backup authentication key: keep a copy with the admin's identity (the\n"
        "# vault), never in the repository; every command that reads or writes needs it.\n"
        f"odbox-backup-auth-key-1:{secrets.token_hex(32)}\n"
    ).encode()


def _commit_order(write: Write) -> int:
    """Cleartext first, then `.age`, then the records: a crash between renames is repaired
    by the next run, because the state cache is written last."""
    if write.path == layout.STATE:
        return 3
    if write.path == layout.MANIFEST:
        return 2
    return 1 if write.path.endswith(layout.AGE_SUFFIX) else 0


def apply(plan: Plan) -> None:
    writes = plan.writes
    # .gitignore on its own and before anything is staged: until it is in place, a temp
    # file or a renamed secret is something `git add -A` would commit.
    for w in (w for w in writes if w.path == layout.GITIGNORE):
        write_atomic(plan.root / w.path, w.data, w.mode)
    with Transaction() as tx:
        for w in writes:
            if w.path != layout.GITIGNORE:
                tx.stage(plan.root / w.path, w.data, w.mode)
        records.note_pending(
            plan.root, (w.data for w in writes if w.path.endswith(layout.AGE_SUFFIX))
        )
    records.clear_pending(plan.root)
    for c in plan.chmods:
        try:
            (plan.root / c.path).chmod(c.mode)
        except OSError as e:
            raise VaultError(f"cannot change the mode of {plan.root / c.path}: {e.strerror}") from e


def generate(root: Path, request: Request | None = None) -> Plan:
    """Bring the vault at `root` up to date; returns what was done."""
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is not a folder: give --vault a vault folder")
    if not (root / layout.IDENTITY).exists():
        layout.refuse_foreign_folder(root)  # before the folder or its lock is made
    ensure_dir(root)
    if read_or_none(root / layout.GITIGNORE) is None:
        # A new vault: git must ignore its lock and every secret before either exists.
        write_atomic(root / layout.GITIGNORE, layout.GITIGNORE_TEXT, PUBLIC_FILE_MODE)
    with exclusive_lock(root):
        remove_stale_temp_files(root)
        plan = Planner(root, request or Request()).plan()
        apply(plan)
    return plan


def plan_only(root: Path, identity_file: Path | None = None) -> Plan:
    """What `generate --batch` would do, without doing it (for `status`)."""
    return Planner(root, Request(identity_file=identity_file)).plan()
