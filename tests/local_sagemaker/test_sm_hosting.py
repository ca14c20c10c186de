"""Endpoints through boto3: serving inference.py, bad input, blue/green updates, rollback."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sm_support import BUCKET, FIXTURES, drain_queue, tar_gz, unique, wait_endpoint

from samlocal.sagemaker.service import default_model_server_workers

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"


def deploy_model(
    sm: Any,
    s3: Any,
    version: str,
    scale: float = 2.0,
    env: dict[str, str] | None = None,
    broken: bool = False,
) -> str:
    """Upload a model.tar.gz (model.json + code/inference.py) and register a Model for it."""
    name = unique(f"model-{version}")
    code = (FIXTURES / "source" / "serve.py").read_bytes()
    if broken:
        code += b"\ndef model_fn(model_dir):\n    raise RuntimeError('weights are corrupt')\n"
    key = f"artifacts/{name}/model.tar.gz"
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=tar_gz(
            {
                "model.json": json.dumps({"scale": scale, "version": version}).encode(),
                "code/inference.py": code,
            }
        ),
    )
    sm.create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": IMAGE,
            "ModelDataUrl": f"s3://{BUCKET}/{key}",
            "Environment": env or {},
        },
        ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerExecutionRole",
    )
    return name


def endpoint_config(sm: Any, model: str, serverless: bool = True) -> str:
    name = unique("cfg")
    variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": model}
    if serverless:
        variant["ServerlessConfig"] = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    else:
        variant.update(InitialInstanceCount=1, InstanceType="ml.m5.large", InitialVariantWeight=1.0)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
    return name


def invoke(runtime: Any, endpoint: str, x: float = 1.5) -> dict[str, Any]:
    resp = runtime.invoke_endpoint(
        EndpointName=endpoint,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps({"x": x}),
    )
    assert resp["ContentType"] == "application/json"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    return json.loads(resp["Body"].read())


@pytest.fixture(scope="module")
def endpoint(sm: Any, s3: Any, bucket: str) -> str:
    name = unique("ep")
    sm.create_endpoint(
        EndpointName=name, EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "v1"))
    )
    assert wait_endpoint(sm, name)["EndpointStatus"] == "InService"
    return name


def test_endpoint_serves_the_models_inference_code(sm: Any, runtime: Any, endpoint: str) -> None:
    assert invoke(runtime, endpoint, 1.5) == {"y": 3.0, "version": "v1"}
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert desc["ProductionVariants"][0]["CurrentServerlessConfig"]["MaxConcurrency"] == 5
    assert endpoint in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]


def test_bad_input_is_a_4xx_model_error(runtime: Any, endpoint: str) -> None:
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(
            EndpointName=endpoint, ContentType="application/json", Body=b'{"nope": 1}'
        )
    resp = err.value.response
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["OriginalStatusCode"] == 400
    assert "missing field x" in resp["Error"]["Message"]
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424  # what the real runtime answers
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName=endpoint, ContentType="image/png", Body=b"\x89PNG")
    assert err.value.response["OriginalStatusCode"] == 400


def test_unknown_endpoint_is_a_validation_error(runtime: Any, sm: Any) -> None:
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="nope", ContentType="application/json", Body=b"{}")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as err:
        sm.describe_endpoint(EndpointName="nope")
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_update_endpoint_swaps_without_refusing_a_request(
    sm: Any, s3: Any, runtime: Any, bucket: str
) -> None:
    # Given an instance endpoint on v1 and a client calling it in a loop
    name = unique("ep-upd")
    old_cfg = endpoint_config(sm, deploy_model(sm, s3, "v1"), serverless=False)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=old_cfg)
    wait_endpoint(sm, name)
    seen: list[str] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                seen.append(invoke(runtime, name)["version"])
            except Exception as e:  # any refused request fails the test
                errors.append(e)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # When it is updated to v2 with a blue/green deployment config
        new_cfg = endpoint_config(sm, deploy_model(sm, s3, "v2"), serverless=False)
        sm.update_endpoint(
            EndpointName=name,
            EndpointConfigName=new_cfg,
            DeploymentConfig={
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "ALL_AT_ONCE",
                        "WaitIntervalInSeconds": 1,
                    }
                }
            },
        )
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
        desc = wait_endpoint(sm, name)
        after = len(seen)
        while len(seen) < after + 5 and not errors:
            pass
    finally:
        stop.set()
        for t in threads:
            t.join()

    # Then no request failed, traffic moved to v2, and the active config says so
    assert errors == []
    assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == new_cfg
    assert "FailureReason" not in desc
    assert seen[0] == "v1" and seen[-1] == "v2" and set(seen) == {"v1", "v2"}


def test_alarm_during_bake_rolls_back_to_the_old_config(
    sm: Any, s3: Any, runtime: Any, bucket: str, moto_url: str
) -> None:
    import boto3

    name = unique("ep-rb")
    old_cfg = endpoint_config(sm, deploy_model(sm, s3, "v1"), serverless=False)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=old_cfg)
    wait_endpoint(sm, name)
    cw = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")
    alarm = unique("errors")
    cw.put_metric_alarm(
        AlarmName=alarm,
        MetricName="Invocation5XXErrors",
        Namespace="AWS/SageMaker",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")

    sm.update_endpoint(
        EndpointName=name,
        EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "v2"), serverless=False),
        DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 60}
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": alarm}]},
        },
    )
    desc = wait_endpoint(sm, name)
    # a rolled-back update still says InService: only the active config tells
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] == old_cfg
    assert alarm in desc["FailureReason"]
    assert invoke(runtime, name)["version"] == "v1"


def test_unhealthy_new_model_rolls_back(sm: Any, s3: Any, runtime: Any, endpoint: str) -> None:
    old_cfg = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    sm.update_endpoint(
        EndpointName=endpoint,
        EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "bad", broken=True)),
    )
    desc = wait_endpoint(sm, endpoint)
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", old_cfg)
    assert "did not pass the ping health check" in desc["FailureReason"]
    assert invoke(runtime, endpoint)["version"] == "v1"


def test_broken_model_fails_endpoint_creation(sm: Any, s3: Any) -> None:
    name = unique("ep-broken")
    sm.create_endpoint(
        EndpointName=name,
        EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "bad", broken=True)),
    )
    desc = wait_endpoint(sm, name)
    assert desc["EndpointStatus"] == "Failed" and "weights are corrupt" in desc["FailureReason"]


def test_delete_endpoint_and_endpoint_events(
    sm: Any, s3: Any, bucket: str, moto_url: str, event_queue: str
) -> None:
    name = unique("ep-del")
    model = deploy_model(sm, s3, "v1")
    cfg = endpoint_config(sm, model)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=cfg)
    wait_endpoint(sm, name)
    sm.delete_endpoint(EndpointName=name)
    sm.delete_endpoint_config(EndpointConfigName=cfg)
    sm.delete_model(ModelName=model)
    with pytest.raises(ClientError):
        sm.describe_endpoint(EndpointName=name)

    def statuses(events: list[dict[str, Any]]) -> list[str]:
        return [
            e["detail"]["EndpointStatus"]
            for e in events
            if e["detail-type"] == "SageMaker Endpoint State Change"
            and e["detail"].get("EndpointName") == name
        ]

    events = drain_queue(moto_url, event_queue, lambda ev: "Deleting" in statuses(ev))
    assert statuses(events) == ["Creating", "InService", "Deleting"]


def test_a_crashed_model_server_is_replaced(sm: Any, s3: Any, runtime: Any, service: Any) -> None:
    name = unique("ep-crash")
    sm.create_endpoint(
        EndpointName=name, EndpointConfigName=endpoint_config(sm, deploy_model(sm, s3, "v1"))
    )
    wait_endpoint(sm, name)
    # fault injection: kill the worker processes behind the endpoint
    _, server = service.hosting.active[name].servers["AllTraffic"]
    for worker in server.workers:
        worker.proc.kill()
        worker.proc.wait()
    assert invoke(runtime, name)["version"] == "v1"


def _tcp_connections_to(port: int) -> list[str]:
    """States (hex, as in /proc/net/tcp) of this host's TCP connections to 127.0.0.1:port."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if int(remote.split(":")[1], 16) == port:
            out.append(state)
    return out


@pytest.mark.serial  # asserts request times
def test_requests_to_the_model_server_reuse_one_kept_alive_connection(
    sm: Any, s3: Any, runtime: Any, service: Any
) -> None:
    # Given an endpoint with one model server worker
    name = unique("ep-keepalive")
    model = deploy_model(sm, s3, "v1", env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    sm.create_endpoint(EndpointName=name, EndpointConfigName=endpoint_config(sm, model))
    wait_endpoint(sm, name)
    (worker,) = service.hosting.active[name].servers["AllTraffic"][1].workers
    # When fifteen requests go through it one after the other
    took = []
    for x in range(15):
        started = time.perf_counter()
        assert invoke(runtime, name, float(x))["y"] == 2.0 * x
        took.append(time.perf_counter() - started)
    # Then they all went over one TCP connection to the worker (established, "01"), not one
    # connection each (closed ones linger in TIME_WAIT, "06")
    assert _tcp_connections_to(worker.port) == ["01"]
    # And a kept-alive request does not wait for a delayed ACK (Nagle: ~40 ms each)
    assert sorted(took)[7] < 0.025, f"median {sorted(took)[7] * 1000:.0f} ms per request"


def test_the_front_keeps_http_1_1_connections_alive(service: Any, endpoint: str) -> None:
    # Given one HTTP connection to the local SageMaker (as boto3's pool keeps one)
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
    body = json.dumps({"x": 1.0})
    # When two InvokeEndpoint requests go over it
    for _ in range(2):
        conn.request(
            "POST",
            f"/endpoints/{endpoint}/invocations",
            body=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        resp = conn.getresponse()
        # Then both are answered and the server keeps the connection open
        assert resp.status == 200 and json.loads(resp.read())["y"] == 2.0
        assert resp.version == 11 and not resp.will_close
    conn.close()


@pytest.mark.serial  # asserts request times
def test_a_model_with_two_workers_serves_two_requests_at_once(
    sm: Any, s3: Any, runtime: Any
) -> None:
    # Given a model whose container asks for two model server workers (the toolkit's variable)
    name = unique("ep-workers")
    model = deploy_model(sm, s3, "v1", env={"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    sm.create_endpoint(EndpointName=name, EndpointConfigName=endpoint_config(sm, model))
    wait_endpoint(sm, name)

    def slow() -> dict[str, Any]:
        resp = runtime.invoke_endpoint(
            EndpointName=name,
            ContentType="application/json",
            Body=json.dumps({"x": 1.0, "sleep": 1.5}),
        )
        return json.loads(resp["Body"].read())

    # When two requests that each take 1.5 s arrive together
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: slow(), range(2)))
    elapsed = time.monotonic() - started
    # Then two worker processes answered them side by side, not one after the other
    assert {a["y"] for a in answers} == {2.0}
    assert len({a["pid"] for a in answers}) == 2
    assert elapsed < 2.9, f"two 1.5 s requests took {elapsed:.1f}s: served one at a time"


def test_a_bad_worker_count_fails_the_endpoint_with_the_reason(sm: Any, s3: Any) -> None:
    name = unique("ep-badworkers")
    model = deploy_model(sm, s3, "v1", env={"SAGEMAKER_MODEL_SERVER_WORKERS": "none"})
    sm.create_endpoint(EndpointName=name, EndpointConfigName=endpoint_config(sm, model))
    described = wait_endpoint(sm, name)
    assert described["EndpointStatus"] == "Failed"
    assert "SAGEMAKER_MODEL_SERVER_WORKERS must be a positive integer" in described["FailureReason"]


def test_the_default_worker_count_comes_from_the_environment_or_the_cores(monkeypatch) -> None:
    monkeypatch.setenv("FLYWHEEL_MODEL_SERVER_WORKERS", "3")
    assert default_model_server_workers() == 3
    monkeypatch.setenv("FLYWHEEL_MODEL_SERVER_WORKERS", "0")
    with pytest.raises(ValueError, match="positive integer"):
        default_model_server_workers()
    monkeypatch.delenv("FLYWHEEL_MODEL_SERVER_WORKERS")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert default_model_server_workers() == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert default_model_server_workers() == 1
