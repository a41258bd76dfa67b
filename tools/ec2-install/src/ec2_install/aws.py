"""boto3 sessions and clients, and AWS failures turned into one clear line.

Only the standard AWS environment is read (AWS_PROFILE, AWS_ACCESS_KEY_ID…,
AWS_REGION, AWS_ENDPOINT_URL), as the AWS CLI does.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from odbox_common.errors import ToolError, UsageError


class AwsError(ToolError):
    """An AWS call failed; the message names the call and AWS's own reason."""


def session(region: str | None) -> Any:
    """A boto3 session for `region`, refusing an unknown region or missing credentials."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    # AWS_REGION as the AWS CLI v2 and the SDKs read it (botocore reads only AWS_DEFAULT_REGION).
    region = region or os.environ.get("AWS_REGION") or None
    try:
        s = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    except ProfileNotFound as e:
        raise UsageError(f"{e}: check AWS_PROFILE (`aws configure list-profiles`)") from None
    if not s.region_name:
        raise UsageError("no region: give --region or set AWS_REGION (e.g. eu-west-1)")
    # The commercial partition only: NixOS publishes no images in GovCloud or China, and
    # the IAM policy's ARNs are arn:aws.
    known = set(s.get_available_regions("ec2"))
    if s.region_name not in known:
        raise UsageError(
            f"unknown region {s.region_name!r}: EC2 regions are, e.g., "
            f"{', '.join(sorted(known)[:6])}, … (`aws ec2 describe-regions` lists yours)"
        )
    if s.get_credentials() is None:
        raise ToolError(
            "no AWS credentials: set AWS_PROFILE (after `aws configure` or `aws sso login`) "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return s


def client(s: Any, service: str = "ec2") -> Any:
    from botocore.config import Config

    config = Config(
        connect_timeout=10,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 5},
        user_agent_extra="ec2-install",
    )
    return s.client(service, config=config)


def describe(e: BaseException) -> str:
    """The line for an exception raised by boto3 or botocore."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(e, ClientError):
        error = e.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "").strip()
        hint = ""
        if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
            hint = " (`ec2-install policy` prints the IAM policy this tool needs)"
        elif code in ("AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch"):
            hint = " (check the AWS credentials)"
        return f"{e.operation_name} failed: {code}: {message}{hint}"
    if isinstance(e, NoCredentialsError):
        return "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    if isinstance(e, EndpointConnectionError):
        return f"cannot reach AWS: {e} (network, proxy or AWS_ENDPOINT_URL?)"
    return f"{type(e).__name__}: {e}"


def errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


@contextlib.contextmanager
def failing(what: str) -> Iterator[None]:
    """An AWS failure inside the block is raised as AwsError saying `what` was being done."""
    try:
        yield
    except errors() as e:
        raise AwsError(f"{what}: {describe(e)}") from e


def call(what: str, fn: Any, **kwargs: Any) -> Any:
    """`fn(**kwargs)`, with a failure raised as AwsError saying `what` was being done."""
    with failing(what):
        return fn(**kwargs)


def call_unless(what: str, absent: str, fn: Any, **kwargs: Any) -> Any:
    """`fn(**kwargs)`, or None when AWS answers the error code `absent` (no such thing);
    any other failure raised as AwsError saying `what` was being done."""
    from botocore.exceptions import ClientError

    try:
        return fn(**kwargs)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") == absent:
            return None
        raise AwsError(f"{what}: {describe(e)}") from e


def tags(box: str, name: str, extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    from ec2_install.spec import TAG_BOX, TAG_TOOL, TOOL

    values = {"Name": name, TAG_BOX: box, TAG_TOOL: TOOL, **(extra or {})}
    return [{"Key": k, "Value": v} for k, v in values.items()]


def tag_spec(
    resource_type: str, box: str, name: str, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    return {"ResourceType": resource_type, "Tags": tags(box, name, extra)}


def box_filters(box: str) -> list[dict[str, Any]]:
    """The filters that find what belongs to `box`: both of our tags."""
    from ec2_install.spec import TAG_BOX, TAG_TOOL, TOOL

    return [
        {"Name": f"tag:{TAG_BOX}", "Values": [box]},
        {"Name": f"tag:{TAG_TOOL}", "Values": [TOOL]},
    ]


def tag_dict(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}
