"""The template's Outputs carry every name the CLI reads through DescribeStacks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_output_the_stack_client_reads_exists(raw_template):
    source = (ROOT / "dataflywheel" / "stack_client.py").read_text()
    asked = set(re.findall(r'self\.output\("(\w+)"\)', source))
    assert {"UploadBucketName", "EndpointName", "ModelPackageGroupName"} <= asked
    assert asked <= set(raw_template["Outputs"])


def test_every_function_the_cli_invokes_or_schedules_has_a_name_output(raw_template):
    cli = (ROOT / "dataflywheel" / "cli.py").read_text()
    invoked = set(re.findall(r'\.invoke\(\s*"(\w+)"', cli))
    scheduled = {
        lid
        for lid, res in raw_template["Resources"].items()
        if any(
            e.get("Type") in ("Schedule", "ScheduleV2")
            for e in ((res.get("Properties") or {}).get("Events") or {}).values()
        )
    }
    assert invoked and scheduled
    for lid in invoked | scheduled:
        assert raw_template["Outputs"][f"{lid}Name"]["Value"] == {"Ref": lid}


def test_every_queue_has_a_url_output(raw_template):
    queues = [lid for lid, r in raw_template["Resources"].items() if r["Type"] == "AWS::SQS::Queue"]
    assert len(queues) >= 7
    for lid in queues:
        assert raw_template["Outputs"][f"{lid}Url"]["Value"] == {"Ref": lid}
