"""On `flywheel up`: wrong answers to spot checks, given in the review app's API, suspend
the champion; what a person sees is the alarm's state, the notification on the tap, the
dashboard and `flywheel status` (moto never evaluates alarms: the function sets the state).
"""

from __future__ import annotations

import json

import requests

from dataflywheel import cli
from dataflywheel.stack_client import StackClient
from samlocal.moto_server import client
from samlocal.stack import LocalStack

VERSION = "dfw-local0000000"
CHAMPION = {
    "model_version": VERSION,
    "training_job": VERSION,
    "model_name": VERSION,
    "endpoint_config": f"{VERSION}-abc",
    "model_data": f"s3://b/models/{VERSION}/output/model.tar.gz",
    "threshold": 0.8,
    "target_accuracy": 0.95,
    "test_accuracy": 0.96,
    "classes": ["cat", "dog"],
    "test_set_id": "t" * 64,
    "promoted_at": "2026-11-30T08:00:00.000000Z",
}


def seed_spot_checks(stack: LocalStack, count: int) -> list[str]:
    ddb = client("dynamodb", stack.moto.url)
    ids = []
    for n in range(1, count + 1):
        item_id = f"{n:064x}"
        ddb.put_item(
            TableName=stack.info["outputs"]["ItemsTableName"],
            Item={
                "item_id": {"S": item_id},
                "state": {"S": "needs_review"},
                "review_reason": {"S": "spot_check"},
                "label": {"S": "cat"},
                "label_source": {"S": "model"},
                "confidence": {"N": "0.97"},
                "model_version": {"S": VERSION},
                "image_key": {"S": f"images/{item_id}.png"},
                "created_at": {"S": "2026-11-30T08:00:00.000000Z"},
                "updated_at": {"S": f"2026-11-30T08:00:{n:02d}.000000Z"},
            },
        )
        ids.append(item_id)
    return ids


def test_wrong_spot_check_answers_suspend_the_champion_visibly(tmp_path, capsys):
    with LocalStack(tmp_path, sagemaker=False, schedules=False) as stack:
        # Given a champion, four spot checks of it and the reviewer's token
        client("ssm", stack.moto.url).put_parameter(
            Name=stack.info["outputs"]["ChampionParameterName"],
            Type="String",
            Value=json.dumps(CHAMPION),
        )
        checks = seed_spot_checks(stack, 4)
        reviewer = json.loads((tmp_path / "reviewer.json").read_text())
        token = client("cognito-idp", stack.moto.url).initiate_auth(
            ClientId=reviewer["client_id"],
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "reviewer", "PASSWORD": reviewer["password"]},
        )["AuthenticationResult"]["IdToken"]
        headers = {"Authorization": f"Bearer {token}"}
        api = stack.http_api.url

        # When the reviewer says every one of them is a dog
        for item_id in checks:
            got = requests.post(
                f"{api}/review/answers",
                json={"item_id": item_id, "label": "dog"},
                headers=headers,
                timeout=60,
            )
            assert got.status_code == 200, got.text

        # Then the alarm is in ALARM, one notification says so, the dashboard explains it
        c = StackClient(tmp_path)
        (alarm,) = c.client("cloudwatch").describe_alarms(
            AlarmNames=[f"{stack.stack_name}-auto-label-accuracy"]
        )["MetricAlarms"]
        assert alarm["StateValue"] == "ALARM" and VERSION in alarm["StateReason"]
        notes = [n for n in c.notifications() if n["message"]["outcome"] == "suspended"]
        assert [n["subject"] for n in notes] == [f"Auto-labeling suspended: {VERSION}"]
        board = requests.get(f"{api}/review/dashboard", headers=headers, timeout=60).json()
        assert board["audit"]["suspended"] and board["audit"]["answered"] == 4
        assert board["auto_labeling"]["why_not"].startswith("suspended: audited accuracy 0.00")
        # and `flywheel status` prints the same
        assert cli.main(["--data-dir", str(tmp_path), "status"]) == 0
        out = capsys.readouterr().out
        assert "autolabel  off: suspended: audited accuracy 0.00" in out
        assert "audit      0.000 (0/4, 95% CI 0.000-0.602)  target 0.95  SUSPENDED" in out

    # And a restart keeps the alarm's state (provisioning does not reset an existing alarm)
    with LocalStack(tmp_path, sagemaker=False, schedules=False) as again:
        (alarm,) = client("cloudwatch", again.moto.url).describe_alarms(
            AlarmNames=[f"{again.stack_name}-auto-label-accuracy"]
        )["MetricAlarms"]
        assert alarm["StateValue"] == "ALARM"
