"""A local stack with a review queue, and a browser driving the review app.

Shared by the browser tests and ``benchmarks/review_latency.py``.

The queue is filled the way the loop fills it, short of a SageMaker endpoint: digit images
are uploaded to the upload bucket and ingested by the ingest function (the audit stream is
drawn there, blind); then a champion record is put in SSM and every unlabeled item gets a
synthetic prediction, decided and written as the autolabel function does
(``domain.autolabel.decide`` with the champion's threshold and the spot-check draw, then
``items.set_model_label``): unsure predictions go to review with their top-k, confident ones
are auto-labeled, and a share of those goes to people blind as spot checks. The model is
right on most items and wrong on some, so a reviewer has both to accept and to correct.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dataflywheel.stack_client import StackClient, wait_until
from samlocal.moto_server import client
from samlocal.stack import LocalStack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CLASSES = [str(d) for d in range(10)]
MODEL_VERSION = "dfw-browser-1"
PASSWORD = "Bob-reviews-2026"


def digit_png(digit: int, n: int) -> bytes:
    """A 96x96 PNG of ``digit``, unique per ``n`` (item ids are content hashes)."""
    rng = np.random.default_rng(n)
    img = rng.integers(0, 40, (96, 96), dtype=np.uint8)
    cv2.putText(img, str(digit), (22 + n % 7, 76 - n % 5), cv2.FONT_HERSHEY_SIMPLEX, 2.6, 255, 6)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def start_stack(data_dir: Path, **parameters: str) -> LocalStack:
    params = {"ClassNames": ",".join(CLASSES), "MinNewHumanLabels": "50", **parameters}
    stack = LocalStack(data_dir, sagemaker=False, schedules=False, parameters=params)
    stack.start()
    return stack


@contextlib.contextmanager
def stack_environment(stack: LocalStack) -> Iterator[None]:
    """os.environ pointing flywheel's adapters at the stack, restored afterwards."""
    from flywheel.adapters import aws

    env = stack.info["environment"]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        aws.reset_all()
        try:
            yield
        finally:
            aws.reset_all()
    aws.reset_all()


def fill_queue(
    stack: LocalStack,
    count: int,
    wrong_every: int = 4,
    confident_every: int = 3,
    spot_check_fraction: float = 0.5,
) -> dict[str, int]:
    """Upload ``count`` digit images, wait for ingest, then label the unlabeled ones as the
    autolabel function would. Returns the true digit of every item id."""
    from flywheel.adapters import items, parameters
    from flywheel.domain.audit import is_spot_check_draw
    from flywheel.domain.autolabel import Prediction, decide
    from flywheel.domain.champion import Champion
    from flywheel.domain.items import State, content_item_id

    c = StackClient(stack.data_dir)
    s3 = c.client("s3")
    pngs = {n: digit_png(n % 10, n) for n in range(count)}

    def put(n: int) -> None:
        s3.put_object(Bucket=c.upload_bucket, Key=f"batch/{n:04d}.png", Body=pngs[n])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, pngs))
    truth = {content_item_id(png): n % 10 for n, png in pngs.items()}
    wait_until(
        lambda: sum(c.counts().values()) >= count, timeout=240, what=f"{count} ingested items"
    )
    champion = Champion(
        model_version=MODEL_VERSION,
        training_job=MODEL_VERSION,
        model_name=MODEL_VERSION,
        endpoint_config=f"{MODEL_VERSION}-config",
        model_data=f"s3://{c.data_bucket}/models/{MODEL_VERSION}/output/model.tar.gz",
        threshold=0.9,
        target_accuracy=0.95,
        test_accuracy=0.93,
        classes=CLASSES,
        test_set_id="browser-test",
        promoted_at="2026-01-01T00:00:00Z",
    )
    rng = random.Random(0)
    with stack_environment(stack):
        parameters.put_champion(c.champion_parameter, champion)
        for n, item_id in enumerate(sorted(truth)):
            item = items.get(c.items_table, item_id)
            if item is None or item["state"] != State.UNLABELED.value:
                continue  # audit items stay blind
            right = truth[item_id]
            guess = (right + 1) % 10 if n % wrong_every == 0 else right
            other = rng.choice([d for d in range(10) if d != guess])
            confident = n % confident_every == 1
            top1 = round(rng.uniform(0.92, 0.99) if confident else rng.uniform(0.45, 0.8), 3)
            top_k = ((str(guess), top1), (str(other), round((1 - top1) * 0.7, 3)))
            prediction = Prediction(str(guess), top1, top_k=top_k)
            draw = is_spot_check_draw(item_id, MODEL_VERSION, spot_check_fraction)
            decision = decide(prediction, champion.threshold, spot_check=draw)
            items.set_model_label(
                c.items_table,
                item_id,
                decision.state,
                decision.label,
                decision.confidence,
                MODEL_VERSION,
                review_reason=decision.review_reason,
                margin=prediction.margin,
                top_k=prediction.top_k,
            )
    return truth


def add_reviewer(stack: LocalStack, username: str, password: str = PASSWORD) -> None:
    reviewer = json.loads((stack.data_dir / "reviewer.json").read_text())
    idp = client("cognito-idp", stack.moto.url)
    pool = reviewer["user_pool_id"]
    with contextlib.suppress(idp.exceptions.UsernameExistsException):
        idp.admin_create_user(UserPoolId=pool, Username=username, MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=pool, Username=username, Password=password, Permanent=True
    )


def ensure_chromium() -> str:
    """Debian's chromium (never a browser download); a missing one fails with how to install it."""
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not found:
        pytest.fail("chromium is not installed (make test installs it: apt-get install chromium)")
    return found


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS)


def sign_in(page: Any, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def shown(page: Any) -> str:
    return str(page.get_attribute("#item-image", "data-item-id") or "")


def queue_ids(page: Any) -> list[str]:
    return list(page.evaluate("window.reviewApp.queue.map((i) => i.item_id)"))


def settle(page: Any, timeout_ms: int = 60_000) -> None:
    """Every answer sent and the queue refilled."""
    # Selectors, not wait_for_function: the page's CSP forbids eval, and the test keeps it.
    page.wait_for_selector("body[data-pending='0']", state="attached", timeout=timeout_ms)


def press_and_wait(page: Any, key: str, timeout_ms: int = 30_000) -> str:
    """Press ``key`` on the review page; the item shown next (waits until it changes)."""
    before = page.get_attribute("body", "data-shown")
    page.keyboard.press(key)
    page.wait_for_selector(
        f"body:not([data-shown='{before}'])", state="attached", timeout=timeout_ms
    )
    return shown(page)


def git_root() -> Path:
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def now() -> float:
    return time.time()
