"""Read template.yaml and create its stateful resources through any boto3 session.

The tests (moto ``mock_aws``) and the local runtime (moto server mode) both build
the buckets, tables, queues and topics from the template's own Properties, so the
template stays the single source of truth. The API is four functions:

    template = load_template("template.yaml")             # CFN short tags -> long form
    resolved = resolve(template, "dataflywheel", {"JobPrefix": "dfw"})
    physical = provision(resolved, boto3.Session())       # {logical_id: name | url | arn}
    env = function_environment(resolved, "IngestFunction", physical)

``resolve`` evaluates Parameters (defaults + overrides), Conditions, Mappings and
the intrinsics Ref, Fn::Sub, Fn::GetAtt, Fn::FindInMap, Fn::If, Fn::Join,
Fn::Select, Fn::Split, Fn::Equals/Not/And/Or, with deterministic physical names
(``<stack>-<LogicalId>``, lowercased for buckets) so nothing has to exist first.
``provision`` creates S3 buckets (encryption, versioning, public access block,
policy, queue notifications), DynamoDB tables (GSIs, TTL), SQS queues (with
redrive; DLQs first), SNS topics, Cognito user pools with their app clients, and
Step Functions state machines (their definition file with DefinitionSubstitutions applied)
and CloudWatch alarms (moto records them and their state; it never evaluates them).
Lambda, IAM, EventBridge and custom resources are not created: the local runtime's
event router reads them itself.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no types (types-PyYAML is not pinned)

__all__ = ["load_template", "resolve", "provision", "function_environment", "physical_name"]

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT = "123456789012"
_NO_VALUE = object()

# --------------------------------------------------------------------------- loading


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short-form tags."""


def _construct(tag: str):
    def construct(loader: yaml.Loader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if tag == "Ref" or tag == "Condition":
            return {tag: value}
        return {tag: value}

    return construct


for _short in (
    "Ref",
    "Condition",
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAtt",
    "GetAZs",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Transform",
    "And",
    "Equals",
    "If",
    "Not",
    "Or",
):
    _long = _short if _short in ("Ref", "Condition") else f"Fn::{_short}"
    _CfnLoader.add_constructor(f"!{_short}", _construct(_long))


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML template, short tags turned into long form."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


# ------------------------------------------------------------------------- resolving


def physical_name(logical_id: str, resource_type: str, stack_name: str) -> str:
    """Deterministic name for a resource without an explicit one."""
    if resource_type == "AWS::S3::Bucket":
        return f"{stack_name}-{logical_id}".lower()[:63]
    if resource_type in ("AWS::SQS::Queue", "AWS::SNS::Topic"):
        return f"{stack_name}-{logical_id}"[:80]
    return f"{stack_name}-{logical_id}"[:64]


_EXPLICIT_NAME = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::Serverless::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::Serverless::StateMachine": "Name",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
}


def _check_constraints(name: str, spec: dict[str, Any], value: str) -> None:
    """What CloudFormation checks before it creates anything: the same refusal locally."""
    allowed = spec.get("AllowedValues")
    pattern = spec.get("AllowedPattern")
    if (allowed is not None and value not in [str(v) for v in allowed]) or (
        pattern is not None and not re.fullmatch(pattern, value)
    ):
        why = spec.get("ConstraintDescription") or (
            f"one of {allowed}" if allowed is not None else f"matching {pattern}"
        )
        raise ValueError(f"parameter {name}={value!r} is not allowed: {why}")


_STATE_MACHINES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")


class _Resolver:
    def __init__(self, template: dict, stack_name: str, params: dict, region: str, account: str):
        self.t = template
        self.stack = stack_name
        self.region = region
        self.account = account
        self.partition = "aws"
        self.params = self._parameters(params)
        self.conditions: dict[str, bool] = {}
        self.names: dict[str, str] = {}

    def _parameters(self, overrides: dict) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, spec in (self.t.get("Parameters") or {}).items():
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                raise ValueError(f"parameter {name} has no default and no value")
            if spec.get("Type") == "CommaDelimitedList":
                value = (
                    value
                    if isinstance(value, list)
                    else (str(value).split(",") if value != "" else [""])
                )
            else:
                value = str(value)
                _check_constraints(name, spec, value)
            values[name] = value
        return values

    # names and attributes ------------------------------------------------------
    def name(self, logical_id: str) -> str:
        if logical_id not in self.names:
            res = self.t["Resources"][logical_id]
            rtype = res["Type"]
            explicit = (res.get("Properties") or {}).get(_EXPLICIT_NAME.get(rtype, ""), None)
            if explicit is not None:
                self.names[logical_id] = self.value(explicit)
            else:
                self.names[logical_id] = physical_name(logical_id, rtype, self.stack)
        return self.names[logical_id]

    def arn(self, service: str, resource: str, region: bool = True, account: bool = True) -> str:
        return (
            f"arn:{self.partition}:{service}:{self.region if region else ''}:"
            f"{self.account if account else ''}:{resource}"
        )

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::StackName": self.stack,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": self.arn("cloudformation", f"stack/{self.stack}/00000000"),
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        rtype = self.t["Resources"][name]["Type"]
        n = self.name(name)
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{self.region}.amazonaws.com/{self.account}/{n}"
        if rtype == "AWS::SNS::Topic":
            return self.arn("sns", n)
        if rtype in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            return self.arn("lambda", f"layer:{n}:1")
        if rtype in _STATE_MACHINES:
            return self.arn("states", f"stateMachine:{n}")
        return n

    def getatt(self, logical_id: str, attr: str) -> str:
        rtype = self.t["Resources"][logical_id]["Type"]
        n = self.name(logical_id)
        table = {
            ("AWS::S3::Bucket", "Arn"): lambda: f"arn:{self.partition}:s3:::{n}",
            ("AWS::S3::Bucket", "DomainName"): lambda: f"{n}.s3.amazonaws.com",
            ("AWS::SQS::Queue", "Arn"): lambda: self.arn("sqs", n),
            ("AWS::SQS::Queue", "QueueName"): lambda: n,
            ("AWS::SQS::Queue", "QueueUrl"): lambda: self.ref(logical_id),
            ("AWS::SNS::Topic", "TopicArn"): lambda: self.arn("sns", n),
            ("AWS::SNS::Topic", "TopicName"): lambda: n,
            ("AWS::DynamoDB::Table", "Arn"): lambda: self.arn("dynamodb", f"table/{n}"),
            ("AWS::IAM::Role", "Arn"): lambda: self.arn("iam", f"role/{n}", region=False),
            ("AWS::Serverless::Function", "Arn"): lambda: self.arn("lambda", f"function:{n}"),
            ("AWS::Lambda::Function", "Arn"): lambda: self.arn("lambda", f"function:{n}"),
            ("AWS::CloudWatch::Alarm", "Arn"): lambda: self.arn("cloudwatch", f"alarm:{n}"),
            ("AWS::Serverless::StateMachine", "Arn"): lambda: self.ref(logical_id),
            ("AWS::Serverless::StateMachine", "Name"): lambda: n,
            ("AWS::StepFunctions::StateMachine", "Arn"): lambda: self.ref(logical_id),
            ("AWS::StepFunctions::StateMachine", "Name"): lambda: n,
        }
        if (rtype, attr) not in table:
            raise ValueError(f"Fn::GetAtt {logical_id}.{attr} ({rtype}) is not supported")
        return table[(rtype, attr)]()

    # conditions --------------------------------------------------------------
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.t["Conditions"][name]))
        return self.conditions[name]

    # intrinsics --------------------------------------------------------------
    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            values = [self.value(v) for v in node]
            return [v for v in values if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        fields = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in fields.items() if v is not _NO_VALUE}

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.value(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}
        out, i = [], 0
        while i < len(text):
            start = text.find("${", i)
            if start < 0:
                out.append(text[i:])
                break
            out.append(text[i:start])
            end = text.index("}", start)
            expr = text[start + 2 : end]
            if expr.startswith("!"):
                out.append("${" + expr[1:] + "}")
            elif expr in variables:
                out.append(str(variables[expr]))
            elif "." in expr and not expr.startswith("AWS::"):
                out.append(str(self.getatt(*expr.split(".", 1))))
            else:
                out.append(str(self.ref(expr)))
            i = end + 1
        return "".join(out)


def _join(r: _Resolver, arg: list) -> str:
    sep, items = arg
    values = r.value(items)
    return sep.join(str(v) for v in values)


def _if(r: _Resolver, arg: list) -> Any:
    name, yes, no = arg
    return r.value(yes if r.condition(name) else no)


_INTRINSICS = {
    "Ref": lambda r, a: r.ref(a),
    "Fn::GetAtt": lambda r, a: r.getatt(*(a if isinstance(a, list) else a.split(".", 1))),
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::Join": _join,
    "Fn::If": _if,
    "Fn::FindInMap": lambda r, a: r.t["Mappings"][r.value(a[0])][r.value(a[1])][r.value(a[2])],
    "Fn::Select": lambda r, a: r.value(a[1])[int(r.value(a[0]))],
    "Fn::Split": lambda r, a: str(r.value(a[1])).split(a[0]),
    "Fn::Equals": lambda r, a: str(r.value(a[0])) == str(r.value(a[1])),
    "Fn::Not": lambda r, a: not r.value(a[0]),
    "Fn::And": lambda r, a: all(r.value(x) for x in a),
    "Fn::Or": lambda r, a: any(r.value(x) for x in a),
    "Condition": lambda r, a: r.condition(a),
    "Fn::Base64": lambda r, a: r.value(a),
}


def resolve(
    template: dict[str, Any],
    stack_name: str = "dataflywheel",
    params: dict[str, Any] | None = None,
    *,
    region: str = DEFAULT_REGION,
    account: str = DEFAULT_ACCOUNT,
) -> dict[str, Any]:
    """Return a copy of ``template`` with parameters, conditions and intrinsics resolved.

    Resources whose Condition is false are dropped. ``Globals`` are resolved too.
    ``resolved["Refs"]`` maps each logical id to the value ``Ref`` gave it, so
    ``function_environment`` can swap predicted names for provisioned ones.
    """
    r = _Resolver(copy.deepcopy(template), stack_name, params or {}, region, account)
    resources = {}
    for logical_id, res in r.t.get("Resources", {}).items():
        if "Condition" in res and not r.condition(res["Condition"]):
            continue
        item = dict(res)
        item["Properties"] = r.value(res.get("Properties") or {})
        resources[logical_id] = item
    outputs = {}
    for name, out in (r.t.get("Outputs") or {}).items():
        if "Condition" in out and not r.condition(out["Condition"]):
            continue
        outputs[name] = {**out, "Value": r.value(out["Value"])}
    return {
        "StackName": stack_name,
        "Region": region,
        "AccountId": account,
        "Parameters": r.params,
        "Conditions": {name: r.condition(name) for name in r.t.get("Conditions") or {}},
        "Globals": r.value(r.t.get("Globals") or {}),
        "Resources": resources,
        "Outputs": outputs,
        "Refs": {lid: r.ref(lid) for lid in resources},
    }


# ----------------------------------------------------------------------- provisioning


def _of_type(resolved: dict, rtype: str) -> list[tuple[str, dict]]:
    return [(lid, res) for lid, res in resolved["Resources"].items() if res["Type"] == rtype]


def _queue_attributes(props: dict) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for key in (
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "MaximumMessageSize",
        "ReceiveMessageWaitTimeSeconds",
        "SqsManagedSseEnabled",
        "FifoQueue",
        "ContentBasedDeduplication",
    ):
        if key in props:
            value = props[key]
            attrs[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if "RedrivePolicy" in props:
        policy = props["RedrivePolicy"]
        attrs["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": policy["deadLetterTargetArn"],
                "maxReceiveCount": int(policy["maxReceiveCount"]),
            }
        )
    return attrs


def _notification(props: dict) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for cfn_key, boto_key, target in (
        ("QueueConfigurations", "QueueConfigurations", ("Queue", "QueueArn")),
        ("TopicConfigurations", "TopicConfigurations", ("Topic", "TopicArn")),
        ("LambdaConfigurations", "LambdaFunctionConfigurations", ("Function", "LambdaFunctionArn")),
    ):
        for entry in props.get(cfn_key) or []:
            item: dict[str, Any] = {target[1]: entry[target[0]], "Events": [entry["Event"]]}
            rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules")
            if rules:
                item["Filter"] = {
                    "Key": {
                        "FilterRules": [
                            {"Name": rule["Name"], "Value": rule["Value"]} for rule in rules
                        ]
                    }
                }
            config.setdefault(boto_key, []).append(item)
    return config


def provision(
    resolved: dict[str, Any], session: Any, *, bucket_policies: bool = False
) -> dict[str, str]:
    """Create the template's buckets, tables, queues and topics; return Ref values by logical id.

    ``session`` is a ``boto3.Session`` (or anything with ``.client(name)``), already
    pointed at moto. Creating twice is safe for queues and topics, not for buckets.
    Bucket policies are skipped by default: the template's TLS-only policy denies
    every request moto sees (it evaluates ``aws:SecureTransport`` as false).
    """
    physical: dict[str, str] = {}
    refs = resolved["Refs"]
    region = resolved["Region"]

    sqs = session.client("sqs", region_name=region)
    queues = _of_type(resolved, "AWS::SQS::Queue")
    # DLQs first: a redrive policy needs its target to exist.
    queues.sort(key=lambda q: "RedrivePolicy" in q[1]["Properties"])
    for lid, res in queues:
        name = refs[lid].rsplit("/", 1)[1]
        url = sqs.create_queue(QueueName=name, Attributes=_queue_attributes(res["Properties"]))
        physical[lid] = url["QueueUrl"]

    sns = session.client("sns", region_name=region)
    for lid, _res in _of_type(resolved, "AWS::SNS::Topic"):
        physical[lid] = sns.create_topic(Name=refs[lid].rsplit(":", 1)[1])["TopicArn"]

    ddb = session.client("dynamodb", region_name=region)
    for lid, res in _of_type(resolved, "AWS::DynamoDB::Table"):
        props = res["Properties"]
        kwargs: dict[str, Any] = {
            "TableName": refs[lid],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("ProvisionedThroughput"):
            kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        if (props.get("SSESpecification") or {}).get("SSEEnabled"):
            kwargs["SSESpecification"] = {"Enabled": True}
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=refs[lid],
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        physical[lid] = refs[lid]

    _provision_user_pools(resolved, session, physical)
    provision_state_machines(resolved, session, physical)

    s3 = session.client("s3", region_name=region)
    buckets = _of_type(resolved, "AWS::S3::Bucket")
    for lid, res in buckets:
        props, name = res["Properties"], refs[lid]
        kwargs = {"Bucket": name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        if "BucketEncryption" in props:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": rule[
                                "ServerSideEncryptionByDefault"
                            ]
                        }
                        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    ]
                },
            )
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(
                Bucket=name,
                VersioningConfiguration={"Status": props["VersioningConfiguration"]["Status"]},
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        physical[lid] = name
    for _lid, res in _of_type(resolved, "AWS::S3::BucketPolicy") if bucket_policies else []:
        s3.put_bucket_policy(
            Bucket=res["Properties"]["Bucket"],
            Policy=json.dumps(res["Properties"]["PolicyDocument"]),
        )
    # Notifications last: their queues must exist.
    for lid, res in buckets:
        props = res["Properties"]
        if "NotificationConfiguration" in props:
            s3.put_bucket_notification_configuration(
                Bucket=refs[lid],
                NotificationConfiguration=_notification(props["NotificationConfiguration"]),
            )
    _provision_alarms(resolved, session, physical)
    return physical


_ALARM_KEYS = (
    "AlarmDescription",
    "Namespace",
    "MetricName",
    "Dimensions",
    "Statistic",
    "ExtendedStatistic",
    "Period",
    "EvaluationPeriods",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "AlarmActions",
    "OKActions",
    "DatapointsToAlarm",
)


def _provision_alarms(resolved: dict[str, Any], session: Any, physical: dict) -> None:
    """The template's CloudWatch alarms (PutMetricAlarm overwrites: safe to repeat)."""
    alarms = _of_type(resolved, "AWS::CloudWatch::Alarm")
    if not alarms:
        return
    cw = session.client("cloudwatch", region_name=resolved["Region"])
    for lid, res in alarms:
        props = res["Properties"]
        kwargs = {k: props[k] for k in _ALARM_KEYS if k in props}
        for k in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if k in kwargs:
                kwargs[k] = int(kwargs[k])
        if "Threshold" in kwargs:
            kwargs["Threshold"] = float(kwargs["Threshold"])
        name = resolved["Refs"][lid]
        cw.put_metric_alarm(AlarmName=name, **kwargs)
        physical[lid] = name


_USER_POOL_KEYS = ("Policies", "AdminCreateUserConfig", "UsernameConfiguration", "MfaConfiguration")
_CLIENT_KEYS = (
    "GenerateSecret",
    "ExplicitAuthFlows",
    "PreventUserExistenceErrors",
    "AccessTokenValidity",
    "IdTokenValidity",
    "RefreshTokenValidity",
    "TokenValidityUnits",
)


def state_machine_definition(resolved: dict[str, Any], logical_id: str) -> str:
    """An AWS::Serverless::StateMachine's ASL with its DefinitionSubstitutions applied
    (``${Name}`` -> value, as SAM does), from ``Definition`` or the ``DefinitionUri`` file."""
    props = resolved["Resources"][logical_id]["Properties"]
    if "Definition" in props:
        text = json.dumps(props["Definition"])
    else:
        root = Path(resolved.get("TemplateRoot") or Path(__file__).resolve().parents[1])
        text = (root / props["DefinitionUri"]).read_text(encoding="utf-8")
    for name, value in (props.get("DefinitionSubstitutions") or {}).items():
        text = text.replace("${" + name + "}", str(value))
    json.loads(text)  # what CloudFormation would refuse: not JSON after the substitutions
    return text


def provision_state_machines(resolved: dict[str, Any], session: Any, physical: dict) -> None:
    """Create (or update, when it exists) each state machine from its definition."""
    machines = _of_type(resolved, "AWS::Serverless::StateMachine")
    if not machines:
        return
    sfn = session.client("stepfunctions", region_name=resolved["Region"])
    for lid, _res in machines:
        arn = resolved["Refs"][lid]
        name = arn.rsplit(":", 1)[1]
        definition = state_machine_definition(resolved, lid)
        role = f"arn:aws:iam::{resolved['AccountId']}:role/{name}-Role"
        existing = {
            m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]
        }
        if name in existing:
            sfn.update_state_machine(stateMachineArn=existing[name], definition=definition)
            physical[lid] = existing[name]
        else:
            physical[lid] = sfn.create_state_machine(
                name=name, definition=definition, roleArn=role, type="STANDARD"
            )["stateMachineArn"]


def _provision_user_pools(resolved: dict[str, Any], session: Any, physical: dict) -> None:
    """Cognito user pools and their app clients (ids are the service's, not predictable)."""
    pools = _of_type(resolved, "AWS::Cognito::UserPool")
    if not pools:
        return
    idp = session.client("cognito-idp", region_name=resolved["Region"])
    refs = resolved["Refs"]
    for lid, res in pools:
        props = res["Properties"]
        kwargs = {k: props[k] for k in _USER_POOL_KEYS if k in props}
        name = props.get("UserPoolName", refs[lid])
        physical[lid] = idp.create_user_pool(PoolName=name, **kwargs)["UserPool"]["Id"]
    pool_ids = {str(refs[lid]): physical[lid] for lid, _ in pools}
    for lid, res in _of_type(resolved, "AWS::Cognito::UserPoolClient"):
        props = res["Properties"]
        kwargs = {k: props[k] for k in _CLIENT_KEYS if k in props}
        pool_id = pool_ids[str(props["UserPoolId"])]
        name = props.get("ClientName", refs[lid])
        created = idp.create_user_pool_client(UserPoolId=pool_id, ClientName=name, **kwargs)
        physical[lid] = created["UserPoolClient"]["ClientId"]


def function_environment(
    resolved: dict[str, Any], logical_id: str, physical: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment variables of a function: Globals merged with its own, as strings.

    Values equal to a resource's predicted Ref are replaced by ``physical[logical_id]``
    (e.g. the queue URL moto server mode really returned).
    """
    physical = physical or {}
    replace = {str(ref): physical[lid] for lid, ref in resolved["Refs"].items() if lid in physical}
    glob = ((resolved.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    own = resolved["Resources"][logical_id]["Properties"].get("Environment") or {}
    env: dict[str, str] = {}
    for source in (glob.get("Variables") or {}, own.get("Variables") or {}):
        for key, value in source.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            env[key] = replace.get(text, text)
    return env
