"""What the translated template (CloudFormation's view) promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flywheel.settings import FUNCTION_SETTINGS

ROOT = Path(__file__).resolve().parents[2]

# Actions that have no resource-level permissions: "*" is the narrowest AWS allows.
STAR_ONLY_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "ssm:DescribeParameters",
    "sagemaker:ListModels",
    "sagemaker:ListEndpointConfigs",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "servicequotas:ListServiceQuotas",
    "servicequotas:ListAWSDefaultServiceQuotas",
}


def functions(raw: dict) -> dict[str, dict]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}


def statements(translated: dict):
    for lid, res in translated["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        for policy in res["Properties"].get("Policies", []):
            statement = policy["PolicyDocument"]["Statement"]
            for s in statement if isinstance(statement, list) else [statement]:
                yield lid, s


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_every_contract_logical_id_exists(raw_template):
    expected = {
        "UploadBucket",
        "DataBucket",
        "ItemsTable",
        "IdempotencyTable",
        "IngestQueue",
        "IngestQueueDLQ",
        "LabelQueue",
        "LabelQueueDLQ",
        "LabelsFileQueue",
        "LabelsFileQueueDLQ",
        "IngestFunction",
        "AutoLabelFunction",
        "HumanLabelsFunction",
        "ReviewExportFunction",
        "StartTrainingFunction",
        "PromoteFunction",
        "RolloutFunction",
        "RolloutStateMachine",
        "TeardownFunction",
        "SharedLayer",
        "TrainingCodeLayer",
        "NotificationsTopic",
        "SageMakerExecutionRole",
    }
    assert expected <= set(raw_template["Resources"])


@pytest.mark.parametrize("logical_id", sorted(FUNCTION_SETTINGS))
def test_handler_imports(raw_template, logical_id):
    props = functions(raw_template)[logical_id]["Properties"]
    module, attr = props["Handler"].rsplit(".", 1)
    folder = ROOT / props["CodeUri"]
    code = f"import {module}; assert callable({module}.{attr})"
    env_path = f"{ROOT / 'functions' / 'shared'}:{folder}"
    subprocess.run(
        [sys.executable, "-c", code], check=True, env={"PYTHONPATH": env_path, "PATH": ""}, cwd=ROOT
    )


@pytest.mark.parametrize("logical_id", sorted(FUNCTION_SETTINGS))
def test_environment_matches_the_settings_model(translated, logical_id):
    env = translated["Resources"][logical_id]["Properties"]["Environment"]["Variables"]
    names = {k for k in env if not k.startswith("POWERTOOLS_")}
    assert names == set(FUNCTION_SETTINGS[logical_id].model_fields)


def test_every_function_has_a_dlq_or_on_failure_destination(raw_template, translated):
    resources = translated["Resources"]
    invoke_configs = {
        r["Properties"]["FunctionName"]["Ref"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventInvokeConfig"
    }
    # Steps of a state machine are invoked synchronously: its Retry/Catch handle their errors.
    state_machine_steps = {
        value["Fn::GetAtt"][0]
        for res in raw_template["Resources"].values()
        if res["Type"] == "AWS::Serverless::StateMachine"
        for value in res["Properties"].get("DefinitionSubstitutions", {}).values()
        if isinstance(value, dict) and "Fn::GetAtt" in value
    }
    for lid, fn in functions(raw_template).items():
        events = (fn["Properties"].get("Events") or {}).values()
        if events and all(e["Type"] == "HttpApi" for e in events):
            continue  # synchronous: the caller gets the error; there is nothing to redeliver
        if not events and lid in state_machine_steps:
            continue
        sqs_sources = [
            e for e in (fn["Properties"].get("Events") or {}).values() if e["Type"] == "SQS"
        ]
        if sqs_sources:
            for event in sqs_sources:
                queue = event["Properties"]["Queue"]["Fn::GetAtt"][0]
                assert "RedrivePolicy" in raw_template["Resources"][queue]["Properties"], (
                    lid,
                    queue,
                )
        else:
            on_failure = invoke_configs.get(lid, {}).get("DestinationConfig", {}).get("OnFailure")
            assert on_failure or resources[lid]["Properties"].get("DeadLetterConfig"), lid


def test_eventbridge_targets_have_dead_letter_queues_and_the_rules_filter_terminal_own_jobs(
    translated,
):
    rules = [
        r["Properties"]
        for r in translated["Resources"].values()
        if r["Type"] == "AWS::Events::Rule"
    ]
    patterns = [r["EventPattern"] for r in rules if "EventPattern" in r]
    assert len(patterns) == 2
    for rule in rules:
        for target in rule["Targets"]:
            assert "DeadLetterConfig" in target
    training = next(
        p for p in patterns if p["detail-type"] == ["SageMaker Training Job State Change"]
    )
    assert training["detail"]["TrainingJobStatus"] == ["Completed", "Failed", "Stopped"]
    assert training["detail"]["TuningJobArn"] == [{"exists": False}]
    assert "prefix" in training["detail"]["TrainingJobName"][0]


def test_every_http_api_route_needs_a_cognito_jwt(raw_template, translated):
    # No anonymous route: no event opts out, and every route of every HttpApi carries a
    # JWT authorizer whose issuer is the stack's user pool and audience its app client.
    routes = 0
    for lid, fn in functions(raw_template).items():
        for name, event in (fn["Properties"].get("Events") or {}).items():
            if event["Type"] == "HttpApi":
                auth = event["Properties"].get("Auth") or {}
                assert auth.get("Authorizer") != "NONE", (lid, name)
                assert "ApiId" in event["Properties"], (lid, name)  # never the implicit API
    for lid, res in translated["Resources"].items():
        if res["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        body = res["Properties"]["Body"]
        schemes = body["components"]["securitySchemes"]
        for path, methods in body["paths"].items():
            for method, operation in methods.items():
                routes += 1
                (requirement,) = operation["security"]
                (scheme,) = requirement
                authorizer = schemes[scheme]["x-amazon-apigateway-authorizer"]
                assert authorizer["type"] == "jwt", (lid, method, path)
                config = authorizer["jwtConfiguration"]
                assert config["issuer"] == {
                    "Fn::Sub": "https://cognito-idp.${AWS::Region}.amazonaws.com/${ReviewUserPool}"
                }
                assert config["audience"] == [{"Ref": "ReviewUserPoolClient"}]
    declared = sum(
        event["Type"] == "HttpApi"
        for fn in functions(raw_template).values()
        for event in (fn["Properties"].get("Events") or {}).values()
    )
    assert routes == declared >= 4  # every route the template declares was checked above
    client = raw_template["Resources"]["ReviewUserPoolClient"]["Properties"]
    assert client["GenerateSecret"] is False
    assert {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH"} <= set(client["ExplicitAuthFlows"])


def test_the_review_api_allows_only_the_data_buckets_origin(raw_template, translated):
    # The review page is opened from the data bucket (a presigned GET): the API's CORS
    # allows that origin alone, the Authorization header, GET and POST; preflights are
    # API Gateway's own (no OPTIONS route, so nothing anonymous reaches a function).
    (api,) = [r for r in translated["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    cors = api["Properties"]["Body"]["x-amazon-apigateway-cors"]
    raw = raw_template["Resources"]["ReviewApi"]["Properties"]["CorsConfiguration"]
    assert [o["Fn::Sub"] for o in raw["AllowOrigins"]] == [
        "https://${DataBucket}.s3.${AWS::Region}.${AWS::URLSuffix}",
        "https://${DataBucket}.s3.${AWS::URLSuffix}",
    ]
    assert len(cors["allowOrigins"]) == 2
    assert {h.lower() for h in cors["allowHeaders"]} == {"authorization", "content-type"}
    assert set(cors["allowMethods"]) == {"GET", "POST"}
    assert cors.get("allowCredentials") in (None, False)  # a bearer token, never cookies
    methods = {m for ops in api["Properties"]["Body"]["paths"].values() for m in ops}
    assert "options" not in methods


def test_the_review_api_role_reads_images_and_nothing_else_in_s3(translated):
    # Presigned image URLs carry the signing role's rights: a URL whose key was changed
    # fails its signature, and even a valid signature could reach images/* and no more.
    role = translated["Resources"]["ReviewApiFunctionRole"]
    s3 = [
        (action, resource)
        for policy in role["Properties"]["Policies"]
        for statement in as_list(policy["PolicyDocument"]["Statement"])
        for action in as_list(statement["Action"])
        if action.startswith("s3:")
        for resource in as_list(statement["Resource"])
    ]
    assert s3 == [("s3:GetObject", {"Fn::Sub": "${DataBucket.Arn}/images/*"})]


def test_every_labels_file_suffix_is_notified_and_a_report_never_is(raw_template):
    from flywheel.domain.labels import LABEL_FILE_SUFFIXES, result_key

    rules = [
        {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        for config in raw_template["Resources"]["DataBucket"]["Properties"][
            "NotificationConfiguration"
        ]["QueueConfigurations"]
        if config["Queue"] == {"Fn::GetAtt": ["LabelsFileQueue", "Arn"]}
    ]
    assert {r["prefix"] for r in rules} == {"labels/"}
    assert sorted(r["suffix"] for r in rules) == sorted(LABEL_FILE_SUFFIXES)
    # the function writes <file>.result.json next to each file: it must not trigger again
    for suffix in LABEL_FILE_SUFFIXES:
        assert not result_key(f"labels/x{suffix}").endswith(LABEL_FILE_SUFFIXES)


def test_sqs_functions_report_partial_batch_failures(translated):
    for res in translated["Resources"].values():
        if res["Type"] == "AWS::Lambda::EventSourceMapping":
            assert res["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_no_wildcard_resource_where_a_narrower_one_exists(translated):
    for lid, statement in statements(translated):
        if statement.get("Effect") != "Allow":
            continue
        if "*" in as_list(statement.get("Resource")):
            actions = set(as_list(statement["Action"]))
            assert actions <= STAR_ONLY_ACTIONS, (lid, statement)


# What each function does in the data bucket (docs/aws.md, "Permissions"): object rights
# on exactly these prefixes, never on the whole bucket.
DATA_BUCKET_ACCESS = {
    "IngestFunctionRole": {"write": {"images"}},
    "AutoLabelFunctionRole": {"read": {"images"}},
    "HumanLabelsFunctionRole": {"read": {"labels"}, "write": {"labels"}},
    "ReviewExportFunctionRole": {"read": {"images"}, "write": {"review"}},
    "StartTrainingFunctionRole": {
        "read": {"images", "datasets", "code"},
        "write": {"datasets", "code"},
    },
    "PromoteFunctionRole": {"read": {"models"}, "write": {"models"}},
    "ReviewApiFunctionRole": {"read": {"images"}},
    "SageMakerExecutionRole": {
        "read": {"datasets", "images", "code", "models", "checkpoints"},
        "write": {"models", "checkpoints"},
    },
}
PREFIX = re.compile(r"^\$\{DataBucket\.Arn\}/([a-z]+)/\*$")


def _data_bucket_object_rights(translated) -> dict[str, dict[str, set[str]]]:
    rights: dict[str, dict[str, set[str]]] = {}
    for lid, statement in statements(translated):
        actions = [a for a in as_list(statement.get("Action")) if a.startswith("s3:")]
        if statement.get("Effect") != "Allow" or not actions:
            continue
        for resource in as_list(statement.get("Resource")):
            text = json.dumps(resource)
            if "DataBucket" not in text or "Object" not in " ".join(actions):
                continue
            sub = resource.get("Fn::Sub") if isinstance(resource, dict) else None
            match = PREFIX.match(sub) if isinstance(sub, str) else None
            assert match, f"{lid} has object rights on the whole data bucket: {statement}"
            for action in actions:
                kind = "read" if action == "s3:GetObject" else "write"
                rights.setdefault(lid, {}).setdefault(kind, set()).add(match.group(1))
    return rights


def test_functions_touch_only_their_prefixes_of_the_data_bucket(translated):
    assert _data_bucket_object_rights(translated) == DATA_BUCKET_ACCESS


def test_no_sam_bucket_wide_s3_policy_on_the_data_bucket(raw_template):
    for lid, fn in functions(raw_template).items():
        for policy in fn["Properties"].get("Policies", []):
            if isinstance(policy, dict) and any(k.startswith("S3") for k in policy):
                ((name, arg),) = policy.items()
                assert arg["BucketName"] == {"Ref": "UploadBucket"}, (lid, name)


def test_the_sagemaker_role_pulls_only_the_pytorch_images_or_the_overrides(translated):
    pulls = [
        s
        for lid, s in statements(translated)
        if lid == "SageMakerExecutionRole" and "ecr:BatchGetImage" in as_list(s["Action"])
    ]
    assert len(pulls) == 1
    text = json.dumps(pulls[0]["Resource"])
    assert "repository/*" not in text and ":*:" not in text
    assert "repository/pytorch-training" in text and "repository/pytorch-inference" in text
    assert "TrainingImageUri" in text and "InferenceImageUri" in text


def test_pass_role_only_for_the_sagemaker_role(translated):
    for lid, statement in statements(translated):
        actions = as_list(statement.get("Action"))
        if any(a in ("iam:PassRole", "iam:*", "*") for a in actions):
            assert statement["Resource"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}, lid
            assert (
                statement["Condition"]["StringEquals"]["iam:PassedToService"]
                == "sagemaker.amazonaws.com"
            )


def test_buckets_are_encrypted_private_and_tls_only(raw_template):
    res = raw_template["Resources"]
    for bucket in ("UploadBucket", "DataBucket"):
        props = res[bucket]["Properties"]
        assert props["BucketEncryption"] and all(props["PublicAccessBlockConfiguration"].values())
        policy = next(
            r
            for r in res.values()
            if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
        )
        (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert (
            deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        )
    assert res["UploadBucket"]["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"


def test_pytorch_mapping_has_cpu_and_gpu_training_and_inference_images(raw_template):
    for region, images in raw_template["Mappings"]["PyTorchImages"].items():
        assert images["TrainingCpu"].endswith("/pytorch-training:2.6-cpu-py312"), region
        assert images["TrainingGpu"].endswith("/pytorch-training:2.6-gpu-py312"), region
        assert images["InferenceCpu"].endswith("/pytorch-inference:2.6-cpu-py312"), region
        assert images["InferenceGpu"].endswith("/pytorch-inference:2.6-gpu-py312"), region


# ---------------------------------------------------------------------------- cold start

HANDLERS = {
    "ingest": "ingest",
    "autolabel": "autolabel",
    "human_labels": "human_labels",
    "review_export": "review_export",
    "review_api": "review_api",
    "start_training": "start_training",
    "promote": "promote",
    "rollout": "rollout",
    "teardown": "teardown",
}
PROBE = """
import sys, time
t = time.process_time(); import {module}; took = time.process_time() - t
print(json.dumps({{"seconds": took, "cv2": "cv2" in sys.modules}}))
"""


def _import_once(folder: str, module: str) -> dict:
    code = "import json\n" + PROBE.format(module=module)
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        # As in Lambda (LAMBDA_TASK_ROOT makes the X-Ray SDK skip its sampling client);
        # tracing off because no X-Ray daemon listens here.
        env={
            "PYTHONPATH": f"{ROOT / 'functions' / 'shared'}:{ROOT / 'functions' / folder}",
            "PATH": "",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / folder),
            "AWS_LAMBDA_FUNCTION_NAME": folder,
            "POWERTOOLS_METRICS_NAMESPACE": "DataFlywheel",
        },
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.serial
@pytest.mark.parametrize("folder", sorted(HANDLERS))
def test_handler_module_imports_in_under_0_8_s_of_cpu_without_opencv(folder):
    # CPU seconds of the import (process_time), best of three: on a shared, loaded box wall
    # time measures the neighbours. On this project's 2-vCPU machine the best of three was
    # 0.31-0.48 s quiet and 0.50-0.62 s during a full test run (CPU time grows with a busy
    # sibling vCPU too), so 0.5 s failed by chance. 0.8 s still fails on what matters: cv2
    # adds 0.73 s, torch 3.8 s, Powertools' patch_all about 0.6 s.
    runs = [_import_once(folder, HANDLERS[folder]) for _ in range(3)]
    assert min(r["seconds"] for r in runs) < 0.8, runs
    assert not any(r["cv2"] for r in runs)  # even ingest imports cv2 only when it decodes


def test_only_ingest_ships_and_imports_opencv():
    for path in (ROOT / "functions").rglob("*.py"):
        text = path.read_text()
        if "import cv2" in text:
            assert path.parent.name == "ingest", path
    for requirements in (ROOT / "functions").rglob("requirements.txt"):
        mentions = "opencv" in requirements.read_text()
        assert mentions == (requirements.parent.name == "ingest"), requirements
    assert (
        "opencv-python-headless==4.12.0.88"
        in (ROOT / "functions/ingest/requirements.txt").read_text()
    )


def test_domain_and_handlers_respect_the_layering():
    imports = re.compile(r"^\s*(?:import|from)\s+(boto3|botocore|aws_lambda_powertools)\b", re.M)
    domain = ROOT / "functions" / "shared" / "flywheel" / "domain"
    for path in domain.glob("*.py"):
        assert not imports.search(path.read_text()), path
    boto = re.compile(r"^\s*(?:import|from)\s+boto3\b", re.M)
    for path in (ROOT / "functions").rglob("*.py"):
        if "adapters" not in path.parts:
            assert not boto.search(path.read_text()), path
