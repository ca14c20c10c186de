"""The template's resources in moto, and its functions as local specs.

Resolution and resource creation are ``samlocal/cfn.py``'s (the template's own
properties, the same code the moto tests use). This module adds what only the
local runtime needs:

- bucket policies are not applied: moto enforces them, and the template's
  ``aws:SecureTransport`` deny would refuse every request to a plain-HTTP
  local endpoint;
- idempotence across restarts: the restored moto state already holds the
  resources, so creating one that exists is skipped (user pools and app clients are
  found by name: their ids are moto's; an alarm keeps its state), and a bucket's
  notification is only put on a new bucket (S3 sends a test event to the
  queue each time one is put);
- a "tap" SQS queue subscribed to every SNS topic, so ``flywheel status`` and
  tests read what a subscriber would receive;
- the stack itself in moto's CloudFormation (``register_stack``): its name, parameters
  and the template's Outputs resolved to the local names, so tools reach the local
  stack through ``DescribeStacks`` as they reach a deployed one. moto would try to
  create the SAM template's resources itself, so the registered template holds the
  Parameters and Outputs and one resource that creates nothing;
- ``FunctionSpec``s: Globals merged, layers mapped to local folders (a layer
  that sam build puts under ``python/`` is importable, as ``/opt/python`` is in
  Lambda; any other layer is what ``/opt`` holds, so environment values under
  ``/opt`` point at its folder), environment resolved to the local names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from samlocal import cfn
from samlocal.functions import FunctionSpec
from samlocal.moto_server import REGION, client

log = logging.getLogger(__name__)

NOTIFICATIONS_TAP = "notifications-tap"
# The registered stack's extra output (the local stack only): the tap queue's URL.
NOTIFICATIONS_TAP_OUTPUT = "NotificationsTapUrl"
# A resource type moto's CloudFormation accepts and creates nothing for.
PLACEHOLDER_TYPE = "AWS::CloudFormation::WaitConditionHandle"


class _Session:
    """A boto3-session stand-in whose clients make cfn.provision safe to repeat."""

    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url

    def client(self, service: str, region_name: str = REGION) -> Any:
        return _Idempotent(client(service, self.moto_url, region_name))


class _Idempotent:
    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._new_buckets: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_bucket(self, **kwargs: Any) -> Any:
        existing = {b["Name"] for b in self._inner.list_buckets().get("Buckets", [])}
        if kwargs["Bucket"] in existing:
            return {}
        self._new_buckets.add(kwargs["Bucket"])
        return self._inner.create_bucket(**kwargs)

    def put_bucket_notification_configuration(self, **kwargs: Any) -> Any:
        if kwargs["Bucket"] not in self._new_buckets:
            return {}
        return self._inner.put_bucket_notification_configuration(**kwargs)

    def put_bucket_policy(self, **kwargs: Any) -> Any:
        # moto enforces bucket policies, and the template's deny-non-TLS statement
        # would refuse every request to the local (plain HTTP) endpoint.
        return {}

    def create_table(self, **kwargs: Any) -> Any:
        try:
            return self._inner.create_table(**kwargs)
        except self._inner.exceptions.ResourceInUseException:
            return {}

    def create_user_pool(self, **kwargs: Any) -> Any:
        # Pool ids are the service's: after a restart, find the restored pool by name.
        pools = self._inner.list_user_pools(MaxResults=60)["UserPools"]
        for pool in pools:
            if pool["Name"] == kwargs["PoolName"]:
                return {"UserPool": pool}
        return self._inner.create_user_pool(**kwargs)

    def create_user_pool_client(self, **kwargs: Any) -> Any:
        clients = self._inner.list_user_pool_clients(UserPoolId=kwargs["UserPoolId"], MaxResults=60)
        for found in clients["UserPoolClients"]:
            if found["ClientName"] == kwargs["ClientName"]:
                return {"UserPoolClient": found}
        return self._inner.create_user_pool_client(**kwargs)

    def put_metric_alarm(self, **kwargs: Any) -> Any:
        # moto would reset a restored alarm's state (a suspended champion's ALARM included).
        if self._inner.describe_alarms(AlarmNames=[kwargs["AlarmName"]])["MetricAlarms"]:
            return {}
        return self._inner.put_metric_alarm(**kwargs)

    def update_time_to_live(self, **kwargs: Any) -> Any:
        try:
            return self._inner.update_time_to_live(**kwargs)
        except self._inner.exceptions.ClientError:  # already enabled
            return {}


def resolve(template_path: Path, stack_name: str, parameters: dict[str, str]) -> dict[str, Any]:
    resolved = cfn.resolve(cfn.load_template(template_path), stack_name, parameters)
    resolved["TemplateRoot"] = str(Path(template_path).resolve().parent)
    return resolved


def provision(resolved: dict[str, Any], moto_url: str) -> dict[str, str]:
    """Create everything the stack needs in moto; return Ref values by logical id."""
    physical = cfn.provision(resolved, _Session(moto_url))
    sqs, sns = (client(s, moto_url) for s in ("sqs", "sns"))

    tap_url = sqs.create_queue(QueueName=f"{resolved['StackName']}-{NOTIFICATIONS_TAP}")["QueueUrl"]
    tap_arn = sqs.get_queue_attributes(QueueUrl=tap_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    physical["_NotificationsTap"] = tap_url
    for lid, res in resolved["Resources"].items():
        if res["Type"] != "AWS::SNS::Topic":
            continue
        subs = sns.list_subscriptions_by_topic(TopicArn=physical[lid])["Subscriptions"]
        if not any(s["Endpoint"] == tap_arn for s in subs):
            sns.subscribe(TopicArn=physical[lid], Protocol="sqs", Endpoint=tap_arn)

    return physical


def stack_outputs(resolved: dict[str, Any], physical: dict[str, str]) -> dict[str, Any]:
    """The template's Outputs with each predicted name swapped for the provisioned one."""
    refs = {str(v): physical[k] for k, v in resolved["Refs"].items() if k in physical}
    return {
        k: refs.get(str(v["Value"]), v["Value"]) for k, v in resolved.get("Outputs", {}).items()
    }


def registered_template(resolved: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The template registered for the local stack: Parameters, resolved Outputs, no resources."""
    described = {k: v.get("Description") for k, v in resolved.get("Outputs", {}).items()}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{resolved['StackName']}: the local runtime of template.yaml (flywheel up)",
        "Parameters": {k: {"Type": "String"} for k in resolved.get("Parameters", {})},
        "Resources": {"LocalRuntime": {"Type": PLACEHOLDER_TYPE}},
        "Outputs": {
            k: {"Value": str(v), **({"Description": described[k]} if described.get(k) else {})}
            for k, v in outputs.items()
        },
    }


def register_stack(resolved: dict[str, Any], outputs: dict[str, Any], cfn_client: Any) -> str:
    """Create or update the stack in (moto's) CloudFormation; returns its StackId."""
    name = resolved["StackName"]
    body = json.dumps(registered_template(resolved, outputs))
    params = [
        {
            "ParameterKey": k,
            "ParameterValue": ",".join(map(str, v)) if isinstance(v, list) else str(v),
        }
        for k, v in resolved.get("Parameters", {}).items()
    ]
    try:
        cfn_client.describe_stacks(StackName=name)
    except cfn_client.exceptions.ClientError:
        return str(
            cfn_client.create_stack(StackName=name, TemplateBody=body, Parameters=params)["StackId"]
        )
    return str(
        cfn_client.update_stack(StackName=name, TemplateBody=body, Parameters=params)["StackId"]
    )


def _importable_layer(layer: dict[str, Any], content: Path) -> bool:
    """Does sam build put this layer under python/ (importable from /opt/python)?

    ``BuildMethod: python*`` does; a ``makefile`` build does when its Makefile
    writes to ``$(ARTIFACTS_DIR)/python``. Anything else lands in /opt as is.
    """
    build = str((layer.get("Metadata") or {}).get("BuildMethod", ""))
    if build.startswith("python"):
        return True
    makefile = content / "Makefile"
    return (
        build == "makefile"
        and makefile.exists()
        and "ARTIFACTS_DIR)/python" in makefile.read_text()
    )


def function_specs(resolved: dict[str, Any], physical: dict[str, str]) -> list[FunctionSpec]:
    """Every AWS::Serverless::Function of the template, ready to run locally."""
    root = Path(resolved["TemplateRoot"])
    globals_ = (resolved.get("Globals") or {}).get("Function") or {}
    layer_by_ref = {
        ref: lid
        for lid, ref in resolved["Refs"].items()
        if resolved["Resources"][lid]["Type"]
        in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")
    }
    specs = []
    for lid, res in resolved["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        props = {**globals_, **res["Properties"]}
        python_paths: list[Path] = []
        opt_dir: Path | None = None
        for ref in props.get("Layers") or []:
            layer = layer_by_ref.get(ref)
            if layer is None:
                log.warning("%s: layer %s is not in the template; skipped", lid, ref)
                continue
            content = (root / resolved["Resources"][layer]["Properties"]["ContentUri"]).resolve()
            if _importable_layer(resolved["Resources"][layer], content):
                python_paths.append(content)
            else:
                opt_dir = content
        invoke_config = props.get("EventInvokeConfig") or {}
        on_failure = (invoke_config.get("DestinationConfig") or {}).get("OnFailure") or {}
        env = cfn.function_environment(resolved, lid, physical)
        if opt_dir is not None:
            env = {
                k: (str(opt_dir) + v[len("/opt") :] if v == "/opt" or v.startswith("/opt/") else v)
                for k, v in env.items()
            }
        specs.append(
            FunctionSpec(
                logical_id=lid,
                name=resolved["Refs"][lid],
                handler=props["Handler"],
                code_dir=(root / props["CodeUri"]).resolve(),
                layer_paths=python_paths,
                environment=env,
                timeout_s=float(props.get("Timeout", 3)),
                memory_mb=int(props.get("MemorySize", 128)),
                events=props.get("Events") or {},
                async_max_attempts=int(invoke_config.get("MaximumRetryAttempts", 2)) + 1,
                on_failure=on_failure.get("Destination")
                if on_failure.get("Type") == "SQS"
                else None,
            )
        )
    return specs
