"""review_api (HttpApi v2 behind the Cognito authorizer): what reviewers see and what they write.

Events are the payload-v2 shape API Gateway sends after the JWT authorizer accepted the
token (tests/events/http_api_review_next.json); the caller is its cognito:username claim.
"""

from __future__ import annotations

import copy
import json
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import review_api
from flywheel.adapters import items
from flywheel.domain.items import State, now_iso
from flywheel.services.start_training import start_training
from flywheel.settings import StartTrainingSettings
from integration_kit import load_event
from test_labels_and_review import CHAMPION

AUDIT_ID = "a" * 64


def request(
    method: str,
    path: str,
    *,
    reviewer: str | None = "alice",
    query: dict | None = None,
    body: object = None,
    raw_body: str | None = None,
) -> dict:
    event = copy.deepcopy(load_event("http_api_review_next.json"))
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["queryStringParameters"] = query
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    if reviewer is None:
        del event["requestContext"]["authorizer"]
    else:
        event["requestContext"]["authorizer"]["jwt"]["claims"]["cognito:username"] = reviewer
    if body is not None or raw_body is not None:
        event["body"] = raw_body if raw_body is not None else json.dumps(body)
        event["headers"]["content-type"] = "application/json"
    return event


def call(context, method: str, path: str, **kwargs) -> tuple[int, dict]:
    response = review_api.handler(request(method, path, **kwargs), context)
    return response["statusCode"], json.loads(response["body"] or "null")


def seed(stack, item_id: str, *, reason: str, label: str | None = None, margin=0.5) -> str:
    item = {
        "item_id": item_id,
        "state": "needs_review",
        "image_key": f"images/{item_id}.png",
        "source_key": f"uploads/{item_id[:6]}.jpg",
        "review_reason": reason,
    }
    if label:
        item.update(
            label=label,
            label_source="model",
            confidence=0.6,
            margin=margin,
            model_version="dfw-1",
            top_k=[{"label": label, "confidence": 0.6}, {"label": "cat", "confidence": 0.3}],
        )
    items.put_new(stack.table, item)
    stack.s3.put_object(Bucket=stack.data_bucket, Key=f"images/{item_id}.png", Body=b"png")
    return item_id


@pytest.fixture
def env(stack):
    stack.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    stack.ssm.put_parameter(
        Name="/dataflywheel/champion",
        Type="String",
        Value=CHAMPION,
    )
    seed(stack, AUDIT_ID, reason="audit")
    for n, margin in ((1, 0.30), (2, 0.05), (3, 0.20)):
        seed(stack, f"{n:064x}", reason="uncertain", label="dog", margin=margin)
    return stack


def ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_two_reviewers_never_get_the_same_item_audit_first_and_blind(env, context):
    # When alice asks for two items and bob for everything
    status, alice = call(context, "GET", "/review/next", query={"count": "2"})
    _, bob = call(context, "GET", "/review/next", reviewer="bob", query={"count": "10"})

    # Then alice gets the audit item (blind) and the most uncertain one, bob the rest
    assert status == 200
    assert ids(alice) == [AUDIT_ID, f"{2:064x}"]
    audit, uncertain = alice["items"]
    assert (audit["review_reason"], audit["blind"], audit["suggestion"]) == ("audit", True, None)
    assert uncertain["blind"] is False
    assert [t["label"] for t in uncertain["suggestion"]["top_k"]] == ["dog", "cat"]
    assert set(ids(bob)) == {f"{3:064x}", f"{1:064x}"}
    assert not set(ids(alice)) & set(ids(bob))
    # and asking again (a reload, a prefetch) gives alice the same items, renewed
    _, again = call(context, "GET", "/review/next", query={"count": "2"})
    assert ids(again) == ids(alice)
    assert env.item(AUDIT_ID)["lease_owner"] == "alice"


def test_an_expired_lease_goes_to_the_next_reviewer(env, context):
    # Given alice leased the audit item and its lease ran out
    call(context, "GET", "/review/next", query={"count": "1"})
    env.ddb.update_item(
        TableName=env.table,
        Key={"item_id": {"S": AUDIT_ID}},
        UpdateExpression="SET lease_expires = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )

    # When bob asks for an item
    _, bob = call(context, "GET", "/review/next", reviewer="bob", query={"count": "1"})

    # Then he gets it, and alice's late answer is refused
    assert ids(bob) == [AUDIT_ID]
    status, body = call(
        context, "POST", "/review/answers", body={"item_id": AUDIT_ID, "label": "cat"}
    )
    assert (status, body["error"]) == (409, "leased_by_other")


def test_image_urls_are_short_lived_presigned_gets_of_images_only(env, context):
    _, got = call(context, "GET", "/review/next", query={"count": "4"})

    for entry in got["items"]:
        url = urlparse(entry["image_url"])
        assert url.path.endswith(f"/images/{entry['item_id']}.png")
        assert env.data_bucket in entry["image_url"]
        query = parse_qs(url.query)
        if "X-Amz-Expires" in query:
            assert query["X-Amz-Expires"] == ["300"]
        else:
            assert abs(int(query["Expires"][0]) - time.time() - 300) < 30
    assert requests.get(got["items"][0]["image_url"], timeout=10).content == b"png"


def test_answers_go_through_the_labels_write_path_with_provenance_and_count_for_retraining(
    env, context
):
    # Given a training started before the answers
    items.put_training_meta(env.table, {"started_at": now_iso()})
    call(context, "GET", "/review/next", query={"count": "2"})

    # When alice labels the audit item and the most uncertain item
    first = call(context, "POST", "/review/answers", body={"item_id": AUDIT_ID, "label": "cat"})
    second = call(context, "POST", "/review/answers", body={"item_id": f"{2:064x}", "label": "cat"})

    # Then both are human labels with who answered and how they were drawn
    assert first == (200, {"outcome": "applied", "item_id": AUDIT_ID, "action": "label"})
    assert second[0] == 200
    audit, reviewed = env.item(AUDIT_ID), env.item(f"{2:064x}")
    assert (audit["state"], audit["label"], audit["label_source"]) == (
        "human_labeled",
        "cat",
        "human",
    )
    assert (audit["label_sampling"], audit["label_origin"]) == ("random", "audit")
    assert (reviewed["label_sampling"], reviewed["label_origin"]) == ("selected", "review")
    assert audit["answered_by"] == "alice" and audit["answered_at"]
    assert "model_suggestion" not in audit  # the audit item never had a model label
    assert reviewed["model_suggestion"] == {
        "label": "dog",
        "confidence": 0.6,
        "model_version": "dfw-1",
    }
    assert "lease_owner" not in audit and "top_k" not in reviewed
    # and the retrain counter (start_training's own count) sees both
    env.use("StartTrainingFunction", MIN_NEW_HUMAN_LABELS="50")
    result = start_training(StartTrainingSettings.from_env(), "schedule", None)
    assert (result.started, result.new_human_labels) == (False, 2)
    env.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    _, stats = call(context, "GET", "/review/stats")
    assert stats["retrain"] == {"new_human_labels": 2, "needed": 50}
    assert (stats["done"], stats["labeled"], stats["left"]) == (2, 2, 2)
    assert stats["items_by_state"]["human_labeled"] == 2
    assert stats["labels_per_minute"] > 0
    assert stats["classes"] == ["cat", "dog"]  # ClassNames: the app's buttons
    env.use("ReviewApiFunction", CLASS_NAMES="")
    assert call(context, "GET", "/review/stats")[1]["classes"] == ["cat", "dog"]  # champion's


def test_the_same_answer_twice_is_unchanged(env, context):
    call(context, "GET", "/review/next", query={"count": "1"})
    body = {"item_id": AUDIT_ID, "label": "dog"}
    assert call(context, "POST", "/review/answers", body=body)[1]["outcome"] == "applied"
    assert call(context, "POST", "/review/answers", body=body) == (
        200,
        {"outcome": "unchanged", "item_id": AUDIT_ID, "action": "label"},
    )
    reject = {"item_id": f"{2:064x}", "action": "reject"}
    assert call(context, "POST", "/review/answers", body=reject)[1]["outcome"] == "applied"
    assert call(context, "POST", "/review/answers", body=reject)[1]["outcome"] == "unchanged"
    assert call(context, "GET", "/review/stats")[1]["done"] == 2


def test_someone_elses_lease_is_409_and_leaves_the_item_alone(env, context):
    call(context, "GET", "/review/next", query={"count": "1"})

    for body in (
        {"item_id": AUDIT_ID, "label": "dog"},
        {"item_id": AUDIT_ID, "action": "skip"},
        {"item_id": AUDIT_ID, "action": "reject"},
    ):
        status, answer = call(context, "POST", "/review/answers", reviewer="bob", body=body)
        assert (status, answer["error"]) == (409, "leased_by_other")
    item = env.item(AUDIT_ID)
    assert (item["state"], item["lease_owner"]) == ("needs_review", "alice")


def test_skip_gives_the_item_back_to_others_and_reject_marks_it(env, context):
    call(context, "GET", "/review/next", query={"count": "2"})

    skipped = call(context, "POST", "/review/answers", body={"item_id": AUDIT_ID, "action": "skip"})
    rejected = call(
        context, "POST", "/review/answers", body={"item_id": f"{2:064x}", "action": "reject"}
    )

    assert skipped[1]["outcome"] == rejected[1]["outcome"] == "applied"
    assert "lease_owner" not in env.item(AUDIT_ID)
    item = env.item(f"{2:064x}")
    assert (item["state"], item["reason"], item["answered_by"]) == (
        "rejected",
        "rejected by reviewer",
        "alice",
    )
    # alice is not offered what she skipped; bob gets it first
    assert AUDIT_ID not in ids(call(context, "GET", "/review/next", query={"count": "5"})[1])
    _, bob = call(context, "GET", "/review/next", reviewer="bob", query={"count": "1"})
    assert ids(bob) == [AUDIT_ID]


def test_undo_reverts_the_last_answer_unless_the_item_changed_since(env, context):
    # Given alice labeled an uncertain item
    uncertain = f"{2:064x}"
    before = env.item(uncertain)
    call(context, "GET", "/review/next", query={"count": "2"})
    call(context, "POST", "/review/answers", body={"item_id": uncertain, "label": "cat"})

    # When she undoes it
    status, undone = call(context, "POST", "/review/undo")

    # Then the item is as before (model label, top-k), leased to her again
    assert (status, undone["outcome"], undone["item"]["item_id"]) == (200, "undone", uncertain)
    assert undone["item"]["suggestion"]["label"] == "dog"
    after = env.item(uncertain)
    assert {k: v for k, v in after.items() if not k.startswith("lease_")} == before
    assert after["lease_owner"] == "alice"
    assert call(context, "GET", "/review/stats")[1]["done"] == 0
    assert call(context, "POST", "/review/undo")[0] == 404  # nothing left to undo

    # And an answer whose item changed since (a labels file) cannot be undone
    call(context, "POST", "/review/answers", body={"item_id": uncertain, "label": "cat"})
    items.set_human_label(env.table, uncertain, "dog")
    status, body = call(context, "POST", "/review/undo")
    assert (status, body["error"]) == (409, "changed_since")
    assert env.item(uncertain)["label"] == "dog"


@pytest.mark.parametrize(
    "item_id",
    [
        "../../etc/passwd",
        "images/" + "a" * 64 + ".png",
        "A" * 64,
        "a" * 63,
        "a" * 64 + "/../x",
        "a" * 64 + "\n",
        None,
        64,
    ],
)
def test_injected_item_ids_are_400(env, context, item_id):
    status, body = call(
        context, "POST", "/review/answers", body={"item_id": item_id, "label": "cat"}
    )
    assert (status, body["error"]) == (400, "bad_item_id")


@pytest.mark.parametrize(
    ("body", "raw", "code"),
    [
        ({"item_id": AUDIT_ID, "label": "../cat"}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "label": "zebra"}, None, "unknown_class"),
        ({"item_id": AUDIT_ID, "label": ["cat"]}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "label": "cat/../../labels/x.csv"}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "label": "s3://other-bucket/x"}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "label": "cat\x00"}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "label": "cat%2F..%2Fx"}, None, "invalid_label"),
        ({"item_id": AUDIT_ID, "action": "delete"}, None, "bad_action"),
        ({"item_id": AUDIT_ID, "action": "../skip"}, None, "bad_action"),
        ({"item_id": AUDIT_ID, "action": "skip\n"}, None, "bad_action"),
        ({"item_id": AUDIT_ID, "action": ["skip"]}, None, "bad_action"),
        ({"item_id": AUDIT_ID, "label": "cat", "action": "skip"}, None, "bad_body"),
        ({"item_id": AUDIT_ID, "label": "cat", "key": "labels/x.csv"}, None, "bad_body"),
        (None, "{not json", "bad_body"),
        (None, "[1, 2]", "bad_body"),
    ],
)
def test_bad_answers_are_400_and_change_nothing(env, context, body, raw, code):
    status, answer = call(context, "POST", "/review/answers", body=body, raw_body=raw)
    assert (status, answer["error"]) == (400, code)
    assert env.item(AUDIT_ID)["state"] == "needs_review"


@pytest.mark.parametrize("count", ["0", "-1", "51", "1;drop", "../2", "2.5", "1e3"])
def test_bad_counts_are_400(env, context, count):
    assert call(context, "GET", "/review/next", query={"count": count})[0] == 400


def test_unknown_items_are_404_and_a_missing_caller_401(env, context):
    assert (
        call(context, "POST", "/review/answers", body={"item_id": "b" * 64, "label": "cat"})[0]
        == 404
    )
    assert call(context, "GET", "/review/next", reviewer=None)[0] == 401


def test_a_crafted_item_id_in_the_table_never_becomes_an_image_url(env, context):
    # Given rows whose ids are not content hashes (written to the table by hand: the
    # ingest only ever writes sha256 ids) next to the real items
    crafted = [
        "../labels/answers.csv",
        "a" * 64 + "/../../labels/x",
        "images/" + "b" * 64,
        "%2e%2e%2fmodels%2fx",
    ]
    for item_id in crafted:
        items.put_new(
            env.table,
            {
                "item_id": item_id,
                "state": "needs_review",
                "image_key": "labels/answers.csv",
                "review_reason": "audit",
            },
        )
    assert len(list(items.query_state(env.table, State.NEEDS_REVIEW))) == 4 + len(crafted)

    # When a reviewer asks for everything
    status, got = call(context, "GET", "/review/next", query={"count": "50"})

    # Then only the real items come back, each URL for images/<its own id>.png
    assert status == 200
    assert set(ids(got)) == {AUDIT_ID} | {f"{n:064x}" for n in (1, 2, 3)}
    for entry in got["items"]:
        url = urlparse(entry["image_url"])
        bucket, _, key = f"{url.hostname.split('.')[0]}{url.path}".partition("/")
        if url.path.startswith(f"/{env.data_bucket}/"):  # path-style URL
            bucket, _, key = url.path[1:].partition("/")
        assert (bucket, key) == (env.data_bucket, f"images/{entry['item_id']}.png")
    # and none of the crafted rows was leased
    for item_id in crafted:
        raw = env.ddb.get_item(TableName=env.table, Key={"item_id": {"S": item_id}})["Item"]
        assert "lease_owner" not in raw
