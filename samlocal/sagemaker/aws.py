"""The boto3 side of the service: S3 transfers (channels, code, artifacts, checkpoints),
CloudWatch alarm reads, training logs in CloudWatch Logs, and the EventBridge events
SageMaker emits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import tarfile
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config

from .protocol import event_timestamps

log = logging.getLogger("local_sagemaker")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri}")
    return parsed.netloc, parsed.path.lstrip("/")


class UnsafeKey(ValueError):
    """An S3 key (or manifest entry) that would be written outside its local directory."""


def confined(dest: Path, rel: str) -> Path:
    """``dest/rel`` resolved, refused unless strictly inside ``dest``: keys are data
    (``..`` parts, absolute keys, NUL bytes, symlinks out) and must never pick the path."""
    root = dest.resolve()
    target = root if "\x00" in rel else (root / rel).resolve()
    if target == root or not target.is_relative_to(root):
        raise UnsafeKey(f"S3 key part {rel[:200]!r} would be written outside {dest.name}/")
    return target


class Aws:
    """Clients bound to the local endpoints; created lazily, shared across threads."""

    def __init__(
        self,
        region: str,
        s3_endpoint: str | None,
        events_endpoint: str | None,
        cloudwatch_endpoint: str | None,
    ) -> None:
        self.region = region
        self.endpoints = {
            "s3": s3_endpoint,
            "events": events_endpoint,
            "cloudwatch": cloudwatch_endpoint,
            "logs": cloudwatch_endpoint,  # the local stack serves both from moto
        }
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def configured(self, service: str) -> bool:
        env = f"AWS_ENDPOINT_URL_{service.upper()}"
        return bool(
            self.endpoints.get(service) or os.environ.get(env) or os.environ.get("AWS_ENDPOINT_URL")
        )

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                creds = {}
                if not os.environ.get("AWS_ACCESS_KEY_ID"):
                    # The local stack is moto: any key works, and we never want the
                    # default chain to go looking for real credentials.
                    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                self._clients[service] = boto3.session.Session().client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoints.get(service),
                    config=Config(retries={"max_attempts": 3, "mode": "standard"}),
                    **creds,
                )
            return self._clients[service]

    # ---- S3 -------------------------------------------------------------------------

    def download_prefix(self, uri: str, dest: Path) -> int:
        """Copy every object under an S3 prefix (or one object) into `dest`, keeping
        the relative layout, like File mode S3Prefix channels. Returns the count.
        A key that would land outside `dest` (``..``, absolute) raises ``UnsafeKey``."""
        bucket, prefix = split_s3(uri)
        s3 = self.client("s3")
        count = 0
        dest.mkdir(parents=True, exist_ok=True)
        for pg in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in pg.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = key[len(prefix) :].lstrip("/") if key != prefix else Path(key).name
                if not rel:
                    rel = Path(key).name
                target = confined(dest, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(target))
                count += 1
        return count

    def download_manifest(
        self, uri: str, dest: Path, augmented: bool, attributes: list[str]
    ) -> int:
        """ManifestFile: a JSON list, first entry {"prefix": ...}, then keys relative to it.
        AugmentedManifestFile: JSON lines; File mode writes the manifest itself (the
        attributes named in AttributeNames) and we also fetch each `source-ref` object."""
        bucket, key = split_s3(uri)
        s3 = self.client("s3")
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        dest.mkdir(parents=True, exist_ok=True)
        count = 0
        if not augmented:
            entries = json.loads(body)
            prefix = entries[0]["prefix"]
            for rel in entries[1:]:
                b, k = split_s3(prefix.rstrip("/") + "/" + rel)
                target = confined(dest, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(b, k, str(target))
                count += 1
            return count
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if attributes:
            lines = [{a: line[a] for a in attributes if a in line} for line in lines]
        confined(dest, Path(key).name).write_text(
            "".join(json.dumps(line) + "\n" for line in lines)
        )
        for line in lines:
            ref = line.get("source-ref")
            if isinstance(ref, str) and ref.startswith("s3://"):
                b, k = split_s3(ref)
                target = confined(dest, k)
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(b, k, str(target))
                count += 1
        return count + 1

    def download_file(self, uri: str, dest: Path) -> Path:
        bucket, key = split_s3(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.client("s3").download_file(bucket, key, str(dest))
        return dest

    def download_tar(self, uri: str, dest: Path) -> None:
        """Fetch a .tar.gz and unpack it into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        archive = dest.parent / f".{dest.name}.download.tar.gz"
        self.download_file(uri, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        archive.unlink()

    def upload_file(self, path: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client("s3").upload_file(str(path), bucket, key)

    def delete_object(self, uri: str) -> None:
        bucket, key = split_s3(uri)
        self.client("s3").delete_object(Bucket=bucket, Key=key)

    # ---- CloudWatch -------------------------------------------------------------------

    def alarms_in_alarm(self, names: list[str]) -> list[str]:
        if not names or not self.configured("cloudwatch"):
            return []
        resp = self.client("cloudwatch").describe_alarms(AlarmNames=names)
        return [a["AlarmName"] for a in resp.get("MetricAlarms", []) if a["StateValue"] == "ALARM"]


class LogStream:
    """A training job's log in CloudWatch Logs, where SageMaker puts it
    (``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<start time>``).

    Lines are sent in batches: when asked to (a metric line), or every second or 100
    lines. Best effort, like the file log next to it: a failed send never fails a job.
    """

    GROUP = "/aws/sagemaker/TrainingJobs"

    def __init__(self, aws: Aws, job: str) -> None:
        self.aws, self.stream = aws, f"{job}/algo-1-{int(datetime.now(UTC).timestamp())}"
        self.enabled = aws.configured("logs")
        self._buffer: list[dict[str, Any]] = []
        self._sent_at = 0.0
        self._created = False

    def add(self, line: str, flush: bool = False) -> None:
        if not self.enabled:
            return
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        self._buffer.append({"timestamp": now_ms, "message": line.rstrip("\n")})
        if flush or len(self._buffer) >= 100 or now_ms / 1000 - self._sent_at >= 1.0:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        events, self._buffer = self._buffer, []
        self._sent_at = events[-1]["timestamp"] / 1000
        try:
            logs = self.aws.client("logs")
            if not self._created:
                with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                    logs.create_log_group(logGroupName=self.GROUP)
                logs.create_log_stream(logGroupName=self.GROUP, logStreamName=self.stream)
                self._created = True
            logs.put_log_events(
                logGroupName=self.GROUP, logStreamName=self.stream, logEvents=events
            )
        except Exception:
            log.debug("could not send %d log lines of %s", len(events), self.stream, exc_info=True)


class Events:
    """Emits SageMaker's EventBridge events: to the in-process callback at once and,
    when an EventBridge endpoint is configured, with put_events from one sender thread
    (so events keep their order and a slow bus never blocks a job)."""

    def __init__(
        self,
        aws: Aws,
        account: str,
        on_event: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.aws = aws
        self.account = account
        self.on_event = on_event
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.aws.configured("events"):
            self._thread = threading.Thread(target=self._send_loop, name="sm-events", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def emit(self, detail_type: str, resource_arn: str, detail: dict[str, Any]) -> None:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.sagemaker",
            "account": self.account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.aws.region,
            "resources": [resource_arn],
            "detail": event_timestamps(detail),
        }
        log.info("event %s %s", detail_type, resource_arn)
        if self.on_event:
            try:
                self.on_event(event)
            except Exception:  # a subscriber's bug must not kill a training job
                log.exception("on_event callback failed")
        if self._thread:
            self._queue.put(event)

    def _send_loop(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                resp = self.aws.client("events").put_events(
                    Entries=[
                        {
                            "Source": event["source"],
                            "DetailType": event["detail-type"],
                            "Resources": event["resources"],
                            "Detail": json.dumps(event["detail"]),
                        }
                    ]
                )
                if resp.get("FailedEntryCount"):
                    log.warning("put_events rejected an event: %s", resp["Entries"])
            except Exception:
                log.exception("put_events failed")
