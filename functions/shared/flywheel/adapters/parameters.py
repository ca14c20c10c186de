"""The champion record in SSM Parameter Store."""

from __future__ import annotations

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.domain.champion import Champion


def get_champion(name: str) -> Champion | None:
    try:
        value = client("ssm").get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if error_code(exc) == "ParameterNotFound":
            return None
        raise
    return Champion.model_validate_json(value)


def put_champion(name: str, champion: Champion) -> None:
    client("ssm").put_parameter(
        Name=name, Value=champion.model_dump_json(), Type="String", Overwrite=True
    )


def delete_champion(name: str) -> None:
    try:
        client("ssm").delete_parameter(Name=name)
    except ClientError as exc:
        if error_code(exc) != "ParameterNotFound":
            raise
