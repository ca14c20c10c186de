"""autolabel: LabelQueue -> champion endpoint (JSON batch) -> auto_labeled / needs_review.

moto cannot serve InvokeEndpoint bodies, so the sagemaker-runtime client gets a botocore
Stubber; everything else (SSM, S3, DynamoDB) is moto.
"""

from __future__ import annotations

import base64
import io
import json

import autolabel
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from flywheel.adapters import aws, items, ledger
from integration_kit import STACK, sqs_event

CHAMPION = {
    "model_version": "dfw-aaaa",
    "training_job": "dfw-aaaa",
    "model_name": "dfw-aaaa",
    "endpoint_config": "dfw-aaaa-123456",
    "model_data": "s3://b/models/dfw-aaaa/output/model.tar.gz",
    "threshold": 0.8,
    "target_accuracy": 0.95,
    "test_accuracy": 0.96,
    "classes": ["cat", "dog"],
    "test_set_id": "t" * 64,
    "promoted_at": "2026-11-29T10:00:00.000000Z",
}


def add_item(stack, n: int, state: str = "unlabeled", **extra) -> str:
    item_id = f"{n:064x}"
    stack.s3.put_object(Bucket=stack.data_bucket, Key=f"images/{item_id}.png", Body=b"png-%d" % n)
    items.put_new(
        stack.table,
        {
            "item_id": item_id,
            "state": state,
            "source_key": f"k{n}.jpg",
            "image_key": f"images/{item_id}.png",
            **extra,
        },
    )
    return item_id


def message(item_id: str) -> dict:
    return {"item_id": item_id, "image_key": f"images/{item_id}.png"}


def predictions(*pairs: tuple[str, float]) -> dict:
    return {
        "model_version": "dfw-aaaa",
        "predictions": [
            {
                "label": label,
                "confidence": conf,
                "auto_label": conf >= 0.8,
                "threshold": 0.8,
                "top_k": [{"label": label, "confidence": conf}],
            }
            for label, conf in pairs
        ],
    }


@pytest.fixture
def env(stack):
    stack.use("AutoLabelFunction", INFERENCE_BATCH_SIZE="8")
    return stack


@pytest.fixture
def endpoint(env):
    stubber = Stubber(aws.client("sagemaker-runtime"))
    with stubber:
        yield stubber


def respond(stubber: Stubber, body: dict, expected_images: list[bytes]) -> None:
    raw = json.dumps(body).encode()
    stubber.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"},
        {
            "EndpointName": f"{STACK}-classifier",
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps(
                {"images": [base64.b64encode(i).decode() for i in expected_images]}
            ).encode(),
        },
    )


def test_without_a_champion_items_stay_unlabeled(env, context):
    # Given no champion record in SSM
    item_id = add_item(env, 1)
    # When autolabel receives the item
    response = autolabel.handler(sqs_event([message(item_id)]), context)
    # Then the message is consumed and the item untouched
    assert response == {"batchItemFailures": []}
    assert env.item(item_id)["state"] == "unlabeled"


def test_confident_items_are_labeled_and_uncertain_ones_go_to_review(env, endpoint, context):
    # Given a champion with threshold 0.8, two unlabeled items and a human-labeled one
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    sure, unsure = add_item(env, 1), add_item(env, 2)
    human = add_item(env, 3, state="human_labeled", label="dog", label_source="human")
    respond(endpoint, predictions(("cat", 0.97), ("dog", 0.55)), [b"png-1", b"png-2"])

    # When the batch is processed (one endpoint call for both images)
    response = autolabel.handler(
        sqs_event([message(sure), message(unsure), message(human)]), context
    )

    # Then
    assert response == {"batchItemFailures": []}
    endpoint.assert_no_pending_responses()
    labeled = env.item(sure)
    assert (labeled["state"], labeled["label"], labeled["label_source"]) == (
        "auto_labeled",
        "cat",
        "model",
    )
    assert labeled["model_version"] == "dfw-aaaa" and labeled["confidence"] == pytest.approx(0.97)
    assert env.item(unsure)["state"] == "needs_review"
    assert env.item(human)["label"] == "dog" and env.item(human)["state"] == "human_labeled"


def test_throttled_endpoint_fails_the_messages_so_they_retry(env, endpoint, context, caplog):
    # Given a champion and an endpoint that throttles
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    first, second = add_item(env, 1), add_item(env, 2)
    endpoint.add_client_error(
        "invoke_endpoint", service_error_code="ThrottlingException", http_status_code=400
    )

    # When the batch is processed
    response = autolabel.handler(sqs_event([message(first), message(second)]), context)

    # Then both messages are reported as failures (SQS redelivers) and nothing changed
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "msg-0"}, {"itemIdentifier": "msg-1"}]
    }
    assert env.item(first)["state"] == env.item(second)["state"] == "unlabeled"
    # and each failed message left an ERROR line with its reason before the retry
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.message_id for r in errors] == ["msg-0", "msg-1"]
    assert all("ThrottlingException" in r.reason for r in errors)


def test_redelivered_message_for_an_item_this_champion_labeled_is_a_no_op(env, endpoint, context):
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    item_id = add_item(env, 1)
    respond(endpoint, predictions(("cat", 0.9)), [b"png-1"])
    autolabel.handler(sqs_event([message(item_id)]), context)
    before = env.item(item_id)
    # the second delivery makes no endpoint call (the stubber has no response queued)
    assert autolabel.handler(sqs_event([message(item_id)]), context) == {"batchItemFailures": []}
    assert env.item(item_id) == before


def test_one_item_in_two_messages_of_a_batch_is_labeled_and_counted_once(env, endpoint, context):
    # Given a relabel sweep sent twice (its step ran again after a restart of the stack),
    # so one batch holds two messages for the same item
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    item_id = add_item(env, 1)
    respond(endpoint, predictions(("cat", 0.9), ("cat", 0.9)), [b"png-1", b"png-1"])

    # When the batch is handled
    out = autolabel.handler(sqs_event([message(item_id), message(item_id)]), context)

    # Then both messages are done, the item is labeled once and counted once
    assert out == {"batchItemFailures": []}
    assert env.item(item_id)["model_version"] == "dfw-aaaa"
    assert ledger.tally(env.table, "dfw-aaaa")["decided"] == 1


def test_audit_items_are_never_auto_labeled(env, endpoint, context):
    # Given a champion and an audit item that still sits on the label queue
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    audit = add_item(env, 1, state="needs_review", review_reason="audit")

    # When autolabel receives it (no endpoint response is stubbed: it must not be called)
    response = autolabel.handler(sqs_event([message(audit)]), context)

    # Then it stays blind, waiting for a person
    assert response == {"batchItemFailures": []}
    item = env.item(audit)
    assert (item["state"], item["review_reason"]) == ("needs_review", "audit")
    assert "label" not in item and "confidence" not in item
    # And the table itself refuses a model label for it (a racing sweep, an older worker)
    from flywheel.domain.items import State

    assert not items.set_model_label(env.table, audit, State.AUTO_LABELED, "cat", 0.99, "dfw-x")
    assert "label" not in env.item(audit)


def test_ood_and_uncertain_items_record_why_with_margin_and_top_k(env, endpoint, context):
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    odd, unsure = add_item(env, 1), add_item(env, 2)
    body = predictions(("cat", 0.99), ("dog", 0.55))
    body["predictions"][0].update(ood=True, auto_label=False)
    body["predictions"][1]["top_k"] = [
        {"label": "dog", "confidence": 0.55},
        {"label": "cat", "confidence": 0.45},
    ]
    respond(endpoint, body, [b"png-1", b"png-2"])

    autolabel.handler(sqs_event([message(odd), message(unsure)]), context)

    a, b = env.item(odd), env.item(unsure)
    assert (a["state"], a["review_reason"], a["ood"]) == (
        "needs_review",
        "out_of_distribution",
        True,
    )
    assert (b["state"], b["review_reason"], b["ood"]) == ("needs_review", "uncertain", False)
    assert b["margin"] == pytest.approx(0.10)
    assert b["top_k"] == [
        {"label": "dog", "confidence": pytest.approx(0.55)},
        {"label": "cat", "confidence": pytest.approx(0.45)},
    ]


def test_the_endpoint_gets_batches_as_large_as_it_accepts(stack, context):
    # Given the template's autolabel settings and 70 unlabeled items
    import inference
    from flywheel.settings import AutoLabelSettings

    env = stack.use("AutoLabelFunction")
    assert AutoLabelSettings.from_env(env).INFERENCE_BATCH_SIZE == inference.MAX_BATCH
    stack.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    ids = [add_item(stack, n) for n in range(70)]
    stubber = Stubber(aws.client("sagemaker-runtime"))
    # Then the endpoint is called twice: 64 images, then 6
    respond(stubber, predictions(*[("cat", 0.9)] * 64), [b"png-%d" % n for n in range(64)])
    respond(stubber, predictions(*[("cat", 0.9)] * 6), [b"png-%d" % n for n in range(64, 70)])

    # When one Lambda batch carries all of them
    with stubber:
        response = autolabel.handler(sqs_event([message(i) for i in ids]), context)

    assert response == {"batchItemFailures": []}
    stubber.assert_no_pending_responses()
    assert {stack.item(i)["state"] for i in ids} == {"auto_labeled"}


def test_a_batch_size_above_what_the_endpoint_accepts_is_refused(stack):
    from flywheel.settings import AutoLabelSettings
    from pydantic import ValidationError

    env = stack.use("AutoLabelFunction", INFERENCE_BATCH_SIZE="65")
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        AutoLabelSettings.from_env(env)


def test_a_message_whose_item_cannot_be_read_fails_alone(env, endpoint, context):
    # Given a champion, one readable item and a message whose image is gone
    env.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    good, gone = add_item(env, 1), add_item(env, 2)
    env.s3.delete_object(Bucket=env.data_bucket, Key=f"images/{gone}.png")
    respond(endpoint, predictions(("cat", 0.97)), [b"png-1"])
    # When both arrive in one batch, with a garbled third message
    event = sqs_event([message(good), message(gone), {"item_id": ""}])
    response = autolabel.handler(event, context)
    # Then only the unreadable ones are retried and the good one is labeled
    assert response == {
        "batchItemFailures": [{"itemIdentifier": "msg-1"}, {"itemIdentifier": "msg-2"}]
    }
    assert env.item(good)["state"] == "auto_labeled"
