"""The event router: delivers each function's template ``Events`` locally.

moto cannot invoke Lambdas without Docker, so this does what the Lambda service
does in the cloud, reading only the template:

- ``SQS``: a poller per event source mapping, with the mapping's ``BatchSize``
  and ``MaximumBatchingWindowInSeconds``, the real SQS event shape, and
  ``ReportBatchItemFailures``: messages the function reports (or a whole batch
  whose invocation failed) are left on the queue; the queue's own
  ``RedrivePolicy`` (which moto enforces on receive) moves them to the DLQ
  after ``maxReceiveCount``. S3 notifications reach functions this way
  (moto delivers S3 -> SQS itself).
- ``EventBridgeRule``: the rule is created in moto's EventBridge with the
  template's pattern and an internal SQS queue as its target (moto's Lambda
  targets would need Docker); the router polls that queue and invokes the
  function asynchronously: ``EventInvokeConfig.MaximumRetryAttempts`` retries
  (default 2), then the ``OnFailure`` SQS destination gets Lambda's record.
  Anything that calls ``PutEvents`` - the local SageMaker's state changes, a
  user's script - is matched by EventBridge's own pattern matching.
- ``Schedule`` / ``ScheduleV2``: timers (``rate(...)``, ``cron(...)``), plus
  ``fire(function, event_name)`` to run one now.

Local deviation, for speed: a failed SQS message is made visible again after
``retry_delay_s`` instead of the queue's full visibility timeout; receive
counts and redrive are unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from samlocal.functions import FunctionPool, FunctionSpec, InvocationError
from samlocal.moto_server import REGION, client

log = logging.getLogger(__name__)

ACCOUNT = "123456789012"


@dataclass
class SourceStats:
    kind: str
    function: str
    event: str
    batches: int = 0
    records: int = 0
    failed_records: int = 0
    failed_invocations: int = 0
    last_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lambda_message_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, a in (attrs or {}).items():
        out[name] = {
            "stringValue": a.get("StringValue"),
            "binaryValue": a.get("BinaryValue"),
            "stringListValues": a.get("StringListValues", []),
            "binaryListValues": a.get("BinaryListValues", []),
            "dataType": a.get("DataType", "String"),
        }
    return out


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS message as Lambda's event source mapping hands it to a function."""
    a = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": a.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": a.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": a.get("SenderId", ACCOUNT),
            "ApproximateFirstReceiveTimestamp": a.get(
                "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
            ),
        },
        "messageAttributes": _lambda_message_attributes(message.get("MessageAttributes", {})),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def failed_ids(response: Any, batch_ids: list[str]) -> list[str]:
    """Message ids to retry from a ReportBatchItemFailures response.

    As in Lambda: an empty or absent list means all succeeded; an identifier
    that is missing, empty or not in the batch fails the whole batch.
    """
    if not isinstance(response, dict) or not response.get("batchItemFailures"):
        return []
    failures = response["batchItemFailures"]
    if not isinstance(failures, list):
        return list(batch_ids)
    ids = []
    for f in failures:
        ident = f.get("itemIdentifier") if isinstance(f, dict) else None
        if not ident or ident not in batch_ids:
            return list(batch_ids)
        ids.append(ident)
    return ids


# -- schedules ----------------------------------------------------------------

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")


def _cron_field_matches(spec: str, value: int) -> bool:
    if spec in ("*", "?"):
        return True
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/")
            step = int(step_s)
        if part in ("*", ""):
            lo, hi = 0, 10**6
        elif "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
        else:
            lo = int(part)
            hi = lo if step == 1 else 10**6
        if lo <= value <= hi and (value - lo) % step == 0:
            return True
    return False


def next_fire(expression: str, after: dt.datetime) -> dt.datetime:
    """Next time a ``rate(...)``/``cron(...)`` schedule expression fires after ``after`` (UTC)."""
    m = _RATE.fullmatch(expression.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2).rstrip("s")
        seconds = n * {"minute": 60, "hour": 3600, "day": 86400}[unit]
        return after + dt.timedelta(seconds=seconds)
    m = re.fullmatch(r"cron\((.*)\)", expression.strip())
    if not m:
        raise ValueError(f"unsupported schedule expression: {expression}")
    minute, hour, dom, month, dow, *_ = m.group(1).split()
    t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    for _ in range(60 * 24 * 366):
        # AWS cron day-of-week is 1-7 = SUN-SAT; names are not supported here.
        aws_dow = (t.isoweekday() % 7) + 1
        if (
            _cron_field_matches(minute, t.minute)
            and _cron_field_matches(hour, t.hour)
            and _cron_field_matches(dom, t.day)
            and _cron_field_matches(month, t.month)
            and _cron_field_matches(dow, aws_dow)
        ):
            return t
        t += dt.timedelta(minutes=1)
    raise ValueError(f"schedule never fires: {expression}")


def scheduled_event(rule_arn: str) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": now_iso(),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


# -- the router ---------------------------------------------------------------


class Router:
    def __init__(
        self,
        specs: list[FunctionSpec],
        pool: FunctionPool,
        moto_url: str,
        *,
        stack_name: str = "flywheel",
        schedules: bool = True,
        retry_delay_s: int = 2,
        poll_wait_s: int = 1,
    ) -> None:
        self.specs = specs
        self.pool = pool
        self.moto_url = moto_url
        self.stack_name = stack_name
        self.schedules_enabled = schedules
        self.retry_delay_s = retry_delay_s
        self.poll_wait_s = poll_wait_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._async = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lambda-async")
        self.stats: dict[str, SourceStats] = {}
        self.schedules: dict[str, dict[str, Any]] = {}  # "<Function>.<Event>" -> info
        self.async_results: Counter[str] = Counter()

    # -- setup ---------------------------------------------------------------

    def start(self) -> None:
        sqs = client("sqs", self.moto_url)
        for spec in self.specs:
            for event_name, event in spec.events.items():
                kind, props = event.get("Type"), event.get("Properties", {}) or {}
                key = f"{spec.logical_id}.{event_name}"
                if kind == "SQS":
                    if props.get("Enabled", True) in (False, "false", "False"):
                        continue
                    arn = props["Queue"]
                    url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
                    self.stats[key] = SourceStats("SQS", spec.logical_id, event_name)
                    # One poller per sandbox the function may scale out to.
                    for _ in range(self.pool.get(spec.logical_id).concurrency):
                        self._spawn(self._poll_sqs, spec, event_name, arn, url, props)
                elif kind in ("EventBridgeRule", "CloudWatchEvent"):
                    arn, url = self._provision_rule(spec, event_name, props)
                    self.stats[key] = SourceStats("EventBridgeRule", spec.logical_id, event_name)
                    self._spawn(self._poll_rule, spec, event_name, arn, url, props)
                elif kind in ("Schedule", "ScheduleV2"):
                    expression = props.get("Schedule") or props.get("ScheduleExpression")
                    enabled = (
                        props.get("Enabled", True) not in (False, "false", "False")
                        and props.get("State", "ENABLED") != "DISABLED"
                    )
                    self.stats[key] = SourceStats(kind, spec.logical_id, event_name)
                    self.schedules[key] = {
                        "expression": expression,
                        "enabled": enabled,
                        "input": props.get("Input"),
                        "next": None,
                        "spec": spec,
                        "event": event_name,
                    }
                elif kind and kind != "HttpApi":  # HttpApi routes: samlocal/http_api.py
                    log.warning("event type %s of %s is not delivered locally", kind, key)
        if self.schedules:
            self._spawn(self._schedule_loop)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(
            target=target,
            args=args,
            daemon=True,
            name=f"router-{getattr(args[0], 'logical_id', 'schedules') if args else 'schedules'}",
        )
        t.start()
        self._threads.append(t)

    def stopping(self) -> None:
        """Stop polling and retrying; what is in flight stays on its queue (redelivered
        at the next start, when every message is visible again)."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 10
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        self._async.shutdown(wait=True, cancel_futures=True)

    def _provision_rule(
        self, spec: FunctionSpec, event_name: str, props: dict[str, Any]
    ) -> tuple[str, str]:
        """Create the rule in moto with an internal SQS queue as its target."""
        events, sqs = client("events", self.moto_url), client("sqs", self.moto_url)
        short = hashlib.sha256(f"{spec.logical_id}.{event_name}".encode()).hexdigest()[:8]
        queue_name = f"{self.stack_name}-router-{event_name}"[:70] + f"-{short}"
        url = sqs.create_queue(
            QueueName=queue_name, Attributes={"VisibilityTimeout": str(int(spec.timeout_s) + 30)}
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        rule_name = (
            props.get("RuleName") or f"{self.stack_name}-{spec.logical_id}-{event_name}"[:64]
        )
        bus = props.get("EventBusName", "default")
        if bus != "default":
            with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
                events.create_event_bus(Name=bus)
        pattern = props["Pattern"]
        events.put_rule(
            Name=rule_name,
            EventBusName=bus,
            EventPattern=pattern if isinstance(pattern, str) else json.dumps(pattern),
            State="ENABLED" if props.get("State", "ENABLED") != "DISABLED" else "DISABLED",
        )
        target: dict[str, Any] = {"Id": "router", "Arn": arn}
        if props.get("Input"):
            target["Input"] = props["Input"]
        elif props.get("InputPath"):
            target["InputPath"] = props["InputPath"]
        events.put_targets(Rule=rule_name, EventBusName=bus, Targets=[target])
        return arn, url

    # -- SQS event source mapping ---------------------------------------------

    def _poll_sqs(
        self, spec: FunctionSpec, event_name: str, queue_arn: str, url: str, props: dict[str, Any]
    ) -> None:
        sqs = client("sqs", self.moto_url)
        batch_size = int(props.get("BatchSize", 10))
        window = float(props.get("MaximumBatchingWindowInSeconds", 0))
        partial = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        stats = self.stats[f"{spec.logical_id}.{event_name}"]
        while not self._stop.is_set():
            try:
                messages = self._receive(sqs, url, batch_size, window)
            except Exception as exc:  # moto restarting, queue gone: keep polling
                stats.last_error = repr(exc)
                self._stop.wait(1)
                continue
            if not messages:
                continue
            try:
                self._deliver(sqs, spec, url, queue_arn, messages, partial, stats)
            except Exception as exc:  # never let a poller die: its messages come back after the VT
                stats.last_error = repr(exc)
                log.exception("%s: delivering a batch failed", spec.logical_id)

    def _deliver(
        self,
        sqs: Any,
        spec: FunctionSpec,
        url: str,
        queue_arn: str,
        messages: list[dict[str, Any]],
        partial: bool,
        stats: SourceStats,
    ) -> None:
        """One batch: invoke, delete what succeeded, release what failed."""
        records = [sqs_record(m, queue_arn) for m in messages]
        ids = [r["messageId"] for r in records]
        stats.batches += 1
        stats.records += len(records)
        try:
            response = self.pool.get(spec.logical_id).invoke({"Records": records})
            retry = failed_ids(response, ids) if partial else []
        except InvocationError as exc:
            if self._stop.is_set():
                return  # stopped mid-invocation: the batch stays in flight, redelivered later
            stats.failed_invocations += 1
            stats.last_error = str(exc)
            retry = ids
        stats.failed_records += len(retry)
        by_id = {m["MessageId"]: m for m in messages}
        done = [by_id[i] for i in ids if i not in retry]
        for i in range(0, len(done), 10):
            resp = sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
                    for n, m in enumerate(done[i : i + 10])
                ],
            )
            if resp.get("Failed"):
                stats.last_error = f"DeleteMessageBatch failed: {resp['Failed'][0]}"
                log.warning("%s: %s", spec.logical_id, stats.last_error)
        self._retry_later(sqs, url, [by_id[i] for i in retry])

    def _receive(self, sqs: Any, url: str, batch_size: int, window: float) -> list[dict[str, Any]]:
        kwargs = {"QueueUrl": url, "AttributeNames": ["All"], "MessageAttributeNames": ["All"]}
        messages = sqs.receive_message(
            MaxNumberOfMessages=min(10, batch_size), WaitTimeSeconds=self.poll_wait_s, **kwargs
        ).get("Messages", [])
        deadline = time.monotonic() + window
        while messages and len(messages) < batch_size and not self._stop.is_set():
            more = sqs.receive_message(
                MaxNumberOfMessages=min(10, batch_size - len(messages)), WaitTimeSeconds=0, **kwargs
            ).get("Messages", [])
            messages.extend(more)
            if not more:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
        return messages

    def _retry_later(self, sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
        for i in range(0, len(messages), 10):
            sqs.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {
                        "Id": str(n),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.retry_delay_s,
                    }
                    for n, m in enumerate(messages[i : i + 10])
                ],
            )

    # -- EventBridge rules (async invokes) --------------------------------------

    def _poll_rule(
        self, spec: FunctionSpec, event_name: str, queue_arn: str, url: str, props: dict[str, Any]
    ) -> None:
        sqs = client("sqs", self.moto_url)
        stats = self.stats[f"{spec.logical_id}.{event_name}"]
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.poll_wait_s,
                    AttributeNames=["All"],
                ).get("Messages", [])
            except Exception as exc:
                stats.last_error = repr(exc)
                self._stop.wait(1)
                continue
            for m in messages:
                stats.batches += 1
                stats.records += 1
                attempt = int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                event = json.loads(m["Body"])
                try:
                    self.pool.get(spec.logical_id).invoke(event)
                except InvocationError as exc:
                    if self._stop.is_set():
                        break  # stopped mid-invocation: left on the queue, redelivered later
                    stats.failed_invocations += 1
                    stats.last_error = str(exc)
                    if attempt < spec.async_max_attempts:
                        self._retry_later(sqs, url, [m])
                        continue
                    self._async_failed(spec, event, exc, attempt)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def _async_failed(
        self, spec: FunctionSpec, event: Any, exc: InvocationError, attempts: int
    ) -> None:
        """Retries exhausted: the OnFailure destination gets Lambda's record, else a log line."""
        if not spec.on_failure or ":sqs:" not in spec.on_failure:
            log.error("%s: event dropped after %d attempts: %s", spec.logical_id, attempts, exc)
            return
        record = {
            "version": "1.0",
            "timestamp": now_iso(),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{spec.name}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": event,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": exc.error,
        }
        sqs = client("sqs", self.moto_url)
        url = sqs.get_queue_url(QueueName=spec.on_failure.rsplit(":", 1)[-1])["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record, default=str))

    # -- schedules --------------------------------------------------------------

    def _schedule_loop(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for s in self.schedules.values():
            s["next"] = next_fire(s["expression"], now)
        while not self._stop.wait(1):
            if not self.schedules_enabled:
                continue
            now = dt.datetime.now(dt.UTC)
            for key, s in self.schedules.items():
                if s["enabled"] and s["next"] <= now:
                    s["next"] = next_fire(s["expression"], now)
                    self._async.submit(self._fire_async, key)

    def fire(self, function: str, event_name: str | None = None) -> Any:
        """Run a function's schedule now (the first one when no event name); returns its result."""
        keys = [
            k
            for k, s in self.schedules.items()
            if function in (s["spec"].logical_id, s["spec"].name)
            and (event_name is None or s["event"] == event_name)
        ]
        if not keys:
            raise KeyError(f"no schedule for {function}" + (f".{event_name}" if event_name else ""))
        return self._fire(keys[0])

    def _schedule_event(self, key: str) -> Any:
        s = self.schedules[key]
        rule = f"{self.stack_name}-{s['spec'].logical_id}-{s['event']}"
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"
        return json.loads(s["input"]) if s["input"] else scheduled_event(rule_arn)

    def _fire(self, key: str) -> Any:
        s = self.schedules[key]
        spec: FunctionSpec = s["spec"]
        event = self._schedule_event(key)
        stats = self.stats[key]
        stats.batches += 1
        stats.records += 1
        try:
            return self.pool.get(spec.logical_id).invoke(event)
        except InvocationError as exc:
            stats.failed_invocations += 1
            stats.last_error = str(exc)
            raise

    def _fire_async(self, key: str) -> None:
        """A timer fired: an asynchronous invocation, retried, then the destination."""
        spec: FunctionSpec = self.schedules[key]["spec"]
        for attempt in range(1, spec.async_max_attempts + 1):
            try:
                self._fire(key)
                return
            except InvocationError as exc:
                if self._stop.is_set():
                    return
                if attempt == spec.async_max_attempts:
                    self._async_failed(spec, self._schedule_event(key), exc, attempt)
                else:
                    self._stop.wait(self.retry_delay_s)

    # -- direct async invokes -------------------------------------------------

    def invoke_async(self, function: str, event: Any) -> None:
        """InvocationType=Event: queue it; retries and destination per EventInvokeConfig."""

        spec = self.pool.get(function).spec

        def run() -> None:
            for attempt in range(1, spec.async_max_attempts + 1):
                try:
                    self.pool.get(function).invoke(event)
                    self.async_results["ok"] += 1
                    return
                except InvocationError as exc:
                    if self._stop.is_set():
                        log.warning("async invoke of %s dropped: the stack stopped", function)
                        return
                    log.warning(
                        "async invoke of %s failed (attempt %d): %s", function, attempt, exc
                    )
                    if attempt < spec.async_max_attempts:
                        self._stop.wait(self.retry_delay_s)
                    else:
                        self.async_results["failed"] += 1
                        self._async_failed(spec, event, exc, attempt)

        self._async.submit(run)
