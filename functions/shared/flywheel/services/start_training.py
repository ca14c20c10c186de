"""Decide whether to retrain, snapshot the labeled data, start a training or tuning job."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.adapters import aws, items, parameters, sagemaker, storage
from flywheel.domain import names
from flywheel.domain.items import State, now_iso
from flywheel.domain.splits import Snapshot, SnapshotError, build_snapshot, manifest_lines
from flywheel.domain.training import (
    JobSettings,
    search_space_id,
    training_job_request,
    tuning_job_request,
)
from flywheel.errors import ConfigurationError
from flywheel.packaging import package_source_dir, source_key
from flywheel.settings import StartTrainingSettings


@dataclass(frozen=True)
class StartResult:
    started: bool
    reason: str
    job_name: str | None = None
    kind: str | None = None
    snapshot_id: str | None = None
    new_human_labels: int | None = None
    new_job: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def load_search_space(code_dir: str) -> dict:
    path = Path(code_dir) / "search_space.json"
    if not path.is_file():
        raise ConfigurationError(f"{path} missing: TrainingCodeLayer must carry search_space.json")
    return json.loads(path.read_text())


def publish_code(bucket: str, code_dir: str) -> str:
    """Upload the packaged training code under its content hash, once."""
    blob, digest = package_source_dir(code_dir)
    key = source_key(digest)
    if not storage.exists(bucket, key):
        storage.put_bytes(bucket, key, blob, "application/gzip")
    return f"s3://{bucket}/{key}"


def write_channels(bucket: str, snapshot: Snapshot, job_name: str) -> None:
    """ImageFolder channels by server-side copy; the manifest is written last as the marker."""
    manifest_key = f"{snapshot.prefix}/manifest.jsonl"
    if storage.exists(bucket, manifest_key):
        return
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(
            pool.map(
                lambda e: storage.copy(bucket, e.image_key, e.channel_key(snapshot.snapshot_id)),
                snapshot.entries,
            )
        )
    lines = manifest_lines(snapshot, bucket, job_name, now_iso())
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    storage.put_bytes(bucket, manifest_key, body, "application/jsonlines")


def start_training(s: StartTrainingSettings, reason: str, tuning: bool | None) -> StartResult:
    meta = items.get_training_meta(s.ITEMS_TABLE)
    new_labels = items.count_state(s.ITEMS_TABLE, State.HUMAN_LABELED, meta.get("started_at"))
    if reason != "manual" and new_labels < s.MIN_NEW_HUMAN_LABELS:
        return StartResult(
            False,
            f"{new_labels} new human labels < {s.MIN_NEW_HUMAN_LABELS}",
            new_human_labels=new_labels,
        )
    labeled = [
        (i["item_id"], str(i["label"]))
        for i in items.query_state(s.ITEMS_TABLE, State.HUMAN_LABELED)
    ]
    try:
        snapshot = build_snapshot(labeled)
    except SnapshotError as exc:
        return StartResult(False, str(exc), new_human_labels=new_labels)

    use_tuning = s.ENABLE_TUNING if tuning is None else tuning
    name = (names.tuning_job_name if use_tuning else names.training_job_name)(
        s.JOB_PREFIX, snapshot.snapshot_id
    )
    search_space = load_search_space(s.TRAINING_CODE_DIR)
    write_channels(s.DATA_BUCKET, snapshot, name)
    code_uri = publish_code(s.DATA_BUCKET, s.TRAINING_CODE_DIR)
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    job = JobSettings(
        region=aws.client("sagemaker").meta.region_name,
        bucket=s.DATA_BUCKET,
        stack_name=s.STACK_NAME,
        role_arn=s.SAGEMAKER_ROLE_ARN,
        image_uri=s.TRAINING_IMAGE_URI,
        instance_type=s.TRAINING_INSTANCE_TYPE,
        instance_count=s.TRAINING_INSTANCE_COUNT,
        use_spot=s.USE_SPOT,
        max_runtime_seconds=s.MAX_RUNTIME_SECONDS,
        target_accuracy=s.TARGET_ACCURACY,
        strategy=s.TUNING_STRATEGY,
        max_jobs=s.MAX_TUNING_JOBS,
        max_parallel_jobs=s.MAX_PARALLEL_TUNING_JOBS,
    )
    model_data = champion.model_data if champion else None
    space_id = search_space_id(search_space)
    if use_tuning:
        parent = meta.get("tuning_job") if meta.get("search_space_id") == space_id else None
        request = tuning_job_request(
            job, name, snapshot, search_space, code_uri, model_data, parent
        )
        created = sagemaker.create_tuning_job(request)
    else:
        request = training_job_request(job, name, snapshot, search_space, code_uri, model_data)
        created = sagemaker.create_training_job(request)
    if created:
        record = {
            "started_at": now_iso(),
            "snapshot_id": snapshot.snapshot_id,
            "job_name": name,
            "kind": "tuning" if use_tuning else "training",
            "reason": reason,
            "search_space_id": space_id,
        }
        if use_tuning:
            record["tuning_job"] = name
        elif meta.get("tuning_job"):
            record["tuning_job"] = meta["tuning_job"]
        items.put_training_meta(s.ITEMS_TABLE, record)
    return StartResult(
        True,
        "started" if created else "already started for this snapshot",
        name,
        "tuning" if use_tuning else "training",
        snapshot.snapshot_id,
        new_labels,
        created,
    )
