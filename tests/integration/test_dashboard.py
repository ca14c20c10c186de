"""The dashboard (GET /review/dashboard, the same figures as `flywheel status`): what the
stack recorded, through the review API handler and the promote handler under moto."""

from __future__ import annotations

import json

import promote
import pytest
from flywheel.adapters import items, ledger
from flywheel.domain.audit import Observation
from integration_kit import metrics_doc
from rollout_kit import fake_endpoints, finished_job, promote_and_wait, rollouts
from test_promote import event_for, set_champion
from test_review_api import call

JOB = "dfw-0123456789abcdef"


@pytest.fixture
def endpoints(monkeypatch):
    return fake_endpoints(monkeypatch)


def dashboard(stack, context) -> dict:
    stack.use("ReviewApiFunction", CLASS_NAMES="cat,dog")
    status, body = call(context, "GET", "/review/dashboard")
    assert status == 200, body
    return body


def seed_items(stack, states: dict[str, int]) -> None:
    n = 0
    for state, count in states.items():
        for _ in range(count):
            n += 1
            items.put_new(
                stack.table,
                {"item_id": f"{n:064x}", "state": state, "image_key": f"images/{n:064x}.png"},
            )


def test_an_empty_stack_says_there_is_no_champion(stack, context):
    # Given items and no model yet
    seed_items(stack, {"unlabeled": 3, "human_labeled": 2})

    # When the dashboard is read
    body = dashboard(stack, context)

    # Then it counts items by state and explains why nothing is auto-labeled
    assert body["items_by_state"] == {
        "unlabeled": 3,
        "auto_labeled": 0,
        "needs_review": 0,
        "human_labeled": 2,
        "rejected": 0,
    }
    assert body["champion"] is None and body["audit"] is None
    assert body["auto_labeling"] == {"active": False, "why_not": "no champion yet"}
    assert body["rounds"] == [] and body["last_gate"] is None
    assert body["certificate_curve"] is None


def test_a_rejected_first_model_is_the_last_gate_decision(stack, endpoints, context):
    # Given a first model below the test-accuracy floor (0.8)
    stack.use("PromoteFunction")
    finished_job(stack, JOB, metrics_doc(JOB, 0.62))

    # When promote judges it
    assert promote.handler(event_for(JOB), context)["outcome"] == "rejected"

    # Then the dashboard shows the decision and why there is still no champion
    body = dashboard(stack, context)
    gate = body["last_gate"]
    assert gate["candidate"] == JOB and gate["decision"] == "rejected"
    assert gate["candidate_score"] == 0.62 and gate["champion_score"] is None
    assert gate["test_set_size"] == 40 and "below the floor" in gate["reason"]
    assert body["auto_labeling"]["why_not"].startswith(f"no champion yet: the last candidate {JOB}")


def test_a_champion_that_certified_nothing_says_how_many_labels_would(stack, endpoints, context):
    # Given a first model whose 18 random labels certified nothing at 0.95
    metrics = metrics_doc(JOB, 0.9)
    metrics["threshold"] = {
        "target_accuracy": 0.95,
        "threshold": 1.01,
        "coverage": 0.0,
        "lower_bound": 0.0,
        "reached": False,
        "confidence": 0.95,
        "n": 18,
        "n_selected": 0,
        "accuracy": 0.0,
        "data": "test",
        "min_all_correct": 217,
        "labels_needed": [{"coverage": 0.5, "labels": 310}, {"coverage": 0.9, "labels": None}],
    }
    metrics["data"] = {"train": 30, "validation": 6, "test": 4, "random": 18}
    finished_job(stack, JOB, metrics)

    # When it is promoted (the first model above the floor) and its rollout runs to its end
    with rollouts(stack):
        assert promote_and_wait(stack, context, job=JOB)["status"] == "SUCCEEDED"

    # Then the dashboard shows the champion, why it auto-labels nothing, and its round
    body = dashboard(stack, context)
    assert body["champion"]["model_version"] == JOB
    assert body["champion"]["threshold"] == 1.01 and body["champion"]["test_accuracy"] == 0.9
    why = body["auto_labeling"]["why_not"]
    assert body["auto_labeling"]["active"] is False
    assert why.startswith("18 random labels cannot certify accuracy >= 95%"), why
    assert "about 292 more random labels" in why, why
    # and the coverage-accuracy curve, each step with what certifying it needs
    assert body["certificate_curve"] == [
        {"coverage": 0.5, "observed_accuracy": None, "labels": 310, "more": 292,
         "status": "more_labels"},
        {"coverage": 0.9, "observed_accuracy": None, "labels": None, "more": None,
         "status": "better_model"},
    ]  # fmt: skip
    (round_,) = body["rounds"]
    assert round_["model_version"] == JOB and round_["human_labels"] == 40
    assert round_["certified_coverage"] == 0.0 and round_["audited_accuracy"] is None
    assert round_["coverage"] is None and round_["labeled"] == 0  # it labeled nothing yet
    assert body["last_gate"]["decision"] == "promoted"
    assert body["audit"]["answered"] == 0 and body["audit"]["target"] == 0.95


def test_a_certified_champion_auto_labels_and_shows_its_audit(stack, endpoints, context):
    # Given a champion with a threshold and 40 spot checks answered, 39 right
    stack.use("PromoteFunction", ENDPOINT_WAIT_SECONDS="0")
    set_champion(stack, "dfw-champion00000")
    ledger_entry = ledger.tally_entry(stack.table, Observation("dfw-champion00000", 40, 39, {}))
    stack.ddb.transact_write_items(TransactItems=[ledger_entry])

    # When the dashboard is read
    body = dashboard(stack, context)

    # Then auto-labeling is active and the audit shows the measured accuracy and its interval
    assert body["auto_labeling"] == {"active": True, "why_not": None}
    audit = body["audit"]
    assert (audit["answered"], audit["correct"], audit["accuracy"]) == (40, 39, 0.975)
    assert audit["ci_low"] == pytest.approx(0.8684, abs=1e-4)
    assert audit["ci_high"] == pytest.approx(0.9994, abs=1e-4)
    assert audit["suspended"] is False and audit["confidence"] == 0.95


class StatusStack:
    """What `flywheel status` reads from a StackClient, bound to the moto stack."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.env: dict[str, str] = {}
        # The stack's parameters as DescribeStacks lists them: the template's, defaults included.
        self.parameters = {k: str(v) for k, v in stack.resolved["Parameters"].items()}
        self.info = {
            "stack_name": "dataflywheel",
            "data_dir": ".flywheel",
            "parameters": self.parameters,
        }
        self.stack_name, self.where = "dataflywheel", "moto"
        self.items_table, self.data_bucket = stack.table, stack.data_bucket
        self.champion_parameter = "/dataflywheel/champion"

    def status(self) -> dict:
        return {
            "items": {},
            "champion": None,
            "queues": {},
            "training_jobs": {},
            "latest_job": None,
            "tuning_jobs": [],
            "review_batches": [],
            "latest_evaluation": None,
        }


def test_flywheel_status_prints_the_same_figures(stack, monkeypatch, capsys, context):
    # Given a champion with 40 spot checks answered, 39 right, and two items
    from dataflywheel import cli

    set_champion(stack, "dfw-champion00000")
    entry = ledger.tally_entry(stack.table, Observation("dfw-champion00000", 40, 39, {}))
    stack.ddb.transact_write_items(TransactItems=[entry])
    seed_items(stack, {"auto_labeled": 1, "needs_review": 1})
    monkeypatch.setattr(cli, "_client", lambda args: StatusStack(stack))

    # When `flywheel status` and `flywheel status --json` run
    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out
    assert cli.main(["status", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)

    # Then both say what the dashboard route says
    assert as_json["dashboard"] == dashboard(stack, context)
    assert "items      unlabeled=0  auto_labeled=1  needs_review=1" in text
    assert "champion   dfw-champion00000  test_accuracy=0.9500  threshold=0.800" in text
    assert "autolabel  active" in text
    assert "audit      0.975 (39/40, 95% CI 0.868-0.999)  target 0.95" in text


def test_flywheel_status_shows_the_learner_and_the_coverage_curve(stack, monkeypatch, capsys):
    # Given a latest job that chose a frozen-backbone head over small_cnn and certified 50%
    from dataflywheel import cli

    evaluation = {
        "model_version": JOB, "test_accuracy": 0.82, "champion_test_accuracy": None,
        "test_n": 94,
        "learner": {
            "chosen": "efficientnet_lite0",
            "description": "efficientnet_lite0 (ImageNet weights, frozen) + a linear head, 224 px",
            "candidates": {"small_cnn": {"val_accuracy": 0.6857, "val_loss": 0.95},
                           "efficientnet_lite0": {"val_accuracy": 0.7286, "val_loss": 0.78}},
            "why": "the highest validation accuracy (then the lowest validation loss)",
        },
        "threshold": {
            "reached": True, "threshold": 0.91, "coverage": 0.5, "n": 500,
            "target_accuracy": 0.95, "confidence": 0.95,
            "labels_needed": [{"coverage": 0.5, "observed_accuracy": 0.99, "labels": 300},
                              {"coverage": 0.6, "observed_accuracy": 0.97, "labels": 900},
                              {"coverage": 0.7, "observed_accuracy": 0.9, "labels": None}],
        },
    }  # fmt: skip

    class WithEvaluation(StatusStack):
        def status(self) -> dict:
            return {**super().status(), "latest_evaluation": evaluation}

    monkeypatch.setattr(cli, "_client", lambda args: WithEvaluation(stack))

    # When `flywheel status` runs
    assert cli.main(["status"]) == 0
    text = capsys.readouterr().out

    # Then it names the learner that serves, what each candidate scored, and the curve
    assert (
        "learner    efficientnet_lite0 (ImageNet weights, frozen) + a linear head, 224 px "
        "(validation accuracy: small_cnn 0.6857, efficientnet_lite0 0.7286)"
    ) in text
    assert "certified  auto-labels confidence >= 0.910: 50.0% of 500 random labels" in text
    assert "           most confident 50%: 99.0% right; certified" in text
    assert "           most confident 60%: 97.0% right; about 400 more random labels" in text
    assert "           most confident 70%: 90.0% right; below the target" in text
