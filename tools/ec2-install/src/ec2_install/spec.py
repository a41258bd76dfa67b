"""What a box is made of, checked before any AWS call: name, sizes, SSH key, CIDR, flake.

Plain data and validation only (no boto3), so the command line can refuse bad
input in milliseconds and the tests can check every rule without a server.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from odbox_common.errors import UsageError

# The official NixOS images (https://nixos.org/download/#nixos-amazon): this
# account publishes them in every region, named nixos/<release>.<rev>-<system>.
NIXOS_OWNER = "427812963091"

# The instance types the seeds' users ran Odoo Box on; others work but are untested.
KNOWN_GOOD = {
    "arm64": ("m6g.xlarge", "m6g.2xlarge", "c6g.xlarge", "c6g.2xlarge", "t4g.2xlarge"),
    "x86_64": ("t3.medium", "t3.2xlarge"),
}
# The flake's machine for each architecture (nix/nodes/); `-boot` is appended for the first switch.
NODES = {"arm64": "ec2-aarch64", "x86_64": "ec2-x86_64"}

# Every resource a box owns carries these two tags from the moment it is made;
# only resources with both are ever found, changed or removed.
TAG_BOX = "odbox:box"
TAG_TOOL = "odbox:managed-by"
TOOL = "ec2-install"
# Set on each volume once the instance runs (a launch tags all volumes alike).
TAG_ROLE = "odbox:volume"
# The SHA-256 of an imported public key, to tell our key pair from another of the same name.
TAG_KEY = "odbox:ssh-key-sha256"

BACKUP_DEVICE = "/dev/sdf"
# Where the vault module looks for the box's age identity (issue 7's vault module).
AGE_KEY_PATH = "/var/lib/odbox/age.key"

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")


# S3's rules for a bucket name (no dots: virtual-hosted HTTPS cannot carry them).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def check_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(
            f"bad --backup-bucket {bucket!r}: an S3 bucket name, 3-63 lower-case letters, "
            "digits and inner dashes"
        )
    return bucket


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"bad box name {name!r}: use 1-40 lower-case letters, digits and inner dashes"
        )
    return name


@dataclass(frozen=True)
class SshKey:
    """An OpenSSH public key, as AWS imports it (ed25519 or RSA)."""

    line: str
    kind: str
    sha256: str  # hex digest of the key blob, our tag on the key pair
    fingerprint: str  # SHA256:… as ssh-keygen -l prints it

    @classmethod
    def read(cls, path: Path) -> SshKey:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise UsageError(f"no SSH public key at {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the SSH public key {path}: {e}") from None
        if "PRIVATE KEY" in text:
            raise UsageError(f"{path} is a private key: give the public one ({path}.pub)")
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "the SSH key") -> SshKey:
        from cryptography.hazmat.primitives.serialization import load_ssh_public_key

        lines = [line for line in text.strip().splitlines() if line.strip()]
        if len(lines) != 1:
            raise UsageError(f"{where} must be one OpenSSH public key line, not {len(lines)}")
        parts = lines[0].split()
        if len(parts) < 2 or parts[0] not in _SSH_TYPES:
            kind = parts[0] if parts else "nothing"
            raise UsageError(
                f"{where} is not an OpenSSH ed25519 or RSA public key (it starts with {kind!r}); "
                "EC2 imports only those two kinds"
            )
        try:
            load_ssh_public_key(" ".join(parts[:2]).encode())
            blob = base64.b64decode(parts[1], validate=True)
        except (ValueError, TypeError) as e:
            raise UsageError(f"{where} is malformed: {e}") from None
        digest = hashlib.sha256(blob)
        fingerprint = "SHA256:" + base64.b64encode(digest.digest()).decode().rstrip("=")
        return cls(" ".join(parts), parts[0], digest.hexdigest(), fingerprint)


def check_cidrs(cidrs: list[str]) -> tuple[str, ...]:
    """Each --ssh-cidr checked, in order, each once."""
    return tuple(dict.fromkeys(check_cidr(c) for c in cidrs))


def check_cidr(cidr: str) -> str:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise UsageError(
            f"bad --ssh-cidr {cidr!r}: {e} (for one address use 203.0.113.7/32)"
        ) from None
    if network.version == 6:
        raise UsageError(
            f"--ssh-cidr {cidr} is IPv6, but the box gets no IPv6 address (its subnet may "
            "have none): give the IPv4 address or network you connect from"
        )
    if network.prefixlen == 0:
        raise UsageError(
            f"--ssh-cidr {cidr} opens SSH to the whole internet: give your own address or network"
        )
    return str(network)


MAX_GP3_GIB = 16384


def check_sizes(root_gb: int, backup_gb: int) -> None:
    if root_gb < 20:
        raise UsageError(f"--root-gb {root_gb} is too small for NixOS and Odoo: 20 at least")
    if backup_gb < 1:
        raise UsageError("--backup-gb must be at least 1")
    for option, size in (("--root-gb", root_gb), ("--backup-gb", backup_gb)):
        if size > MAX_GP3_GIB:
            raise UsageError(f"{option} {size} is over gp3's largest volume ({MAX_GP3_GIB} GiB)")
    if root_gb == backup_gb:
        # The first boot tells the backup disk from the root disk by its size.
        raise UsageError(
            "--root-gb and --backup-gb must differ (the first boot finds the disk by size)"
        )


def checkout(cwd: Path | None = None) -> str | None:
    """The top of the git checkout around `cwd` if it holds a flake.nix; None otherwise."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return top if top and (Path(top) / "flake.nix").is_file() else None


_FLAKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s'\"\\#]+")


def check_node(node: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", node) or node.endswith("-boot"):
        raise UsageError(
            f"bad --node {node!r}: the name of one of the flake's nixosConfigurations, "
            "without -boot (e.g. ec2-aarch64)"
        )
    return node


# Query parameters that carry a secret (GitLab's private_token, signed URLs, basic tokens).
_SECRET_PARAMS = re.compile(
    r"(?:^|_|-)(?:token|access[_-]?token|private[_-]?token|password|passwd|pass|secret|"
    r"key|auth|sig|signature|credential|credentials)$",
    re.IGNORECASE,
)


def refuse_credentials(url: str, what: str) -> str:
    """`url` unless it carries a credential (`user:token@`, a token as the user of an
    https URL, `?token=`); the error line never repeats the secret."""
    import urllib.parse

    text = url.split("+", 1)[1] if url.startswith("git+") else url
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc
    reason = ""
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        if ":" in userinfo:
            reason = "a password or token before the @"
        elif parts.scheme in ("http", "https"):
            reason = "a user name (GitHub and GitLab take tokens there) before the @"
    for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAMS.search(name):
            reason = f"a {name}= parameter"
    if reason:
        host = parts.hostname or "its host"
        raise UsageError(
            f"{what} for {host} carries a credential ({reason}): it would be printed, logged "
            "and written into flake.lock; give the URL without it and let git or nix "
            "authenticate (an SSH key, a credential helper, netrc, nix's access-tokens)"
        )
    return url


MAX_FLAKE_CHARS = 2048


def check_flake(flake: str) -> str:
    refuse_credentials(flake, "--flake")
    if len(flake) > MAX_FLAKE_CHARS:
        raise UsageError(
            f"--flake is {len(flake)} characters long: give a flake URI under {MAX_FLAKE_CHARS}"
        )
    if flake.startswith(("path:", "/", ".", "~")):
        # A checkout here: nixos-rebuild evaluates it on this laptop (git-tracked files only).
        local = Path(flake.removeprefix("path:")).expanduser()
        if not (local / "flake.nix").is_file():
            raise UsageError(f"--flake {flake}: no flake.nix there")
        if any(c.isspace() for c in str(local.resolve())):
            raise UsageError(f"--flake {flake}: nixos-rebuild cannot take a path with spaces")
        return str(local.resolve())
    if m := re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", flake):
        raise UsageError(
            f"--flake {flake}: Nix reads a plain https URL as a tarball; "
            f"give github:{m.group(1)}/{m.group(2)}"
        )
    if not _FLAKE.fullmatch(flake):
        raise UsageError(
            f"bad --flake {flake!r}: give a flake URI without the #attribute, "
            "e.g. github:acme/odoo-box or git+https://git.example.com/odoo-box"
        )
    return flake
