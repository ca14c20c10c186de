"""Review app latency on the local stack: page load, next item, answers per second.

    .venv/bin/python benchmarks/review_latency.py [--items 320] [--answers 200] [--think-ms 1000]
                                                  [--api-calls 50] [--clients 4] [--seconds 60]

Starts a local stack (no SageMaker), fills the review queue the way the browser test does
(digit images through the ingest function, then a champion whose predictions are all
unsure), and measures, in this order:
- ``GET /review/next?count=5`` latency over HTTP (p50/p95 over ``--api-calls``, one
  reviewer) while the whole queue waits;
- in Debian's chromium through Playwright, the page load (the presigned page's navigation,
  request to load event; sign-in to the first item on screen) and the next-item latency
  over ``--answers`` keyboard answers, one every ``--think-ms`` at most (a reviewer looks
  at the image first): from the answer's keydown to the next image decoded and painted
  (the page records it: two animation frames after ``img.decode()``; when the queue ran
  empty, until a refill brought one), p50/p95;
- answers per second ``--clients`` reviewers sustain over HTTP for ``--seconds`` (each:
  next, then one POST per item).
Prints the figures; docs/review-api.md quotes a run with the host's conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "functions" / "shared"), str(ROOT / "tests" / "browser")]

import review_kit as kit  # noqa: E402

from dataflywheel.cli import review_app_url  # noqa: E402
from dataflywheel.stack_client import StackClient  # noqa: E402
from samlocal.moto_server import client  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, values: list[float], unit: str = "ms") -> str:
    return (
        f"{name}: n={len(values)} p50={pct(values, 0.5):.1f} {unit} "
        f"p95={pct(values, 0.95):.1f} {unit} max={max(values):.1f} {unit}"
    )


def token(stack, user: str, password: str) -> str:
    reviewer = json.loads((stack.data_dir / "reviewer.json").read_text())
    got = client("cognito-idp", stack.moto.url).initiate_auth(
        ClientId=reviewer["client_id"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": user, "PASSWORD": password},
    )
    return str(got["AuthenticationResult"]["IdToken"])


def browser_figures(stack, truth: dict[str, int], answers: int, think_ms: int) -> None:
    from playwright.sync_api import sync_playwright

    url = review_app_url(StackClient(stack.data_dir), 3600)
    password = json.loads((stack.data_dir / "reviewer.json").read_text())["password"]
    with sync_playwright() as p:
        browser = kit.launch(p)
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(url)
        nav = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return [n.responseEnd - n.startTime, n.loadEventEnd - n.startTime]; })()"
        )
        print(
            f"page load (presigned GET from moto's S3): response {nav[0]:.1f} ms, "
            f"load event {nav[1]:.1f} ms"
        )
        page.fill("#username", "reviewer")
        page.fill("#password", password)
        t0 = time.perf_counter()
        page.click("#login-submit")
        page.wait_for_selector("body[data-painted='1'], body[data-ready='1']", state="attached")
        page.wait_for_selector("body[data-ready='1']", state="attached")
        print(f"sign-in to first item on screen: {(time.perf_counter() - t0) * 1000:.0f} ms")
        start = time.perf_counter()
        for _ in range(answers):
            shown_at = time.perf_counter()
            item = page.evaluate("window.reviewApp.queue[0]")
            if not item:
                break
            page.wait_for_timeout(max(0.0, think_ms - 1000 * (time.perf_counter() - shown_at)))
            kit.press_and_wait(page, str(truth[item["item_id"]]), timeout_ms=120_000)
        elapsed = time.perf_counter() - start
        kit.settle(page)
        lat = page.evaluate("window.reviewApp.metrics.latencies")
        waited = page.evaluate("window.reviewApp.metrics.waited")
        print(summary("next item painted after the answer key (browser)", lat))
        ready = [ms for ms, w in zip(lat, waited, strict=True) if not w]
        if ready:
            print(summary("  when the next item was already in the queue", ready))
        print(f"  the queue had run empty (waiting for the API) on {sum(waited)} of {len(lat)}")
        print(
            f"  {len(lat)} keyboard answers in {elapsed:.1f} s ({60 * len(lat) / elapsed:.0f}"
            f"/min; think time {think_ms} ms)"
        )
        browser.close()


def next_latency(stack, calls: int) -> None:
    api = stack.http_api.url
    kit.add_reviewer(stack, "bench")
    headers = {"Authorization": f"Bearer {token(stack, 'bench', kit.PASSWORD)}"}
    waiting = StackClient(stack.data_dir).counts()["needs_review"]
    with requests.Session() as s:
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            got = s.get(f"{api}/review/next?count=5", headers=headers, timeout=60)
            lat.append((time.perf_counter() - t) * 1000)
            got.raise_for_status()
    print(summary(f"GET /review/next?count=5 (HTTP, {waiting} items waiting)", lat))


def throughput(stack, truth: dict[str, int], clients: int, seconds: float) -> None:
    api = stack.http_api.url
    waiting = StackClient(stack.data_dir).counts()["needs_review"]
    done: list[float] = []
    conflicts: list[str] = []
    lock = threading.Lock()
    tokens = {}
    for n in range(clients):
        kit.add_reviewer(stack, f"load{n}")
        tokens[n] = token(stack, f"load{n}", kit.PASSWORD)
    stop_at = time.perf_counter() + seconds

    def reviewer(n: int) -> None:
        h = {"Authorization": f"Bearer {tokens[n]}"}
        with requests.Session() as s:
            while time.perf_counter() < stop_at:
                got = s.get(f"{api}/review/next?count=5", headers=h, timeout=60).json()["items"]
                if not got:
                    return
                for item in got:
                    body = {"item_id": item["item_id"], "label": str(truth[item["item_id"]])}
                    r = s.post(f"{api}/review/answers", json=body, headers=h, timeout=60)
                    with lock:
                        if r.status_code == 409:  # another reviewer holds it: not an answer
                            conflicts.append(item["item_id"])
                            continue
                        r.raise_for_status()
                        done.append(time.perf_counter())

    threads = [threading.Thread(target=reviewer, args=(n,)) for n in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = (done[-1] if done else time.perf_counter()) - start
    print(
        f"answers/s with {clients} concurrent reviewers (next, then one POST per item; "
        f"{waiting} items waiting): {len(done) / elapsed:.1f} "
        f"({len(done)} answers in {elapsed:.1f} s; {len(conflicts)} refused 409 leased_by_other)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=320, help="images uploaded (~95%% reviewed)")
    ap.add_argument("--answers", type=int, default=200, help="keyboard answers in the browser")
    ap.add_argument("--think-ms", type=int, default=1000, help="least time per answer")
    ap.add_argument("--api-calls", type=int, default=50, help="GET /review/next calls timed")
    ap.add_argument("--clients", type=int, default=4, help="concurrent API reviewers")
    ap.add_argument("--seconds", type=float, default=60, help="length of the answers/s run")
    args = ap.parse_args()
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
        stack = kit.start_stack(Path(tmp), AuditFraction="0.05")
        try:
            t = time.perf_counter()
            # every prediction unsure: all but the audit stream (5%) wait for people
            truth = kit.fill_queue(stack, args.items, confident_every=10**9)
            waiting = StackClient(stack.data_dir).counts()["needs_review"]
            print(
                f"queue: {args.items} images ingested, {waiting} items need review "
                f"({time.perf_counter() - t:.0f} s)"
            )
            next_latency(stack, args.api_calls)  # while the whole queue waits
            browser_figures(stack, truth, args.answers, args.think_ms)
            throughput(stack, truth, args.clients, args.seconds)
        finally:
            stack.stop()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
