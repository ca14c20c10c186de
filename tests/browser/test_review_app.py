"""The review app in Debian's chromium (Playwright) against a real local stack.

A reviewer opens the page `flywheel review open` publishes (a presigned GET of the data
bucket, so the API is cross-origin: CORS), signs in through Cognito (moto) and the API's
JWT authorizer, labels 20 items by keyboard, undoes one, skips one and rejects one; a
second reviewer signed in at the same time never holds an item the first one sees.

FLYWHEEL_SCREENSHOTS=1 saves docs/img/review.png and docs/img/dashboard.png.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import review_kit as kit

from dataflywheel.cli import review_app_url
from dataflywheel.stack_client import StackClient

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

UPLOADS = 48
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    kit.ensure_chromium()
    s = kit.start_stack(tmp_path_factory.mktemp("browser-stack"), AuditFraction="0.2")
    try:
        truth = kit.fill_queue(s, UPLOADS)
        kit.add_reviewer(s, "bob")
        yield s, truth
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser(stack):
    with playwright_api.sync_playwright() as p:
        b = kit.launch(p)
        yield b
        b.close()


def open_page(browser, url: str, user: str, password: str):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    kit.sign_in(page, url, user, password)
    return page, errors


def current(page) -> dict:
    return dict(page.evaluate("window.reviewApp.queue[0]"))


def text(page, selector: str) -> str:
    return page.inner_text(selector).strip()


def test_two_reviewers_label_by_keyboard_undo_skip_reject_never_sharing_an_item(stack, browser):
    s, truth = stack
    c = StackClient(s.data_dir)
    url = review_app_url(c, 900)
    password = json.loads((s.data_dir / "reviewer.json").read_text())["password"]
    screenshots = os.environ.get("FLYWHEEL_SCREENSHOTS") == "1"

    # Given two reviewers signed in through the page (Cognito, then the JWT authorizer)
    alice, alice_errors = open_page(browser, url, "reviewer", password)
    bob, bob_errors = open_page(browser, url, "bob", kit.PASSWORD)
    bob_holds = set(kit.queue_ids(bob))
    before = {i["item_id"]: i for i in c.items()}
    waiting = sum(i["state"] == "needs_review" for i in before.values())
    assert len(bob_holds) == 5 and text(alice, "#stat-done") == "0"
    assert text(alice, "#stat-left") == str(waiting)
    reasons = {i["review_reason"] for i in before.values() if i["state"] == "needs_review"}
    assert reasons == {"audit", "spot_check", "uncertain"}

    seen_by_alice: set[str] = set()
    labeled: dict[str, str] = {}
    accepted = corrected = blind = 0
    spot_checks: dict[str, bool] = {}  # answered spot check (either reviewer) -> model right

    def answer_by_keyboard() -> str:
        nonlocal accepted, corrected, blind
        item = current(alice)
        right = str(truth[item["item_id"]])
        suggestion = item["suggestion"]
        if item["blind"]:  # audit and spot checks: no hint, the reviewer types the digit
            assert suggestion is None and alice.is_hidden("#suggestion-box")
            blind += 1
            key = right
            if item["review_reason"] == "spot_check":
                spot_checks[item["item_id"]] = before[item["item_id"]]["label"] == right
        elif suggestion["label"] == right:
            accepted += 1
            key = "Enter"  # accept the model's suggestion
        else:
            corrected += 1
            key = right  # the class's own key
        kit.press_and_wait(alice, key)
        labeled[item["item_id"]] = right
        return item["item_id"]

    def check_leases() -> None:
        mine = {kit.shown(alice), *kit.queue_ids(alice)} - {""}
        seen_by_alice.update(mine)
        assert not mine & bob_holds, "two reviewers hold the same item"

    # When alice labels, skips, rejects and undoes, by keyboard only
    check_leases()
    for _ in range(10):
        answer_by_keyboard()
        check_leases()
    skipped = kit.shown(alice)
    kit.press_and_wait(alice, "s")
    shot = not screenshots
    for _ in range(5):
        answer_by_keyboard()
        check_leases()
        if not shot and not current(alice)["blind"]:  # a page with the model's suggestions
            kit.settle(alice)
            alice.screenshot(path=str(DOCS_IMG / "review.png"))
            shot = True
    rejected = kit.shown(alice)
    kit.press_and_wait(alice, "r")
    for _ in range(5):
        last = answer_by_keyboard()
        check_leases()
    kit.settle(alice)
    assert text(alice, "#stat-retrain") == "20 / 50"

    back = kit.press_and_wait(alice, "u")  # undo the last label
    kit.settle(alice)
    assert back == last
    undone = c.items()
    by_id = {i["item_id"]: i for i in undone}
    assert by_id[last]["state"] == "needs_review" and by_id[last]["lease_owner"] == "reviewer"
    assert text(alice, "#stat-retrain") == "19 / 50"  # the retrain counter follows the undo
    answer_by_keyboard()  # and labels it again
    check_leases()
    kit.settle(alice)

    # Then the items table says what the reviewer did, with who and the model's suggestion
    items = {i["item_id"]: i for i in c.items()}
    assert len(labeled) == 20 and accepted and corrected and blind
    for item_id, label in labeled.items():
        item = items[item_id]
        assert (item["state"], item["label"], item["label_source"]) == (
            "human_labeled",
            label,
            "human",
        ), item_id
        assert item["answered_by"] == "reviewer" and "lease_owner" not in item
        reason = before[item_id]["review_reason"]
        if reason == "audit":  # the ingest's random audit stream: certifies, no model label
            assert (item["label_origin"], item["label_sampling"]) == ("audit", "random")
        else:
            assert item["label_origin"] == ("spot_check" if reason == "spot_check" else "review")
            assert item["model_suggestion"]["model_version"] == kit.MODEL_VERSION
    assert (items[rejected]["state"], items[rejected]["reason"]) == (
        "rejected",
        "rejected by reviewer",
    )
    assert items[skipped]["state"] == "needs_review"
    assert items[skipped].get("lease_owner") in (None, "bob")  # alice let it go
    assert skipped not in kit.queue_ids(alice)  # and is not offered it again

    # and the progress the page shows moved as a person expects
    assert text(alice, "#stat-done") == "21"  # 20 labels + 1 reject (a skip is not done)
    assert text(alice, "#stat-left") == str(waiting - 21)
    assert text(alice, "#stat-retrain") == "20 / 50"
    assert float(text(alice, "#stat-rate")) > 0

    # and bob's items were never alice's; now bob answers two while alice holds hers
    assert not seen_by_alice & bob_holds
    for item_id in bob_holds & {i for i, v in items.items() if v.get("lease_owner") == "bob"}:
        assert items[item_id]["state"] == "needs_review"
    for _ in range(2):
        item = current(bob)
        assert item["item_id"] not in {kit.shown(alice), *kit.queue_ids(alice)}
        right = str(truth[item["item_id"]])
        if item["review_reason"] == "spot_check":
            spot_checks[item["item_id"]] = before[item["item_id"]]["label"] == right
        kit.press_and_wait(bob, right)
    kit.settle(bob)
    assert text(bob, "#stat-done") == "2"

    # and the dashboard counts the states, shows the champion and its audit: the spot
    # checks the two answered, and how many of them the model had right
    alice.click("#tab-dashboard")
    alice.wait_for_selector("body[data-dashboard='loaded']", state="attached")
    assert text(alice, "tr[data-state='human_labeled'] td.num") == "22"
    assert text(alice, "tr[data-state='rejected'] td.num") == "1"
    assert text(alice, "#dash-champion tr[data-field='model'] td") == kit.MODEL_VERSION
    assert text(alice, "#auto-state") == "Active"
    assert spot_checks, "no spot check came up"
    assert text(alice, "#dash-audit tr[data-field='answered'] td") == str(len(spot_checks))
    assert text(alice, "#dash-audit tr[data-field='correct'] td") == str(sum(spot_checks.values()))
    if screenshots:
        alice.screenshot(path=str(DOCS_IMG / "dashboard.png"), full_page=True)
    assert alice_errors == [] and bob_errors == []


def test_the_page_without_a_token_shows_the_sign_in_and_a_wrong_password_is_refused(stack, browser):
    s, _ = stack
    url = review_app_url(StackClient(s.data_dir), 300)
    page = browser.new_context().new_page()
    page.goto(url)
    assert page.is_visible("#login") and page.is_hidden("#view-review")
    page.fill("#username", "reviewer")
    page.fill("#password", "wrong-Password-1")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not(:empty)")
    assert "password" in text(page, "#login-error").lower()
    assert page.is_hidden("#view-review")
