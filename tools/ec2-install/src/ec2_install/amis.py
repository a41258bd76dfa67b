"""The official NixOS images: listed, sorted by release, the newest stable one picked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ec2_install import aws
from ec2_install.spec import NIXOS_OWNER
from odbox_common.errors import UsageError

# nixos/25.05.802216.b3582c75c7f2-aarch64-linux; a pre-release reads 25.11pre123456.abc…
_NAME = re.compile(r"nixos/(\d+)\.(\d+)(pre)?(?:\.?(\d+))?[.\w-]*")


@dataclass(frozen=True)
class Ami:
    id: str
    name: str
    owner: str
    architecture: str
    created: str
    root_device: str
    release: str
    prerelease: bool
    _key: tuple[int, int, int, int, str]

    @classmethod
    def from_aws(cls, image: dict[str, Any]) -> Ami | None:
        name = image.get("Name") or ""
        m = _NAME.fullmatch(name)
        if not m:
            return None
        major, minor, pre, build = m.groups()
        key = (int(major), int(minor), 0 if pre else 1, int(build or 0), image["CreationDate"])
        return cls(
            image["ImageId"],
            name,
            image.get("OwnerId", ""),
            image["Architecture"],
            image["CreationDate"],
            image["RootDeviceName"],
            f"{major}.{minor}" + ("pre" if pre else ""),
            bool(pre),
            key,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "architecture": self.architecture,
            "release": self.release,
            "prerelease": self.prerelease,
            "created": self.created,
            "root_device": self.root_device,
        }


def nixos_amis(ec2: Any, architecture: str | None = None) -> list[Ami]:
    """Every available official NixOS image in the region, newest release first.

    Owner-filtered: an image anyone else names `nixos/…` is never listed.
    """
    filters = [{"Name": "name", "Values": ["nixos/*"]}, {"Name": "state", "Values": ["available"]}]
    if architecture:
        filters.append({"Name": "architecture", "Values": [architecture]})
    response = aws.call(
        "listing the NixOS images", ec2.describe_images, Owners=[NIXOS_OWNER], Filters=filters
    )
    found = [
        ami
        for image in response["Images"]
        if image.get("OwnerId") == NIXOS_OWNER and (ami := Ami.from_aws(image)) is not None
    ]
    return sorted(found, key=lambda a: a._key, reverse=True)


def newest(ec2: Any, architecture: str, region: str) -> Ami:
    stable = [a for a in nixos_amis(ec2, architecture) if not a.prerelease]
    if not stable:
        raise UsageError(
            f"no official NixOS image for {architecture} in {region} "
            f"(owner {NIXOS_OWNER}); `ec2-install amis --region {region}` lists what there is"
        )
    return stable[0]


def explicit(ec2: Any, ami_id: str, architecture: str, instance_type: str) -> Ami:
    """The image given with --ami, refused unless it exists, is NixOS and fits the instance type.

    An image of another owner than NixOS's is allowed (one built in-house); `up` warns.
    """
    if not re.fullmatch(r"ami-[0-9a-f]{8,17}", ami_id):
        raise UsageError(f"bad --ami {ami_id!r}: an image id looks like ami-0123456789abcdef0")
    from botocore.exceptions import ClientError

    try:
        images = ec2.describe_images(ImageIds=[ami_id])["Images"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
            images = []
        else:
            raise aws.AwsError(f"looking up --ami {ami_id}: {aws.describe(e)}") from e
    if not images:
        raise UsageError(f"--ami {ami_id} does not exist in this region")
    image = images[0]
    if image.get("Architecture") != architecture:
        raise UsageError(
            f"--ami {ami_id} is built for {image.get('Architecture')}, "
            f"but {instance_type} runs {architecture}"
        )
    if image.get("State") != "available":
        raise UsageError(f"--ami {ami_id} is {image.get('State')}, not available")
    name = image.get("Name") or ""
    if "nixos" not in name.lower():
        raise UsageError(
            f"--ami {ami_id} ({name or 'no name'}) is not a NixOS image: the first boot "
            "needs NixOS's amazon-init to run the user data"
        )
    ami = Ami.from_aws(image) or Ami(
        image["ImageId"], name, image.get("OwnerId", ""), image["Architecture"],
        image.get("CreationDate", ""), image["RootDeviceName"], "?", False, (0, 0, 0, 0, ""),
    )  # fmt: skip
    return ami
