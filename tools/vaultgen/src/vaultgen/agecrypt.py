"""The vault's rules on top of odbox_common.age: its committed recipients file, its own
identity (an age key), and who may open it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from odbox_common import age, console
from odbox_common.errors import ToolError as VaultError


def parse_recipients_file(path: Path) -> list[age.Recipient]:
    """Read an age recipients file: one recipient a line, `#` comments and blank lines allowed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise VaultError(f"cannot read {path}: {e}") from e
    recipients = []
    for number, line in enumerate(lines, start=1):
        if not age.is_recipient_line(line):
            continue
        try:
            recipients.append(age.parse_recipient(line, f"{path}:{number}"))
        except age.SecretKeyInRecipients:
            console.warn(
                f"!!! {path}:{number} is a SECRET KEY, not a public recipient. "
                f"{path.name} is committed: delete that line now. If it was ever committed or "
                "pushed, that key is leaked: remove it from the recipients, make a new one "
                "and rekey (`vaultgen rekey --new-identity` if it was age.key) !!!"
            )
            raise
    return recipients


_unlocked_files: dict[tuple[str, str], list[age.Identity]] = {}


def load_identity_file(path: Path) -> list[age.Identity]:
    """An identity file's keys; one a command reads twice (`edit`) asks its passphrase once."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VaultError(f"identity file {path} does not exist") from None
    except OSError as e:
        raise VaultError(f"cannot read identity file {path}: {e.strerror}") from e
    key = (str(path), hashlib.sha256(data).hexdigest())
    if key not in _unlocked_files:
        _unlocked_files[key] = age.parse_identity_file(data, str(path))
    return _unlocked_files[key]


def vault_recipient(identities: list[age.Identity], where: str) -> str:
    """The public key of a vault identity file, which must hold an age key (not an SSH key)."""
    recipient = identities[0].recipient
    if recipient is None:
        raise VaultError(
            f"{where} holds an SSH key: the vault identity must be an age key "
            f"({age.AGE_SECRET_PREFIX}…); SSH keys belong in recipients.txt"
        )
    return recipient


def require_recipient(
    identities: list[age.Identity], recipients: list[age.Recipient], path: Path
) -> None:
    """A teammate's key must be one the vault is encrypted to (where its public key is known)."""
    publics = [i.public for i in identities if i.public]
    if publics and not {r.canonical for r in recipients} & set(publics):
        raise VaultError(
            f"{path} ({publics[0][:40]}…) is not a recipient of this vault: ask an admin to add "
            "its public key to recipients.txt and run `vaultgen rekey`"
        )
