"""moto's state survives a restart on the same data directory."""

from __future__ import annotations

import time

from samlocal.moto_server import MotoServer, client


def test_restart_keeps_objects_items_parameters_and_inflight_messages(tmp_path):
    # Given a server with an object, an item, a parameter, and a message in flight
    server = MotoServer(tmp_path)
    server.start()
    s3, ddb, ssm, sqs = (client(s, server.url) for s in ("s3", "dynamodb", "ssm", "sqs"))
    s3.create_bucket(Bucket="uploads")
    s3.put_object(Bucket="uploads", Key="labeled/3/a b.png", Body=b"\x89PNG" * 1000)
    ddb.create_table(
        TableName="items",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "item_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "item_id", "AttributeType": "S"}],
    )
    ddb.put_item(TableName="items", Item={"item_id": {"S": "abc"}, "confidence": {"N": "0.97"}})
    ssm.put_parameter(Name="/stack/champion", Value='{"model_version": "dfw-1"}', Type="String")
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="in flight")
    sqs.send_message(QueueUrl=url, MessageBody="waiting")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "in flight"

    # When it stops and a new server starts on the same directory
    server.stop()
    server = MotoServer(tmp_path)
    server.start()
    s3, ddb, ssm, sqs = (client(s, server.url) for s in ("s3", "dynamodb", "ssm", "sqs"))

    # Then nothing is lost
    assert (
        s3.get_object(Bucket="uploads", Key="labeled/3/a b.png")["Body"].read() == b"\x89PNG" * 1000
    )
    assert ddb.get_item(TableName="items", Key={"item_id": {"S": "abc"}})["Item"]["confidence"] == {
        "N": "0.97"
    }
    assert (
        ssm.get_parameter(Name="/stack/champion")["Parameter"]["Value"]
        == '{"model_version": "dfw-1"}'
    )
    url = sqs.get_queue_url(QueueName="q")["QueueUrl"]
    time.sleep(2.1)
    bodies = []
    for _ in range(3):
        for m in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", []):
            bodies.append((m["Body"], m["Attributes"]["ApproximateReceiveCount"]))
    assert sorted(bodies) == [("in flight", "2"), ("waiting", "1")]
    server.stop()
