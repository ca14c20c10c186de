"""The gate rejects the first model, people fix the labels, the loop goes on (its own stack).

A user trial found the loop stalled after the gate rejected the first model: `review export`
found nothing to review and `flywheel train` answered "started" while nothing ran.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys

import pytest
from e2e_support import E2E_PARAMETERS, REPO, RunningStack, job_status, wait_for  # noqa: I001

from dataflywheel import cli
from dataflywheel.demo import digits

pytestmark = pytest.mark.e2e

DATA = digits(0.2, seed=5)
SEED = [d for n, d in enumerate(DATA) if n % 3 == 0]  # ~120 labeled uploads
POOL = [d for n, d in enumerate(DATA) if n % 3 != 0][:150]
TRUTH = {d["item_id"]: d["label"] for d in DATA}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # A floor the first model cannot clear: its seed labels are wrong (shuffled by a careless
    # labeler); no audit draws, so every unlabeled upload waits for the model or for people.
    parameters = {**E2E_PARAMETERS, "MinTestAccuracy": "0.7", "AuditFraction": "0"}
    running = RunningStack(tmp_path_factory.mktemp("gate") / "data", parameters)
    running.data_dir.mkdir(parents=True)
    running.start()
    yield running
    running.stop()


def run_job(c) -> str:
    result = c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": False})
    assert result["started"] and result["new_job"], result
    job = result["job_name"]
    assert job_status(c, job) == "Completed"
    return job


def outcome(c, job: str) -> str:
    """Promote's SNS notification about a job, as text."""
    notes = wait_for(
        lambda: [n for n in c.notifications(wait_s=1) if job in json.dumps(n)], 300, "promote"
    )
    return json.dumps(notes)


def labels_file(c, key: str, rows: list[tuple[str, str]]) -> dict:
    body = "".join(f"{item_id},{label}\n" for item_id, label in rows)
    c.client("s3").put_object(Bucket=c.data_bucket, Key=key, Body=body.encode())
    return wait_for(
        lambda: (
            json.loads(
                c.client("s3").get_object(Bucket=c.data_bucket, Key=f"{key}.result.json")["Body"]
                .read()
            )
            if f"{key}.result.json"
            in {o["Key"] for o in c.client("s3").list_objects_v2(
                Bucket=c.data_bucket, Prefix="labels/").get("Contents", [])}
            else None
        ),
        120,
        f"the result of {key}",
    )  # fmt: skip


def test_a_rejected_first_model_is_followed_by_a_promoted_retrain(stack, capsys):
    c = stack.client
    s3 = c.client("s3")
    # Given a random seed labeled carelessly (labels shuffled) and unlabeled uploads
    wrong = [str(d) for d in range(10)]
    rng = random.Random(0)
    for d in SEED:
        label = rng.choice([x for x in wrong if x != d["label"]])
        s3.put_object(Bucket=c.upload_bucket, Key=f"labeled/{label}/s{d['index']}.png",
                      Body=d["png"], Metadata={"flywheel-sampling": "random"})  # fmt: skip
    for d in POOL:
        s3.put_object(Bucket=c.upload_bucket, Key=f"new/{d['index']}.png", Body=d["png"])
    wait_for(lambda: sum(c.counts().values()) >= len(SEED) + len(POOL), 240, "ingest")

    # When the first model trains (`flywheel train --wait`), Then the gate rejects it
    code = cli.main(
        ["train", "--no-tuning", "--wait", "--timeout", "900", "--data-dir", str(stack.data_dir)]
    )
    out = capsys.readouterr().out
    first = json.loads(out.splitlines()[0])["job_name"]
    assert code == 2, out  # rejected
    assert f"rejected: {first}  test_accuracy=" in out and "below the floor" in out, out
    note = outcome(c, first)
    assert "rejected" in note and "below the floor" in note, note
    assert c.champion() is None
    # And training again on the same labels says so instead of pretending to start
    again = c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": False})
    assert again["started"] is False and "already ran" in again["reason"]

    # When people open the review batch, Then it offers unlabeled uploads (no champion yet)
    export = c.invoke("ReviewExportFunction", {"limit": 60})
    assert export["items"] == 60
    rows = list(csv.DictReader(io.StringIO(
        s3.get_object(Bucket=c.data_bucket, Key=f"review/{export['batch_id']}.csv")["Body"]
        .read().decode())))  # fmt: skip
    assert {r["review_reason"] for r in rows} == {"cold_start"}
    # And they answer it and correct the seed
    answered = labels_file(
        c, "labels/review.csv", [(r["image_id_or_key"], TRUTH[r["image_id_or_key"]]) for r in rows]
    )
    corrected = labels_file(c, "labels/fix.csv", [(d["item_id"], d["label"]) for d in SEED])
    assert answered["applied"] == 60 and corrected["applied"] == len(SEED)

    # Then a retrain on the new labels is a new job, clears the gate and becomes champion
    second = run_job(c)
    assert second != first
    champion = wait_for(
        lambda: (ch := c.champion()) and ch["training_job"] == second and ch, 300, "promotion"
    )
    assert float(champion["test_accuracy"]) >= 0.7
    # And `flywheel status` explains the certificate in words
    status = subprocess.run(
        [sys.executable, "-m", "dataflywheel.cli", "--data-dir", str(stack.data_dir), "status"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "certified  auto-labels" in status.stdout
