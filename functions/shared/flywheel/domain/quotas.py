"""SageMaker training quota preflight (pure): may this account run the job we are about to start?

A new account often has a quota of 0 for GPU training instances and for spot training; the
job then fails with ``ResourceLimitExceeded`` and nothing says what to change. The inputs
are Service Quotas ``ServiceQuota`` structures for service code ``sagemaker`` (the
``Quotas`` of ListServiceQuotas / ListAWSDefaultServiceQuotas, or GetServiceQuota's
``Quota``), named ``"<instance type> for training job usage"`` and ``"<instance type> for
spot training job usage"``: how many instances of that type all training jobs, tuning
trials included, may use at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

SERVICE_CODE = "sagemaker"
# Suggested when the chosen type has no quota: the CPU type new accounts usually have.
CPU_FALLBACK = "ml.m5.xlarge"

Status = Literal["ok", "insufficient", "unknown"]


def training_quota_name(instance_type: str, spot: bool) -> str:
    return f"{instance_type} for {'spot ' if spot else ''}training job usage"


@dataclass(frozen=True)
class TrainingNeed:
    """What a job start asks for: ``parallel_jobs`` > 1 for a tuning job's parallel trials."""

    instance_type: str
    instance_count: int = 1
    spot: bool = False
    parallel_jobs: int = 1

    @property
    def instances(self) -> int:
        return self.instance_count * self.parallel_jobs

    @property
    def quota_name(self) -> str:
        return training_quota_name(self.instance_type, self.spot)

    @property
    def usage(self) -> str:
        return f"{self.instance_type} {'spot ' if self.spot else ''}training"


@dataclass(frozen=True)
class QuotaVerdict:
    status: Status
    message: str
    quota_name: str
    needed: int
    value: float | None = None
    quota_code: str | None = None

    @property
    def blocks(self) -> bool:
        """Only a known shortfall stops a job start; an unknown quota never does."""
        return self.status == "insufficient"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wanted_quota_names(need: TrainingNeed) -> list[str]:
    """The quota itself, then the alternatives a shortfall message may suggest."""
    names = [need.quota_name]
    if need.spot:
        names.append(training_quota_name(need.instance_type, False))
    if need.instance_type != CPU_FALLBACK:
        names += [training_quota_name(CPU_FALLBACK, need.spot)]
        if need.spot:
            names.append(training_quota_name(CPU_FALLBACK, False))
    return names


def unchecked(need: TrainingNeed, why: str) -> QuotaVerdict:
    return QuotaVerdict(
        "unknown",
        f"could not check the quota for {need.usage} ({why}); starting anyway",
        need.quota_name,
        need.instances,
    )


def _by_name(quotas: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for quota in quotas:
        name = quota.get("QuotaName")
        # The applied value (ListServiceQuotas) comes first; a default never replaces it.
        if name and name not in out and quota.get("Value") is not None:
            out[name] = quota
    return out


def increase_url(region: str, quota_code: str) -> str:
    return (
        f"https://{region}.console.aws.amazon.com/servicequotas/home/services/"
        f"{SERVICE_CODE}/quotas/{quota_code}"
    )


def _alternatives(found: Mapping[str, Mapping[str, Any]], need: TrainingNeed) -> list[str]:
    def room(instance_type: str, spot: bool) -> float | None:
        quota = found.get(training_quota_name(instance_type, spot))
        return float(quota["Value"]) if quota else None

    options = []
    if need.spot and (value := room(need.instance_type, False)) and value >= need.instances:
        options.append(f"UseSpotTraining=false (on-demand quota {value:g})")
    if need.instance_type != CPU_FALLBACK:
        for spot in dict.fromkeys((need.spot, False)):
            value = room(CPU_FALLBACK, spot)
            if value and value >= need.instances:
                setting = f"TrainingInstanceType={CPU_FALLBACK}"
                if need.spot and not spot:
                    setting += " UseSpotTraining=false"
                options.append(f"{setting} (quota {value:g})")
                break
    current = room(need.instance_type, need.spot) or 0
    if need.parallel_jobs > 1 and current >= need.instance_count:
        options.append(f"MaxParallelTuningJobs={int(current // need.instance_count)}")
    if not options:  # nothing known to fit: still name the usual ways out
        options.append(f"TrainingInstanceType={CPU_FALLBACK}")
        if need.spot:
            options.append("UseSpotTraining=false")
    return options


def check_training_quota(
    quotas: Iterable[Mapping[str, Any]], need: TrainingNeed, region: str
) -> QuotaVerdict:
    """Verdict for ``need`` given the account's sagemaker quotas in ``region``."""
    found = _by_name(quotas)
    quota = found.get(need.quota_name)
    if quota is None:
        return QuotaVerdict(
            "unknown",
            f"no quota named {need.quota_name!r} in {region}: is {need.instance_type} a "
            "training instance type there? Not checked; starting anyway",
            need.quota_name,
            need.instances,
        )
    value, code = float(quota["Value"]), quota.get("QuotaCode")
    if value >= need.instances:
        return QuotaVerdict(
            "ok",
            f"your account's quota for {need.usage} is {value:g} (this job needs {need.instances})",
            need.quota_name,
            need.instances,
            value,
            code,
        )
    wants = f"{need.instances}"
    if need.parallel_jobs > 1:
        wants += f": {need.instance_count} per job x {need.parallel_jobs} parallel tuning jobs"
    where = f"request an increase to {need.instances}"
    if code:
        where += (
            f" at {increase_url(region, code)} (or: aws service-quotas "
            f"request-service-quota-increase --region {region} --service-code {SERVICE_CODE} "
            f"--quota-code {code} --desired-value {need.instances})"
        )
    else:
        where += f" in the Service Quotas console ({SERVICE_CODE}: {need.quota_name!r})"
    return QuotaVerdict(
        "insufficient",
        f"your account's quota for {need.usage} is {value:g} (this job needs {wants}): "
        f"{where}, or set {' / '.join(_alternatives(found, need))}",
        need.quota_name,
        need.instances,
        value,
        code,
    )
