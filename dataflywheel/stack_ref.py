"""Find a stack's resources through CloudFormation: a deployed stack or the local one.

    conn = aws_connection(profile="dev", region="eu-west-1")   # your normal credential chain
    ref = describe(conn, "flywheel")                            # DescribeStacks
    ref.output("UploadBucketName")                              # -> "flywheel-uploadbucket-1x2y"

Every tool reaches a stack this way: ``DescribeStacks`` gives its status, its
parameters and its Outputs, and the template's Outputs carry every name and URL the
tools need. The local runtime registers a stack with the same Outputs in its own
CloudFormation (moto), so a ``Connection`` whose clients point at the local endpoints
goes down this same path (``dataflywheel.stack_client.local_connection``).

Errors are one line for a person: no credentials, no such stack, a stack that is not
in a usable state, an output that an older template did not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    TokenRetrievalError,
)

# Resources exist and Outputs are set (an update in progress still serves the old ones).
USABLE_STATES = frozenset(
    {
        "CREATE_COMPLETE",
        "UPDATE_COMPLETE",
        "UPDATE_IN_PROGRESS",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
        "UPDATE_ROLLBACK_COMPLETE",
        "IMPORT_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
    }
)
_BAD_CREDENTIALS = {
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}

# boto3 service name -> the AWS_ENDPOINT_URL_<ID> suffix, where the two differ.
_SERVICE_IDS = {
    "events": "EVENTBRIDGE",
    "logs": "CLOUDWATCH_LOGS",
    "cognito-idp": "COGNITO_IDENTITY_PROVIDER",
}
CLIENT_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"}, read_timeout=900, connect_timeout=5
)


class StackRefError(Exception):
    """The stack cannot be reached; the message says why and what to do."""


class NoCredentials(StackRefError):
    pass


class StackNotFound(StackRefError):
    pass


class StackNotUsable(StackRefError):
    pass


class MissingOutput(StackRefError):
    pass


@dataclass
class Connection:
    """A boto3 session plus, for the local runtime, the endpoint URL of each service.

    ``endpoint_urls`` maps a service's ``AWS_ENDPOINT_URL_<ID>`` suffix (``S3``,
    ``SAGEMAKER_RUNTIME``; ``""`` for the default) to its URL, the same names the
    SDKs read from the environment; empty for AWS itself.
    """

    session: Any
    where: str
    endpoint_urls: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    @property
    def local(self) -> bool:
        return bool(self.endpoint_urls)

    def endpoint_url(self, service: str) -> str | None:
        if not self.endpoint_urls:
            return None
        key = _SERVICE_IDS.get(service, service.upper().replace("-", "_"))
        return self.endpoint_urls.get(key) or self.endpoint_urls.get("")

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, endpoint_url=self.endpoint_url(service), config=CLIENT_CONFIG
            )
        return self._clients[service]


def aws_connection(profile: str | None = None, region: str | None = None) -> Connection:
    """AWS itself, with the normal credential chain (env, profile, SSO, instance role)."""
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except ProfileNotFound as exc:
        raise NoCredentials(
            f"no AWS profile named {profile!r} (see ~/.aws/config; aws configure --profile)"
        ) from exc
    if not session.region_name:
        raise StackRefError("no AWS region: pass --region, set AWS_REGION, or give the profile one")
    try:
        credentials = session.get_credentials()
    except (TokenRetrievalError, BotoCoreError) as exc:
        raise NoCredentials(f"AWS credentials could not be loaded: {exc}") from exc
    if credentials is None:
        raise NoCredentials(
            "no AWS credentials found (set AWS_PROFILE or pass --profile, run aws configure "
            "or aws sso login, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    where = f"region {session.region_name}" + (f", profile {profile}" if profile else "")
    return Connection(session, where)


@dataclass(frozen=True)
class StackRef:
    """One stack as DescribeStacks reports it."""

    name: str
    stack_id: str
    status: str
    region: str
    where: str
    outputs: Mapping[str, str]
    parameters: Mapping[str, str]

    def output(self, key: str) -> str:
        return require_output(self.outputs, key, self.name)


def require_output(outputs: Mapping[str, str], key: str, stack: str) -> str:
    if key not in outputs:
        raise MissingOutput(
            f"stack {stack} has no output {key}: it was deployed from an older template "
            "(sam build && sam deploy with this repository's template.yaml adds it)"
        )
    return outputs[key]


def describe(conn: Connection, name: str) -> StackRef:
    """DescribeStacks ``name``: its Outputs and Parameters, or a StackRefError saying why not."""
    return describe_with(conn.client("cloudformation"), name, conn.where, conn.region)


def describe_with(cfn: Any, name: str, where: str, region: str) -> StackRef:
    """``describe`` with a CloudFormation client of your own (``where``: for messages)."""
    try:
        (stack,) = cfn.describe_stacks(StackName=name)["Stacks"]
    except NoCredentialsError as exc:
        raise NoCredentials(f"no AWS credentials found ({where})") from exc
    except TokenRetrievalError as exc:
        raise NoCredentials(f"AWS credentials expired ({exc}; aws sso login?)") from exc
    except NoRegionError as exc:
        raise StackRefError("no AWS region: pass --region or set AWS_REGION") from exc
    except EndpointConnectionError as exc:
        raise StackRefError(f"CloudFormation does not answer ({where}): {exc}") from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code, message = err.get("Code", ""), err.get("Message", "")
        if code == "ValidationError" and "does not exist" in message:
            raise StackNotFound(
                f"no stack named {name} ({where}); check the name, --region and --profile"
            ) from exc
        if code in _BAD_CREDENTIALS:
            raise NoCredentials(f"AWS refused the credentials ({where}): {message}") from exc
        if code in _DENIED:
            raise StackRefError(
                f"not allowed to read stack {name} ({where}): needs "
                f"cloudformation:DescribeStacks ({message})"
            ) from exc
        raise
    status = stack["StackStatus"]
    if status not in USABLE_STATES:
        hint = {
            "CREATE_IN_PROGRESS": "it is still being created; wait for CREATE_COMPLETE",
            "REVIEW_IN_PROGRESS": "its change set was never executed",
        }.get(status, "deploy it again (sam deploy) or delete it")
        reason = stack.get("StackStatusReason")
        raise StackNotUsable(
            f"stack {name} is {status}" + (f" ({reason})" if reason else "") + f": {hint}"
        )
    return StackRef(
        name=stack["StackName"],
        stack_id=stack.get("StackId", ""),
        status=status,
        region=region,
        where=where,
        outputs={o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs") or []},
        parameters={
            p["ParameterKey"]: p.get("ResolvedValue", p.get("ParameterValue", ""))
            for p in stack.get("Parameters") or []
        },
    )
