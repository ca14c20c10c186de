"""Fixtures: moto in server mode (S3, SQS, EventBridge, CloudWatch) and the local
SageMaker, both on free ports; boto3 clients pointed at them, as a user's script would.

moto runs in a process of its own (samlocal's MotoProcess), as in `flywheel up`: an
in-process moto server would share moto's global backends with the `mock_aws` tests that
the same pytest-xdist worker runs, and their reset would empty it mid-session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sm_support import BUCKET, FIXTURES, EventLog, client, start_service, tar_gz

from samlocal.moto_server import MotoProcess
from samlocal.sagemaker import LocalSageMaker


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MotoProcess(tmp_path_factory.mktemp("moto"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def callback_events() -> EventLog:
    return EventLog()


@pytest.fixture(scope="session")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    moto_url: str,
    callback_events: EventLog,
    event_queue: str,
) -> Iterator[LocalSageMaker]:
    sm = start_service(tmp_path_factory.mktemp("sagemaker"), moto_url, callback_events)
    yield sm
    sm.stop()


@pytest.fixture(scope="session")
def sm(service: LocalSageMaker) -> Any:
    return client("sagemaker", service.url)


@pytest.fixture(scope="session")
def runtime(service: LocalSageMaker) -> Any:
    return client("sagemaker-runtime", service.url)


@pytest.fixture(scope="session")
def s3(moto_url: str) -> Any:
    return client("s3", moto_url)


@pytest.fixture(scope="session")
def event_queue(moto_url: str) -> str:
    """An SQS queue that receives every aws.sagemaker event through an EventBridge rule."""
    sqs, events = client("sqs", moto_url), client("events", moto_url)
    url = sqs.create_queue(QueueName="sagemaker-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="sagemaker-events", EventPattern=json.dumps({"source": ["aws.sagemaker"]}))
    events.put_targets(Rule="sagemaker-events", Targets=[{"Id": "q", "Arn": arn}])
    return url


@pytest.fixture(scope="session", autouse=True)
def bucket(s3: Any) -> str:
    """The test bucket with a packaged source dir and a tiny train channel; there for every
    test of this tier, also those that only name ``BUCKET`` (run alone or in any order)."""
    s3.create_bucket(Bucket=BUCKET)
    src = FIXTURES / "source"
    s3.put_object(
        Bucket=BUCKET,
        Key="code/sourcedir.tar.gz",
        Body=tar_gz({p.name: p.read_bytes() for p in src.iterdir() if p.suffix == ".py"}),
    )
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"data/train/class{i % 2}/img{i}.txt", Body=b"x")
    return BUCKET
