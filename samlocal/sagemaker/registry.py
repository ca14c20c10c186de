"""Model registry (model package groups and versioned packages) and resource tags: state only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import AwsError, arn, now, page, public, sort_filter, validation

if TYPE_CHECKING:
    from .service import LocalSageMaker

# kind -> the record field holding its ARN
ARN_FIELDS = {
    "training-job": "TrainingJobArn",
    "hyper-parameter-tuning-job": "HyperParameterTuningJobArn",
    "model": "ModelArn",
    "endpoint-config": "EndpointConfigArn",
    "endpoint": "EndpointArn",
    "model-package-group": "ModelPackageGroupArn",
    "model-package": "ModelPackageArn",
}


class Registry:
    def __init__(self, svc: LocalSageMaker) -> None:
        self.svc = svc
        self.store = svc.store

    def _arn(self, kind: str, name: str) -> str:
        return arn(self.svc.region, self.svc.account, kind, name)

    # ---- groups ----

    def create_group(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["ModelPackageGroupName"]
        with self.store.lock:
            if self.store.get("model-package-group", name):
                raise validation(
                    f"Model Package Group already exists: {self._arn('model-package-group', name)}"
                )
            rec = {
                "ModelPackageGroupName": name,
                "ModelPackageGroupArn": self._arn("model-package-group", name),
                "ModelPackageGroupDescription": body.get("ModelPackageGroupDescription"),
                "CreationTime": now(),
                "CreatedBy": {},
                "ModelPackageGroupStatus": "Completed",
                "_tags": body.get("Tags") or [],
            }
            self.store.put("model-package-group", name, rec)
        return {"ModelPackageGroupArn": rec["ModelPackageGroupArn"]}

    def _group_name(self, name_or_arn: str) -> str:
        return name_or_arn.split("/")[-1] if name_or_arn.startswith("arn:") else name_or_arn

    def describe_group(self, name: str) -> dict[str, Any]:
        rec = self.store.get("model-package-group", self._group_name(name))
        if rec is None:
            raise validation(f"ModelPackageGroup {name} does not exist.")
        return public(rec)

    def list_groups(self, body: dict[str, Any]) -> dict[str, Any]:
        items = [
            {
                k: r.get(k)
                for k in (
                    "ModelPackageGroupName",
                    "ModelPackageGroupArn",
                    "ModelPackageGroupDescription",
                    "CreationTime",
                    "ModelPackageGroupStatus",
                )
            }
            for r in self.store.all("model-package-group")
        ]
        return page(
            sort_filter(
                [public(i) for i in items], body, "ModelPackageGroupName", default_order="Ascending"
            ),
            body,
            "ModelPackageGroupSummaryList",
        )

    def delete_group(self, name: str) -> dict[str, Any]:
        rec = self.describe_group(name)
        if any(
            p.get("ModelPackageGroupName") == rec["ModelPackageGroupName"]
            for p in self.store.all("model-package")
        ):
            raise AwsError("ConflictException", "Model Package Group still contains model packages")
        self.store.delete("model-package-group", rec["ModelPackageGroupName"])
        return {}

    # ---- packages ----

    def create_package(self, body: dict[str, Any]) -> dict[str, Any]:
        group = body.get("ModelPackageGroupName")
        t = now()
        token = body.get("ClientToken")
        with self.store.lock:
            if group:
                group = self._group_name(group)
                if self.store.get("model-package-group", group) is None:
                    raise validation(f"ModelPackageGroup {group} does not exist.")
                for p in self.store.all("model-package"):  # the call made again: same package
                    if token and (p.get("ModelPackageGroupName"), p.get("_client_token")) == (
                        group,
                        token,
                    ):
                        return {"ModelPackageArn": p["ModelPackageArn"]}
                version = 1 + max(
                    (
                        p["ModelPackageVersion"]
                        for p in self.store.all("model-package")
                        if p.get("ModelPackageGroupName") == group
                    ),
                    default=0,
                )
                key = f"{group}/{version}"
                rec: dict[str, Any] = {
                    "ModelPackageName": group,
                    "ModelPackageGroupName": group,
                    "ModelPackageVersion": version,
                }
            else:
                key = body.get("ModelPackageName") or ""
                if not key:
                    raise validation(
                        "Either ModelPackageName or ModelPackageGroupName must be specified."
                    )
                if self.store.get("model-package", key):
                    raise AwsError("ConflictException", f"Model package {key} already exists.")
                rec = {"ModelPackageName": key}
            rec.update(
                {
                    k: v
                    for k, v in body.items()
                    if k not in ("Tags", "ClientToken", "ModelPackageGroupName", "ModelPackageName")
                }
            )
            rec.update(
                ModelPackageArn=self._arn("model-package", key),
                CreationTime=t,
                LastModifiedTime=t,
                ModelPackageStatus="Completed",
                ModelPackageStatusDetails={"ValidationStatuses": [], "ImageScanStatuses": []},
                ModelApprovalStatus=body.get("ModelApprovalStatus")
                or ("PendingManualApproval" if group else None),
                _tags=body.get("Tags") or [],
                _client_token=token,
            )
            self.store.put("model-package", key, rec)
        return {"ModelPackageArn": rec["ModelPackageArn"]}

    def _find_package(self, name_or_arn: str) -> dict[str, Any]:
        for rec in self.store.all("model-package"):
            if name_or_arn in (rec["_key"], rec["ModelPackageArn"]) or (
                "ModelPackageVersion" not in rec and rec["ModelPackageName"] == name_or_arn
            ):
                return rec
        raise validation(f"ModelPackage {name_or_arn} does not exist.")

    def describe_package(self, name: str) -> dict[str, Any]:
        return public(self._find_package(name))

    def update_package(self, body: dict[str, Any]) -> dict[str, Any]:
        rec = self._find_package(body["ModelPackageArn"])
        changes = {
            k: v
            for k, v in body.items()
            if k
            not in (
                "ModelPackageArn",
                "ClientToken",
                "CustomerMetadataPropertiesToRemove",
                "AdditionalInferenceSpecificationsToAdd",
            )
        }
        if "CustomerMetadataPropertiesToRemove" in body:
            props = dict(rec.get("CustomerMetadataProperties") or {})
            for k in body["CustomerMetadataPropertiesToRemove"]:
                props.pop(k, None)
            changes["CustomerMetadataProperties"] = props
        if body.get("AdditionalInferenceSpecificationsToAdd"):
            changes["AdditionalInferenceSpecifications"] = (
                rec.get("AdditionalInferenceSpecifications") or []
            ) + body["AdditionalInferenceSpecificationsToAdd"]
        self.store.update("model-package", rec["_key"], LastModifiedTime=now(), **changes)
        return {"ModelPackageArn": rec["ModelPackageArn"]}

    def list_packages(self, body: dict[str, Any]) -> dict[str, Any]:
        group = (
            self._group_name(body["ModelPackageGroupName"])
            if body.get("ModelPackageGroupName")
            else None
        )
        kind = body.get("ModelPackageType") or "Both"
        items = []
        for r in self.store.all("model-package"):
            versioned = "ModelPackageVersion" in r
            if group and r.get("ModelPackageGroupName") != group:
                continue
            if not group and kind == "Both" and versioned:
                pass
            if (kind == "Versioned" and not versioned) or (kind == "Unversioned" and versioned):
                continue
            if (
                body.get("ModelApprovalStatus")
                and r.get("ModelApprovalStatus") != body["ModelApprovalStatus"]
            ):
                continue
            items.append(
                public(
                    {
                        k: r.get(k)
                        for k in (
                            "ModelPackageName",
                            "ModelPackageGroupName",
                            "ModelPackageVersion",
                            "ModelPackageArn",
                            "ModelPackageDescription",
                            "CreationTime",
                            "ModelPackageStatus",
                            "ModelApprovalStatus",
                        )
                    }
                )
            )
        return page(
            sort_filter(items, body, "ModelPackageName", default_order="Ascending"),
            body,
            "ModelPackageSummaryList",
        )

    def delete_package(self, name: str) -> dict[str, Any]:
        rec = self._find_package(name)
        self.store.delete("model-package", rec["_key"])
        return {}

    # ---- tags ----

    def _by_arn(self, resource_arn: str) -> tuple[str, str]:
        for kind, field in ARN_FIELDS.items():
            for rec in self.store.all(kind):
                if rec.get(field, "").lower() == resource_arn.lower():
                    return kind, rec["_key"]
        raise validation(f"Resource {resource_arn} does not exist.")

    def add_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.store.lock:
            kind, key = self._by_arn(body["ResourceArn"])
            tags = {
                t["Key"]: t["Value"] for t in (self.store.get(kind, key) or {}).get("_tags", [])
            }
            tags.update({t["Key"]: t["Value"] for t in body["Tags"]})
            self.store.update(kind, key, _tags=[{"Key": k, "Value": v} for k, v in tags.items()])
        return {"Tags": body["Tags"]}

    def delete_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.store.lock:
            kind, key = self._by_arn(body["ResourceArn"])
            tags = [
                t
                for t in (self.store.get(kind, key) or {}).get("_tags", [])
                if t["Key"] not in body["TagKeys"]
            ]
            self.store.update(kind, key, _tags=tags)
        return {}

    def list_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        kind, key = self._by_arn(body["ResourceArn"])
        return page((self.store.get(kind, key) or {}).get("_tags", []), body, "Tags")
