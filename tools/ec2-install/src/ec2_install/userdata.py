"""The user data of a box: userdata.sh with its settings (no flake, nothing secret).

NixOS's amazon-init runs user data that starts with `#!` as a bash script, at
every boot; the script makes that safe (see its header).
"""

from __future__ import annotations

import shlex
from importlib import resources

from odbox_common.errors import UsageError

# EC2 refuses user data over 16 KiB (before base64).
MAX_BYTES = 16 * 1024


def template() -> str:
    return resources.files("ec2_install").joinpath("userdata.sh").read_text(encoding="utf-8")


def render(*, box: str, backup_gb: int, backup_device: str) -> str:
    settings = "\n".join(
        f"{name}={shlex.quote(str(value))}"
        for name, value in (
            ("BOX", box),
            ("BACKUP_GB", backup_gb),
            ("BACKUP_DEVICE", backup_device),
        )
    )
    script = template().replace(
        "# @settings@", f"# Written by ec2-install for box {box}.\n{settings}", 1
    )
    if len(script.encode()) > MAX_BYTES:
        raise UsageError(f"the user data is {len(script.encode())} bytes, over EC2's 16 KiB")
    return script
