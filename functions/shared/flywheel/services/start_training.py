"""Decide whether to retrain, snapshot the labeled data, start a training or tuning job."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from flywheel.adapters import aws, items, parameters, quotas, sagemaker, storage
from flywheel.domain import names
from flywheel.domain.containers import container_image
from flywheel.domain.items import State, now_iso
from flywheel.domain.quotas import (
    QuotaVerdict,
    TrainingNeed,
    check_training_quota,
    unchecked,
    wanted_quota_names,
)
from flywheel.domain.sampling import SELECTED, unit_hash
from flywheel.domain.splits import (
    SPLITS,
    Snapshot,
    SnapshotError,
    build_snapshot,
    manifest_lines,
)
from flywheel.domain.training import (
    JobSettings,
    search_space_id,
    training_job_request,
    tuning_job_request,
)
from flywheel.errors import ConfigurationError, QuotaExceeded
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
    # The quota preflight's verdict (QuotaVerdict.as_dict()) when it ran.
    preflight: dict | None = None

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


POOL_STATES = (State.UNLABELED, State.NEEDS_REVIEW, State.AUTO_LABELED)


def unlabeled_pool(table: str, limit: int) -> list[str]:
    """Item ids of images without a human label, at most ``limit``, chosen by id hash.

    The same items give the same pool whatever the order DynamoDB returns them in.
    """
    ids = {i["item_id"] for state in POOL_STATES for i in items.query_state(table, state)}
    return sorted(ids, key=lambda i: (unit_hash("pool", i), i))[:limit]


def pool_manifest(bucket: str, item_ids: list[str]) -> list:
    """S3 ManifestFile (one JSON array): a prefix object, then keys relative to it."""
    return [{"prefix": f"s3://{bucket}/images/"}, *(f"{i}.png" for i in item_ids)]


def write_channels(bucket: str, snapshot: Snapshot, job_name: str, pool: list[str]) -> None:
    """Channels by server-side copy; the top-level manifest is written last as the marker.

    ``train/`` and ``test/`` each hold their images (``<label>/<id>.png``) and a
    ``manifest.jsonl`` whose source-refs point at those copies, so a channel download
    brings a manifest the trainer resolves inside the channel directory. The unlabeled
    pool (``unlabeled.manifest``) is fixed with the snapshot: a retry sees the same one.
    """
    manifest_key = f"{snapshot.prefix}/manifest.jsonl"
    if storage.exists(bucket, manifest_key):
        return
    with ThreadPoolExecutor(max_workers=16) as pool_:
        list(
            pool_.map(
                lambda e: storage.copy(bucket, e.image_key, e.channel_key(snapshot.snapshot_id)),
                snapshot.entries,
            )
        )
    created = now_iso()
    for split in SPLITS:
        lines = manifest_lines(snapshot, bucket, job_name, created, split)
        if lines:
            storage.put_bytes(
                bucket, f"{snapshot.prefix}/{split}/manifest.jsonl", _jsonl(lines), JSONL
            )
    if pool:
        storage.put_json(bucket, unlabeled_manifest_key(snapshot), pool_manifest(bucket, pool))
    lines = manifest_lines(snapshot, bucket, job_name, created)
    storage.put_bytes(bucket, manifest_key, _jsonl(lines), JSONL)


JSONL = "application/jsonlines"


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def unlabeled_manifest_key(snapshot: Snapshot) -> str:
    return f"{snapshot.prefix}/unlabeled.manifest"


def _labeled(table: str) -> list[tuple[str, str, str]]:
    return [
        (i["item_id"], str(i["label"]), str(i.get("label_sampling") or SELECTED))
        for i in items.query_state(table, State.HUMAN_LABELED)
    ]


def quota_preflight(s: StartTrainingSettings, tuning: bool) -> QuotaVerdict:
    """Does the account's quota allow this job? Advisory: a check that cannot run says so."""
    need = TrainingNeed(
        s.TRAINING_INSTANCE_TYPE,
        s.TRAINING_INSTANCE_COUNT,
        s.USE_SPOT,
        s.MAX_PARALLEL_TUNING_JOBS if tuning else 1,
    )
    try:
        found = quotas.sagemaker_quotas(wanted_quota_names(need))
    except Exception as exc:  # AccessDenied, no endpoint, an emulator without the API: go on
        return unchecked(need, f"{type(exc).__name__}: {exc}")
    return check_training_quota(found, need, aws.client("sagemaker").meta.region_name)


def job_settings(s: StartTrainingSettings, region: str) -> JobSettings:
    """The request builder's settings: every value is the stack's (its Environment)."""
    return JobSettings(
        region=region,
        bucket=s.DATA_BUCKET,
        stack_name=s.STACK_NAME,
        role_arn=s.SAGEMAKER_ROLE_ARN,
        image_uri=container_image(
            s.TRAINING_INSTANCE_TYPE,
            s.TRAINING_CPU_IMAGE_URI,
            s.TRAINING_GPU_IMAGE_URI,
            s.TRAINING_IMAGE_URI,
        ),
        instance_type=s.TRAINING_INSTANCE_TYPE,
        instance_count=s.TRAINING_INSTANCE_COUNT,
        use_spot=s.USE_SPOT,
        max_runtime_seconds=s.MAX_RUNTIME_SECONDS,
        target_accuracy=s.TARGET_ACCURACY,
        epochs=s.TRAINING_EPOCHS,
        arch=s.TRAINING_ARCH,
        cross_fit_folds=s.CROSS_FIT_FOLDS,
        confidence=s.CERTIFICATION_CONFIDENCE,
        strategy=s.TUNING_STRATEGY,
        max_jobs=s.MAX_TUNING_JOBS,
        max_parallel_jobs=s.MAX_PARALLEL_TUNING_JOBS,
    )


def start_training(s: StartTrainingSettings, reason: str, tuning: bool | None) -> StartResult:
    meta = items.get_training_meta(s.ITEMS_TABLE)
    new_labels = items.count_state(s.ITEMS_TABLE, State.HUMAN_LABELED, meta.get("started_at"))
    if reason != "manual" and new_labels < s.MIN_NEW_HUMAN_LABELS:
        return StartResult(
            False,
            f"{new_labels} new human labels < {s.MIN_NEW_HUMAN_LABELS}",
            new_human_labels=new_labels,
        )
    try:
        snapshot = build_snapshot(_labeled(s.ITEMS_TABLE))
    except SnapshotError as exc:
        return StartResult(False, str(exc), new_human_labels=new_labels)

    use_tuning = s.ENABLE_TUNING if tuning is None else tuning
    kind = "tuning" if use_tuning else "training"
    namer = names.tuning_job_name if use_tuning else names.training_job_name
    name, status = names.job_attempt(
        lambda attempt: namer(s.JOB_PREFIX, snapshot.snapshot_id, attempt),
        sagemaker.tuning_job_status if use_tuning else sagemaker.training_job_status,
    )
    if status is not None:
        # The job for exactly these labels exists: say so instead of pretending to start.
        running = status in ("InProgress", "Stopping")
        return StartResult(
            running,
            f"a job for this snapshot is running: {status}"
            if running
            else f"a job for this snapshot already ran: {status}",
            name,
            kind,
            snapshot.snapshot_id,
            new_labels,
            False,
        )
    verdict = quota_preflight(s, use_tuning)
    if verdict.blocks:
        return StartResult(
            False,
            verdict.message,
            name,
            kind,
            snapshot.snapshot_id,
            new_labels,
            preflight=verdict.as_dict(),
        )
    search_space = load_search_space(s.TRAINING_CODE_DIR)
    if not storage.exists(s.DATA_BUCKET, f"{snapshot.prefix}/manifest.jsonl"):
        pool = unlabeled_pool(s.ITEMS_TABLE, s.MAX_UNLABELED_POOL)
    else:
        pool = []  # written with the snapshot already
    write_channels(s.DATA_BUCKET, snapshot, name, pool)
    has_pool = storage.exists(s.DATA_BUCKET, unlabeled_manifest_key(snapshot))
    pool_uri = f"s3://{s.DATA_BUCKET}/{unlabeled_manifest_key(snapshot)}" if has_pool else None
    code_uri = publish_code(s.DATA_BUCKET, s.TRAINING_CODE_DIR)
    champion = parameters.get_champion(s.CHAMPION_PARAMETER)
    job = job_settings(s, aws.client("sagemaker").meta.region_name)
    model_data = champion.model_data if champion else None
    space_id = search_space_id(search_space)
    try:
        if use_tuning:
            parent = meta.get("tuning_job") if meta.get("search_space_id") == space_id else None
            request = tuning_job_request(
                job, name, snapshot, search_space, code_uri, model_data, parent, pool_uri
            )
            created = sagemaker.create_tuning_job(request)
        else:
            request = training_job_request(
                job, name, snapshot, search_space, code_uri, model_data, pool_uri
            )
            created = sagemaker.create_training_job(request)
    except QuotaExceeded as exc:  # the preflight could not see it (or the quota just changed)
        return StartResult(
            False,
            f"SageMaker refused the job for a quota: {exc}; {verdict.message}",
            name,
            kind,
            snapshot.snapshot_id,
            new_labels,
            preflight=verdict.as_dict(),
        )
    if created:
        record = {
            "started_at": now_iso(),
            "snapshot_id": snapshot.snapshot_id,
            "job_name": name,
            "kind": kind,
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
        kind,
        snapshot.snapshot_id,
        new_labels,
        created,
        verdict.as_dict(),
    )
