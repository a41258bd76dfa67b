"""The install from the laptop, once the instance runs, as nixos-anywhere does it over SSH.

Steps, each resumed by the next `up` if it did not finish (a mark per step in the
laptop's state directory, per instance):

1. pin: the host key the box offers must have one of the fingerprints NixOS's
   `print-host-key` unit wrote to the console (read with GetConsoleOutput);
   it is then the only key ssh accepts for the box (a known_hosts of its own);
2. key: the vault's age identity goes to /var/lib/odbox/age.key (0400 root) over
   that pinned connection, on stdin, never in argv or user data;
3. switch: `nixos-rebuild switch --flake CHECKOUT#NODE --target-host root@IP`
   on the laptop (the checkout's private repository and local commits work;
   `--build-host` builds on the box instead);
4. health: `/odbox/health` answers through Nginx on the box, asked over SSH.

Only ssh, ssh-keygen and nixos-rebuild are run; every ssh gets the same options
(NIX_SSHOPTS for nixos-rebuild), so the pinned key and the user's ssh config
(`--ssh-config`, a bastion's ProxyJump) hold for each connection.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ec2_install.progress import Phases, poll
from ec2_install.spec import AGE_KEY_PATH
from odbox_common.errors import ToolError, UsageError

BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
END = "-----END SSH HOST KEY FINGERPRINTS-----"
# `ssh-keygen -l -f KEY.pub`: bits, fingerprint, comment, (type)
_FINGERPRINT = re.compile(r"(\d+)\s+(SHA256:[A-Za-z0-9+/]+)\s.*\((\w+)\)\s*$")
CONSOLE_TIMEOUT = 1200.0
SSH_TIMEOUT = 600.0
HEALTH_TIMEOUT = 1200.0
STEPS = ("pin", "key", "switch", "health")
HEALTH_URL = "https://localhost/odbox/health"


class StepFailed(ToolError):
    """One install step failed; the message names it and what to do."""


@dataclass(frozen=True)
class Install:
    """What the install needs: where the box is and what goes onto it."""

    name: str
    region: str
    instance_id: str
    ip: str
    flake: str  # a local checkout (path) or a flake URI the laptop can fetch
    node: str
    age_key: Path
    identity: Path | None  # the private half of --ssh-key, when it is on disk
    ssh_config: Path | None
    build_host: bool
    state_dir: Path

    @property
    def host(self) -> str:
        return f"root@{self.ip}"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def ssh_options(self) -> list[str]:
        options = [
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=15",
            "-o", f"HostKeyAlias=ec2-install-{self.instance_id}",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
        ]  # fmt: skip
        if self.identity is not None:
            options += ["-o", "IdentitiesOnly=yes", "-i", str(self.identity)]
        if self.ssh_config is not None:
            options += ["-F", str(self.ssh_config)]
        return options


def state_dir(region: str, name: str, instance_id: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ec2-install" / region / name / instance_id


# ----------------------------------------------------------------------------- marks


def _marks(job: Install) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads((job.state_dir / "state.json").read_text())
        return loaded
    except FileNotFoundError:
        return {}


def _mark(job: Install, step: str, value: Any) -> None:
    marks = _marks(job)
    marks[step] = value
    _write_atomically(job.state_dir / "state.json", json.dumps(marks, indent=2) + "\n")


def _write_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------- console


def console_fingerprints(text: str) -> set[str]:
    """The SHA256 fingerprints of the last block print-host-key wrote (the newest boot)."""
    blocks = text.replace("\r", "").split(BEGIN)
    if len(blocks) < 2:
        return set()
    last = blocks[-1]
    if END not in last:
        return set()  # still being written
    found = set()
    for line in last.split(END, 1)[0].splitlines():
        if m := _FINGERPRINT.search(line.strip()):
            found.add(m.group(2))
    return found


def read_console(ec2: Any, instance_id: str) -> str:
    # botocore decodes the base64 of the answer itself (its decode_console_output handler)
    return str(ec2.get_console_output(InstanceId=instance_id).get("Output") or "")


def _fingerprint_of(key_line: str) -> str:
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ----------------------------------------------------------------------------- steps


def _ssh(job: Install, script: str, *, stdin: bytes = b"", check: bool = True,
         timeout: float = 120) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """Run `script` with sh on the box over the pinned connection."""
    argv = ["ssh", *job.ssh_options(), job.host, "sh", "-c", shlex.quote(script)]
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"ssh {job.host} gave no answer in {timeout:.0f} s") from None
    if check and result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise StepFailed(f"ssh {job.host}: {reason[-1] if reason else f'exit {result.returncode}'}")
    return result


def pin(ec2: Any, job: Install, phases: Phases) -> None:
    """Wait for the console's fingerprints and for sshd; pin the key that matches."""
    with phases.phase("host key", "waiting for the fingerprints on the console"):
        wanted: set[str] = poll(
            f"the SSH host key fingerprints on the console of {job.instance_id} "
            f"(aws ec2 get-console-output --region {job.region} --instance-id {job.instance_id})",
            CONSOLE_TIMEOUT,
            lambda: console_fingerprints(read_console(ec2, job.instance_id)),
            error=StepFailed,
        )
    with phases.phase("ssh", f"waiting for sshd on {job.ip}"):
        offered = poll(
            f"sshd on {job.ip}", SSH_TIMEOUT, lambda: _offered_keys(job), error=StepFailed
        )
    matching = [line for line in offered if _fingerprint_of(line) in wanted]
    if not matching:
        got = ", ".join(sorted({_fingerprint_of(line) for line in offered}))
        raise StepFailed(
            f"the host at {job.ip} offers SSH host key {got}, not one the console of "
            f"{job.instance_id} shows ({', '.join(sorted(wanted))}): refusing to connect "
            "(another machine answers at this address, or someone is in between)"
        )
    alias = f"ec2-install-{job.instance_id}"
    _write_atomically(
        job.known_hosts, "".join(f"{alias} {line}\n" for line in matching), mode=0o644
    )
    _mark(job, "pin", sorted(_fingerprint_of(line) for line in matching))


def _offered_keys(job: Install) -> list[str] | None:
    """The host keys sshd offers, learnt without authenticating (no key, no password is
    tried): ssh writes them to a scratch known_hosts and stops at authentication."""
    with tempfile.TemporaryDirectory() as scratch:
        known = Path(scratch) / "known_hosts"
        options = job.ssh_options()
        options[options.index(f"UserKnownHostsFile={job.known_hosts}")] = (
            f"UserKnownHostsFile={known}"
        )
        options[options.index("StrictHostKeyChecking=yes")] = "StrictHostKeyChecking=accept-new"
        argv = [
            "ssh", *options,
            "-o", "PreferredAuthentications=publickey", "-o", "PubkeyAuthentication=no",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            job.host, "true",
        ]  # fmt: skip
        try:
            subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None
        if not known.exists():
            return None
        keys = [" ".join(line.split()[1:3]) for line in known.read_text().splitlines() if line]
        return keys or None


def copy_key(job: Install) -> None:
    """The age identity to AGE_KEY_PATH, 0400 root, replaced atomically on the box."""
    try:
        key = job.age_key.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the vault's age identity {job.age_key}: {e}") from None
    if b"AGE-SECRET-KEY-" not in key:
        raise UsageError(f"{job.age_key} is not an age identity (no AGE-SECRET-KEY- line)")
    digest = hashlib.sha256(key).hexdigest()
    directory, name = AGE_KEY_PATH.rsplit("/", 1)
    # ODBOX_ROOT is unset on a box; the tests' sshd sets it to their scratch root.
    script = f"""set -eu
umask 077
dir="${{ODBOX_ROOT:-}}{directory}"
mkdir -p "$dir"
tmp=$(mktemp "$dir/.{name}.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
chown root:root "$tmp"
chmod 0400 "$tmp"
test "$(sha256sum <"$tmp" | cut -d' ' -f1)" = {digest}
mv -f "$tmp" "$dir/{name}"
trap - EXIT
"""
    _ssh(job, script, stdin=key)
    _mark(job, "key", digest)


def switch(job: Install) -> None:
    target = f"{job.flake}#{job.node}"
    argv = ["nixos-rebuild", "switch", "--flake", target, "--target-host", job.host]
    if job.build_host:
        argv += ["--build-host", job.host]
    options = job.ssh_options()
    if any(any(c.isspace() for c in o) for o in options):
        # nixos-rebuild splits NIX_SSHOPTS on spaces (the bash one without honouring quotes)
        raise StepFailed(
            f"a path in the ssh options has a space ({' '.join(options)}): nixos-rebuild "
            "cannot pass it on; move it (XDG_STATE_HOME, --ssh-config, --ssh-key)"
        )
    env = {**os.environ, "NIX_SSHOPTS": " ".join(options)}
    try:
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise StepFailed(
            "nixos-rebuild is not installed on this machine: `nix shell nixpkgs#nixos-rebuild` "
            "(or give --build-host to build on the box, which still needs it here)"
        ) from None
    if result.returncode != 0:
        raise StepFailed(
            f"{shlex.join(argv)} failed (exit {result.returncode}; its output is above)"
        )
    _mark(job, "switch", target)


def health(job: Install, phases: Phases) -> None:
    last = ["no answer yet"]
    script = (
        'curl --silent --show-error --insecure --max-time 20 --write-out "\\n%{http_code}" '
        f'"${{ODBOX_HEALTH_URL:-{HEALTH_URL}}}"'
    )

    def check() -> bool:
        result = _ssh(job, script, check=False, timeout=60)
        text = result.stdout.decode("utf-8", "replace").strip()
        body, _, code = text.rpartition("\n")
        last[0] = (
            f"HTTP {code}: {body[:200]}"
            if code.isdigit() and code != "000"
            else (result.stderr.decode("utf-8", "replace").strip() or "no answer")
        )
        return code == "200" and '"pass"' in body

    with phases.phase("health", f"waiting for /odbox/health on {job.ip}"):
        try:
            poll("/odbox/health to answer", HEALTH_TIMEOUT, check, error=StepFailed)
        except StepFailed as e:
            raise StepFailed(f"{e} (last: {last[0]})") from None
    _mark(job, "health", True)


def run(ec2: Any, job: Install, phases: Phases) -> list[str]:
    """Each step not yet marked done for this instance; returns the steps run."""
    done = _marks(job)
    if not job.known_hosts.exists():
        done.pop("pin", None)
    if done.get("switch") != f"{job.flake}#{job.node}":
        done.pop("switch", None)
        done.pop("health", None)
    with contextlib.suppress(OSError):  # a new identity goes over again
        if done.get("key") != hashlib.sha256(job.age_key.read_bytes()).hexdigest():
            done.pop("key", None)
    ran = []
    for step in STEPS:
        if step in done:
            continue
        try:
            if step == "pin":
                pin(ec2, job, phases)
            elif step == "key":
                copy_key(job)
            elif step == "switch":
                with phases.phase("switch", f"nixos-rebuild switch to {job.node}"):
                    switch(job)
            else:
                health(job, phases)
        except StepFailed as e:
            raise StepFailed(f"install step {step} failed: {e}; run `ec2-install up` again "
                             "to resume there") from None  # fmt: skip
        ran.append(step)
    return ran
