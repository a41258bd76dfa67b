"""Run the real `vaultgen` console script and compare vault folders byte for byte."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pexpect

from tests.helpers import one_error_line, run_tool, tool_path

__all__ = ["one_error_line"]

VAULTGEN = tool_path("vaultgen")
AGE = "age"


@dataclass(frozen=True)
class FileFacts:
    data: bytes
    mtime_ns: int
    mode: int


Snapshot = dict[str, FileFacts]


def clean_env(**extra: str) -> dict[str, str]:
    mine = ("VAULTGEN_", "ODBOX_VAULTGEN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(mine)}
    env.update(extra)
    return env


def vaultgen(
    vault: Path, *args: str, input: str | bytes | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run `vaultgen --vault VAULT ARGS…` as a user would; never raises on a non-zero exit."""
    env = kwargs.pop("env", None) or clean_env()
    return run_tool("vaultgen", "--vault", vault, *args, input=input, env=env, **kwargs)  # type: ignore[arg-type]


def vaultgen_ok(vault: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = vaultgen(vault, *args, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, f"vaultgen {' '.join(args)} failed:\n{result.stderr}"
    return result


def snapshot(root: Path) -> Snapshot:
    facts = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            facts[path.relative_to(root).as_posix()] = FileFacts(
                path.read_bytes(), st.st_mtime_ns, st.st_mode & 0o7777
            )
    return facts


def changed(before: Snapshot, after: Snapshot) -> set[str]:
    """Files added, removed, or with other bytes or another mtime."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


RECORDS = {"manifest.json", ".vaultgen-state.json"}


def assert_refused(vault: Path, *args: str, code: int = 1, message: str, stdin: str = "") -> None:
    before = snapshot(vault)
    result = vaultgen(vault, *args, input=stdin)
    assert result.returncode == code, result.stderr
    line = one_error_line(result)
    assert message in line, line
    assert changed(before, snapshot(vault)) == set()


def spawn(vault: Path, *args: str) -> pexpect.spawn:
    """vaultgen on a terminal of its own (a pty), to answer its prompts."""
    return pexpect.spawn(str(VAULTGEN), ["--vault", str(vault), *args], env=clean_env(), timeout=30)


def clone_of(vault: Path, target: Path) -> Path:
    """What `git clone` gives (.age and public files) plus the age.key a teammate hands over."""
    for path in vault.rglob("*"):
        if path.is_file() and (
            path.suffix in (".age", ".pub")
            or path.name in ("manifest.json", ".gitignore", "recipients.txt", "age.key")
        ):
            destination = target / path.relative_to(vault)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
    return target


def new_age_key(path: Path) -> str:
    """A new age identity file at `path`, by age-keygen; returns its public key."""
    subprocess.run(["age-keygen", "-o", path], check=True, capture_output=True)
    return subprocess.run(
        ["age-keygen", "-y", path], check=True, capture_output=True, text=True
    ).stdout.strip()


def age_decrypt(path: Path, identity: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([AGE, "--decrypt", "-i", str(identity), str(path)], capture_output=True)


def replace_leaf_with_short_lived_cert(vault: Path, days: int) -> None:
    """Have openssl (not vaultgen) sign a new localhost certificate with the vault CA."""
    certs = vault / "certs"
    csr, ext = certs / ".test.csr", certs / ".test.ext"
    ext.write_text("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
    subprocess.run(
        ["openssl", "req", "-new", "-key", certs / "localhost-key.pem", "-subj", "/CN=localhost",
         "-out", csr],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", certs / "vault-ca-cert.pem",
         "-CAkey", certs / "vault-ca-key.pem", "-days", str(days), "-extfile", ext,
         "-out", certs / "localhost-cert.pem"],
        check=True, capture_output=True,
    )  # fmt: skip
    csr.unlink()
    ext.unlink()
