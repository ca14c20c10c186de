"""The event router delivers template events as Lambda would."""

from __future__ import annotations

import json
import time

import pytest
from local_probes import probe_spec, received  # noqa: I001

from samlocal.moto_server import client
from samlocal.router import failed_ids, next_fire


def wait_for(predicate, timeout=20.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def make_queue(sqs, name, dlq_arn=None, max_receive=2):
    attrs = {"VisibilityTimeout": "30"}
    if dlq_arn:
        attrs["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive}
        )
    url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def test_sqs_batches_respect_batch_size_and_lambda_event_shape(make_router, sqs, tmp_path):
    # Given a queue with 7 messages and a function mapped with BatchSize 3
    url, arn = make_queue(sqs, "in")
    for i in range(7):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
    spec = probe_spec(
        "Batch",
        "probe.batch",
        tmp_path,
        {
            "Q": {
                "Type": "SQS",
                "Properties": {
                    "Queue": arn,
                    "BatchSize": 3,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                },
            }
        },
    )
    # When the router runs
    make_router([spec])
    # Then every message arrives once, in batches of at most 3, in the SQS event shape
    calls = wait_for(
        lambda: (c := received(tmp_path, "batch"))
        and sum(len(x["event"]["Records"]) for x in c) >= 7
        and c
    )
    assert all(len(c["event"]["Records"]) <= 3 for c in calls)
    record = calls[0]["event"]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert {"messageId", "receiptHandle", "body", "attributes", "md5OfBody"} <= set(record)
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert sorted(json.loads(r["body"])["n"] for c in calls for r in c["event"]["Records"]) == list(
        range(7)
    )
    assert calls[0]["function"] == "test-Batch" and calls[0]["remaining_ms"] > 0
    wait_for(
        lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
            "ApproximateNumberOfMessagesNotVisible"
        ]
        == "0"
    )
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_partial_batch_failure_retries_only_failed_then_dlq(make_router, sqs, tmp_path):
    # Given a queue with a DLQ after 2 receives, holding one good and one poisoned message
    dlq_url, dlq_arn = make_queue(sqs, "in-dlq")
    url, arn = make_queue(sqs, "in", dlq_arn=dlq_arn, max_receive=2)
    sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "1", "MessageBody": "good"}, {"Id": "2", "MessageBody": "please fail"}],
    )
    spec = probe_spec(
        "Batch",
        "probe.batch",
        tmp_path,
        {
            "Q": {
                "Type": "SQS",
                "Properties": {
                    "Queue": arn,
                    "BatchSize": 10,
                    "MaximumBatchingWindowInSeconds": 1,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"],
                },
            }
        },
    )
    make_router([spec], retry_delay_s=1)
    # Then the poisoned message ends in the DLQ and the good one is processed once
    dead = wait_for(lambda: sqs.receive_message(QueueUrl=dlq_url).get("Messages"), timeout=30)
    assert [m["Body"] for m in dead] == ["please fail"]
    bodies = [r["body"] for c in received(tmp_path, "batch") for r in c["event"]["Records"]]
    assert bodies.count("good") == 1
    assert bodies.count("please fail") == 2  # maxReceiveCount deliveries, then redrive


def test_failed_invocation_retries_whole_batch(make_router, sqs, tmp_path):
    dlq_url, dlq_arn = make_queue(sqs, "b-dlq")
    url, arn = make_queue(sqs, "b", dlq_arn=dlq_arn, max_receive=3)
    sqs.send_message(QueueUrl=url, MessageBody="x")
    spec = probe_spec(
        "Boom",
        "probe.boom",
        tmp_path,
        {"Q": {"Type": "SQS", "Properties": {"Queue": arn, "BatchSize": 1}}},
    )
    make_router([spec], retry_delay_s=1)
    wait_for(lambda: sqs.receive_message(QueueUrl=dlq_url).get("Messages"), timeout=30)
    assert len(received(tmp_path, "boom")) == 3


def test_failed_ids_follows_lambda_rules():
    ids = ["a", "b", "c"]
    assert failed_ids(None, ids) == []
    assert failed_ids({"batchItemFailures": []}, ids) == []
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == ["b"]
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, ids) == ids
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == ids


def test_eventbridge_rule_delivers_matching_events_only(make_router, moto, tmp_path):
    pattern = {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Training Job State Change"],
        "detail": {
            "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
            "TrainingJobName": [{"prefix": "dfw-"}],
        },
    }
    spec = probe_spec(
        "Promote",
        "probe.echo",
        tmp_path,
        {"Done": {"Type": "EventBridgeRule", "Properties": {"Pattern": pattern}}},
    )
    make_router([spec])
    events = client("events", moto.url)

    def put(name, status):
        return {
            "Source": "aws.sagemaker",
            "DetailType": "SageMaker Training Job State Change",
            "Detail": json.dumps({"TrainingJobName": name, "TrainingJobStatus": status}),
        }

    events.put_events(
        Entries=[
            put("dfw-abc", "Completed"),
            put("other-abc", "Completed"),
            put("dfw-def", "InProgress"),
        ]
    )
    calls = wait_for(lambda: received(tmp_path, "echo"))
    time.sleep(2)
    calls = received(tmp_path, "echo")
    assert [c["event"]["detail"]["TrainingJobName"] for c in calls] == ["dfw-abc"]
    assert calls[0]["event"]["detail-type"] == "SageMaker Training Job State Change"


def test_async_failures_retry_then_reach_the_on_failure_destination(
    make_router, moto, sqs, tmp_path
):
    # Given a function with one retry and an SQS OnFailure destination, behind a rule
    dlq_url, dlq_arn = make_queue(sqs, "async-failures")
    spec = probe_spec(
        "Boom",
        "probe.boom",
        tmp_path,
        {
            "Done": {
                "Type": "EventBridgeRule",
                "Properties": {"Pattern": {"source": ["test.source"]}},
            }
        },
    )
    spec.async_max_attempts, spec.on_failure = 2, dlq_arn
    make_router([spec], retry_delay_s=1)
    # When a matching event fails every attempt
    client("events", moto.url).put_events(
        Entries=[{"Source": "test.source", "DetailType": "x", "Detail": json.dumps({"n": 1})}]
    )
    # Then it ran twice and the destination holds Lambda's failure record
    msgs = wait_for(lambda: sqs.receive_message(QueueUrl=dlq_url).get("Messages"), timeout=30)
    record = json.loads(msgs[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["detail"] == {"n": 1}
    assert record["responsePayload"]["errorMessage"] == "boom"
    assert len(received(tmp_path, "boom")) == 2


def test_schedule_fire_now_and_direct_invoke(make_router, tmp_path):
    spec = probe_spec(
        "Start",
        "probe.echo",
        tmp_path,
        {"Nightly": {"Type": "Schedule", "Properties": {"Schedule": "rate(1 day)"}}},
    )
    router = make_router([spec])
    result = router.fire("Start")
    assert result["echo"]["detail-type"] == "Scheduled Event"
    assert result["echo"]["source"] == "aws.events"
    assert router.pool.get("test-Start").invoke({"reason": "manual"})["echo"] == {
        "reason": "manual"
    }
    with pytest.raises(KeyError):
        router.fire("Nope")


def test_function_timeout_kills_and_recovers(make_router, tmp_path):
    from samlocal.functions import InvocationError

    spec = probe_spec("Slow", "probe.slow", tmp_path, timeout_s=1)
    router = make_router([spec])
    with pytest.raises(InvocationError, match="timed out"):
        router.pool.get("Slow").invoke({"sleep": 5})
    assert router.pool.get("Slow").invoke({"sleep": 0}) == {"slept": True}


def test_next_fire_rate_and_cron():
    import datetime as dt

    t = dt.datetime(2026, 1, 1, 10, 7, 30, tzinfo=dt.UTC)
    assert next_fire("rate(5 minutes)", t) == t + dt.timedelta(minutes=5)
    assert next_fire("cron(0 * * * ? *)", t) == dt.datetime(2026, 1, 1, 11, 0, tzinfo=dt.UTC)
    assert next_fire("cron(*/15 * * * ? *)", t) == dt.datetime(2026, 1, 1, 10, 15, tzinfo=dt.UTC)


def test_stopping_does_not_wait_for_a_running_function(make_router, sqs, tmp_path):
    # Given a function busy with a batch it would take 10 minutes over
    url, arn = make_queue(sqs, "stuck")
    sqs.send_message(QueueUrl=url, MessageBody="long job")
    spec = probe_spec(
        "Stuck",
        "probe.stuck",
        tmp_path,
        {"Q": {"Type": "SQS", "Properties": {"Queue": arn, "BatchSize": 1}}},
        timeout_s=900,
    )
    router = make_router([spec])
    wait_for(lambda: received(tmp_path, "stuck"), timeout=60)

    # When the stack stops (what LocalStack.stop does on Ctrl-C)
    started = time.monotonic()
    router.stopping()
    router.pool.stop()
    router.stop()

    # Then it is done within seconds, and the message is left on its queue (in flight,
    # not deleted, not retried): the next start makes it visible and delivers it again
    assert time.monotonic() - started < 10
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert len(received(tmp_path, "stuck")) == 1
