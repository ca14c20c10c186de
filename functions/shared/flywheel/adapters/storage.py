"""S3 access."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from flywheel.adapters.aws import client, error_code
from flywheel.errors import InvalidArtifact


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3 uri: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def get_with_metadata(
    bucket: str, key: str, version_id: str | None = None
) -> tuple[bytes, str, dict[str, str]] | None:
    """(body, etag, S3 user metadata) or None when the object (or that version of it) is gone."""
    version = {"VersionId": version_id} if version_id else {}
    try:
        obj = client("s3").get_object(Bucket=bucket, Key=key, **version)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
            return None
        raise
    return obj["Body"].read(), obj.get("ETag", "").strip('"'), dict(obj.get("Metadata") or {})


@dataclass(frozen=True)
class Stored:
    """An object's bytes and what identifies that upload of them."""

    body: bytes
    etag: str
    version_id: str | None
    last_modified: datetime | None


def get_stored(bucket: str, key: str) -> Stored | None:
    """The current object with its ETag, version id and Last-Modified; None when gone."""
    try:
        obj = client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    return Stored(
        obj["Body"].read(),
        obj.get("ETag", "").strip('"'),
        obj.get("VersionId"),
        obj.get("LastModified"),
    )


def get_bytes(bucket: str, key: str, version_id: str | None = None) -> tuple[bytes, str] | None:
    """(body, etag) or None when the object (or that version of it) is gone."""
    got = get_with_metadata(bucket, key, version_id)
    return (got[0], got[1]) if got else None


READ_THREADS = 8  # parallel GetObject calls of one batch (each mostly waits on the network)


def get_many(bucket: str, keys: Iterable[str]) -> dict[str, bytes | None | Exception]:
    """Bodies of ``keys`` read in parallel: bytes, None when the object is gone, or the
    exception of that one read (the others are unaffected)."""

    def read(key: str) -> bytes | None | Exception:
        try:
            got = get_with_metadata(bucket, key)
        except Exception as exc:  # noqa: BLE001 - returned, for this key only
            return exc
        return got[0] if got else None

    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    with ThreadPoolExecutor(min(READ_THREADS, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(read, wanted), strict=True))


def get_text(bucket: str, key: str) -> str | None:
    got = get_bytes(bucket, key)
    return got[0].decode("utf-8-sig") if got else None


def exists(bucket: str, key: str) -> bool:
    try:
        client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def put_bytes(bucket: str, key: str, body: bytes, content_type: str) -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def put_json(bucket: str, key: str, doc: Any) -> None:
    put_bytes(bucket, key, json.dumps(doc, indent=1, default=str).encode(), "application/json")


def copy(bucket: str, source_key: str, target_key: str) -> None:
    """Server-side copy inside the bucket (no bytes through Lambda)."""
    client("s3").copy_object(
        Bucket=bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": source_key}
    )


# A model artifact that is not there: retrying will not make it appear (read_tar_member).
_ARTIFACT_ABSENT = {"NoSuchKey", "NoSuchBucket"}


def read_tar_member(uri: str, member: str) -> bytes:
    """Stream a model.tar.gz and return one member (e.g. metrics.json) without a full download.

    An artifact that is absent or not a gzipped tar is an InvalidArtifact (retrying changes
    nothing); any other S3 error (throttling, a 5xx) is raised as it is, to be retried.
    """
    bucket, key = parse_s3_uri(uri)
    try:
        body = client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as exc:
        if error_code(exc) in _ARTIFACT_ABSENT:
            raise InvalidArtifact(f"cannot read {uri}: {error_code(exc)}") from exc
        raise
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as tar:
            for info in tar:
                if info.isfile() and info.name.lstrip("./") == member:
                    handle = tar.extractfile(info)
                    if handle is not None:
                        return handle.read()
    except tarfile.TarError as exc:  # not gzip, corrupt, truncated: all tarfile.ReadError
        raise InvalidArtifact(f"{uri} is not a readable tar.gz: {exc}") from exc
    raise InvalidArtifact(f"{member} not found in {uri}")


def presigned_get(bucket: str, key: str, expires_s: int) -> str:
    """A short-lived GET URL for one object (signed locally; no request is made)."""
    return str(
        client("s3").generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_s
        )
    )
