"""Spot checks of auto-labels through the handlers under moto: autolabel draws the share,
answers (review API and labels files) count once, undo takes its answer back, a run of
wrong answers suspends the champion and raises the alarm exactly once, a new champion
resumes auto-labeling."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import autolabel
import human_labels
import pytest
from botocore.stub import Stubber
from flywheel.adapters import aws, items, ledger
from flywheel.domain.audit import is_spot_check_draw
from integration_kit import STACK, metrics_doc, outcomes, sqs_event, tap_notifications
from rollout_kit import fake_endpoints, finished_job, promote_and_wait, rollouts
from test_autolabel import CHAMPION, add_item, message, predictions, respond
from test_labels_and_review import labels_event
from test_review_api import call

VERSION = CHAMPION["model_version"]
ALARM = f"{STACK}-auto-label-accuracy"


@pytest.fixture
def env(stack):
    stack.ssm.put_parameter(Name=f"/{STACK}/champion", Value=json.dumps(CHAMPION), Type="String")
    tap_notifications(stack)
    stack.cw = stack.session.client("cloudwatch")
    return stack


def alarm(stack) -> dict:
    (found,) = stack.cw.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"]
    return found


def suspended_datapoints(stack) -> list[dict]:
    now = datetime.now(UTC)
    return stack.cw.get_metric_statistics(
        Namespace="DataFlywheel",
        MetricName="AutoLabelSuspended",
        Dimensions=[{"Name": "Stack", "Value": STACK}],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5),
        Period=3600,
        Statistics=["SampleCount", "Maximum", "Minimum"],
    )["Datapoints"]


def spot_check(stack, n: int, label: str = "cat", version: str = VERSION) -> str:
    """An item as autolabel leaves a spot-check draw: the model's answer kept, hidden."""
    return add_item(
        stack,
        n,
        state="needs_review",
        review_reason="spot_check",
        label=label,
        label_source="model",
        confidence=0.97,
        model_version=version,
    )


def tally(stack, version: str = VERSION) -> tuple[int, int]:
    record = ledger.tally(stack.table, version) or {}
    return int(record.get("answered") or 0), int(record.get("correct") or 0)


def answer(stack, context, item_id: str, label: str, reviewer: str = "alice") -> dict:
    stack.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    status, body = call(
        context,
        "POST",
        "/review/answers",
        reviewer=reviewer,
        body={"item_id": item_id, "label": label},
    )
    assert status == 200, body
    return body


def labels_file(stack, context, name: str, rows: str) -> None:
    stack.use("HumanLabelsFunction", CLASS_NAMES="cat,dog")
    event = labels_event(stack, f"labels/{name}.csv", "image_id_or_key,label\n" + rows)
    assert human_labels.handler(event, context) == {"batchItemFailures": []}


def test_autolabel_sends_its_share_of_confident_items_to_people_blind(env, context):
    # Given a champion (threshold 0.8), a spot-check share of 25 % and 16 new items
    env.use("AutoLabelFunction", INFERENCE_BATCH_SIZE="8", AUTO_LABEL_AUDIT_FRACTION="0.25")
    ids = [add_item(env, n) for n in range(1, 17)]
    drawn = {i for i in ids if is_spot_check_draw(i, VERSION, 0.25)}
    assert 0 < len(drawn) < len(ids)  # the draw is neither nothing nor everything here

    # When autolabel labels them all confidently
    with Stubber(aws.client("sagemaker-runtime")) as endpoint:
        for chunk in (range(1, 9), range(9, 17)):
            respond(
                endpoint,
                predictions(*[("cat", 0.97)] * 8),
                [b"png-%d" % n for n in chunk],
            )
        response = autolabel.handler(sqs_event([message(i) for i in ids]), context)
    assert response == {"batchItemFailures": []}

    # Then exactly the drawn items wait for people, with the model's answer kept...
    for item_id in ids:
        item = env.item(item_id)
        if item_id in drawn:
            assert (item["state"], item["review_reason"]) == ("needs_review", "spot_check")
            assert (item["label"], item["model_version"]) == ("cat", VERSION)
        else:
            assert item["state"] == "auto_labeled"
    # ...and the review app shows them blind, before uncertain items
    env.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    status, body = call(context, "GET", "/review/next", query={"count": "20"})
    assert status == 200
    shown = {i["item_id"]: i for i in body["items"]}
    assert set(shown) == drawn
    assert all(i["blind"] and i["suggestion"] is None for i in shown.values())
    assert {i["review_reason"] for i in shown.values()} == {"spot_check"}


def test_each_answer_counts_once_whatever_its_path_and_undo_takes_it_back(env, context):
    # Given two spot checks of the champion, both labeled "cat" by the model
    a, b = spot_check(env, 1), spot_check(env, 2)

    # When a reviewer confirms a (twice) and a labels file says the same about a
    answer(env, context, a, "cat")
    assert answer(env, context, a, "cat")["outcome"] == "unchanged"
    labels_file(env, context, "again", f"{a},cat\n")
    # Then it counted once, as right; the item is a selected label with the model's answer
    assert tally(env) == (1, 1)
    item = env.item(a)
    assert (item["label_sampling"], item["label_origin"]) == ("selected", "spot_check")
    assert item["spot_check"] == {
        "model_version": VERSION,
        "model_label": "cat",
        "confidence": pytest.approx(0.97),
        "correct": True,
    }

    # When a labels file says b is a dog (the model was wrong), then corrects it to cat
    labels_file(env, context, "b", f"{b},dog\n")
    assert tally(env) == (2, 1)
    labels_file(env, context, "b-fix", f"{b},cat\n")
    assert tally(env) == (2, 2)  # a correction moves `correct`, never `answered`

    # When a third one is answered wrongly in the app and the reviewer undoes it
    c = spot_check(env, 3)
    answer(env, context, c, "dog")
    assert tally(env) == (3, 2)
    status, body = call(context, "POST", "/review/undo")
    assert status == 200 and body["item"]["item_id"] == c

    # Then its observation is taken back and the item waits again, blind
    assert tally(env) == (2, 2)
    assert body["item"]["blind"] and body["item"]["review_reason"] == "spot_check"
    assert env.item(c)["state"] == "needs_review" and env.item(c)["label"] == "cat"
    # and nothing was suspended, nothing alarmed
    assert not (ledger.tally(env.table, VERSION) or {}).get("suspended_at")
    assert alarm(env)["StateValue"] != "ALARM" and outcomes(env) == []


def test_wrong_answers_suspend_the_champion_alarm_once_and_a_new_champion_resumes(
    env, context, monkeypatch
):
    # Given six spot checks the model labeled "cat" (target 0.95, confidence 0.95)
    checks = [spot_check(env, n) for n in range(1, 7)]

    # When people say the first is a cat and the second a dog: not enough evidence yet
    answer(env, context, checks[0], "cat")
    answer(env, context, checks[1], "dog")
    assert not (ledger.tally(env.table, VERSION) or {}).get("suspended_at")
    # ...and when the next answers are dogs too
    for item_id in checks[2:]:
        answer(env, context, item_id, "dog")

    # Then the champion was suspended once, with the figures, and the alarm raised once
    record = ledger.tally(env.table, VERSION)
    assert (record["answered"], record["correct"]) == (6, 1)
    assert record["suspended_reason"].startswith("audited accuracy")
    suspended_after = record["suspended_figures"]["answered"]
    assert 3 <= suspended_after <= 5  # a run of wrong answers, not the first one
    (note,) = outcomes(env)
    assert note["outcome"] == "suspended" and note["model_version"] == VERSION
    raised = alarm(env)
    assert raised["StateValue"] == "ALARM" and VERSION in raised["StateReason"]
    assert raised["AlarmActions"] == [env.physical["ThresholdAlarmTopic"]]
    (point,) = suspended_datapoints(env)
    assert (point["SampleCount"], point["Maximum"]) == (1.0, 1.0)

    # And autolabel stops auto-labeling with it: a confident item goes to people
    env.use("AutoLabelFunction", INFERENCE_BATCH_SIZE="8", AUTO_LABEL_AUDIT_FRACTION="0")
    new = add_item(env, 20)
    with Stubber(aws.client("sagemaker-runtime")) as endpoint:
        respond(endpoint, predictions(("cat", 0.99)), [b"png-20"])
        autolabel.handler(sqs_event([message(new)]), context)
    assert (env.item(new)["state"], env.item(new)["review_reason"]) == ("needs_review", "suspended")
    # the dashboard says why
    env.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    status, body = call(context, "GET", "/review/dashboard")
    assert body["audit"]["suspended"] is True and body["auto_labeling"]["active"] is False
    assert body["auto_labeling"]["why_not"] == (
        "suspended: audited accuracy 0.17 (95% CI 0.00-0.64, 1/6) below 0.95"
    )

    # When a retrained model is promoted (its rollout runs to its end)
    fake_endpoints(monkeypatch)
    job = "dfw-0123456789abcdef"
    finished_job(env, job, metrics_doc(job, 0.97, champion_accuracy=0.9, champion_version=VERSION))
    with rollouts(env):
        assert promote_and_wait(env, context, job=job)["status"] == "SUCCEEDED"

    # Then the alarm is over and the new champion auto-labels (the sweep re-queued the item)
    assert alarm(env)["StateValue"] == "OK"
    queued = env.drain("LabelQueue")
    assert new in {m["item_id"] for m in queued}
    env.use("AutoLabelFunction", INFERENCE_BATCH_SIZE="8", AUTO_LABEL_AUDIT_FRACTION="0")
    with Stubber(aws.client("sagemaker-runtime")) as endpoint:
        respond(endpoint, {**predictions(("cat", 0.99)), "model_version": job}, [b"png-20"])
        autolabel.handler(sqs_event([message(new)]), context)
    assert env.item(new)["state"] == "auto_labeled" and env.item(new)["model_version"] == job
    # a late answer to the old champion's spot check counts for it, and alarms nothing new
    answer(env, context, spot_check(env, 30), "dog")
    assert tally(env)[0] == 7 and alarm(env)["StateValue"] == "OK"
    assert [o["outcome"] for o in outcomes(env)] == ["promoted"]
    assert items.count_state(env.table, items.State.AUTO_LABELED) == 1
    # and the dashboard's round shows what it really auto-labeled
    env.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    _, body = call(context, "GET", "/review/dashboard")
    (round_,) = body["rounds"]
    assert (round_["model_version"], round_["labeled"], round_["coverage"]) == (job, 1, 1.0)
    assert body["audit"]["model_version"] == job and body["audit"]["answered"] == 0
