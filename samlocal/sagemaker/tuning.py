"""Hyperparameter tuning jobs, driven by optuna over the job's own ParameterRanges.

Strategy -> sampler: Bayesian -> TPE, Random -> Random, Grid -> Grid (categorical
and integer ranges), Hyperband -> Random + HyperbandPruner on the objective
metric reported each epoch (a pruned trial's process is stopped, its job shows
Stopped, as SageMaker's early stopping does). TrainingJobEarlyStoppingType=Auto
with another strategy uses the median rule (MedianPruner), like SageMaker's.

The optuna study lives in <data_dir>/tuning/<job>/study.journal, so a restarted
service re-attaches to running trials and carries on.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from .protocol import AwsError, arn, in_use, now, page, public, sort_filter, validation

if TYPE_CHECKING:
    from .service import LocalSageMaker

log = logging.getLogger("local_sagemaker")
optuna.logging.set_verbosity(optuna.logging.WARNING)

KIND = "hyper-parameter-tuning-job"
CHILD_FIELDS = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "VpcConfig",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)


def distributions(ranges: dict[str, Any], grid: bool = False) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for r in ranges.get("ContinuousParameterRanges") or []:
        if grid:
            raise validation(
                "The Grid search strategy supports only categorical and integer parameter ranges."
            )
        lo, hi = float(r["MinValue"]), float(r["MaxValue"])
        out[r["Name"]] = FloatDistribution(lo, hi, log=r.get("ScalingType") == "Logarithmic")
    for r in ranges.get("IntegerParameterRanges") or []:
        lo, hi = int(r["MinValue"]), int(r["MaxValue"])
        out[r["Name"]] = IntDistribution(lo, hi, log=r.get("ScalingType") == "Logarithmic")
    for r in ranges.get("CategoricalParameterRanges") or []:
        out[r["Name"]] = CategoricalDistribution(list(r["Values"]))
    if not out:
        raise validation("ParameterRanges must define at least one range.")
    return out


def grid_space(dists: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    for name, d in dists.items():
        if isinstance(d, IntDistribution):
            space[name] = list(range(d.low, d.high + 1))
        elif isinstance(d, CategoricalDistribution):
            space[name] = list(d.choices)
    return space


def hp_string(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def from_hp_string(value: str, d: BaseDistribution) -> Any:
    if isinstance(d, FloatDistribution):
        v: Any = float(value)
    elif isinstance(d, IntDistribution):
        v = int(float(value))
    else:
        v = value
    if not d._contains(d.to_internal_repr(v)):
        raise ValueError(f"{value} outside {d}")
    return v


class Tuning:
    def __init__(self, svc: LocalSageMaker) -> None:
        self.svc = svc
        self.store = svc.store
        self.drivers: dict[str, Driver] = {}

    def arn(self, name: str) -> str:
        return arn(self.svc.region, self.svc.account, KIND, name)

    def get(self, name: str) -> dict[str, Any]:
        rec = self.store.get(KIND, name)
        if rec is None:
            raise AwsError(
                "ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}"
            )
        return rec

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("HyperParameterTuningJobName") or ""
        if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name):
            raise validation(
                f"Invalid HyperParameterTuningJobName: {name!r} (at most 32 characters)"
            )
        config = body["HyperParameterTuningJobConfig"]
        definition = body.get("TrainingJobDefinition")
        if definition is None:
            defs = body.get("TrainingJobDefinitions") or []
            if len(defs) != 1:
                raise validation(
                    "The local SageMaker supports exactly one training job definition."
                )
            definition = defs[0]
        strategy = config.get("Strategy", "Bayesian")
        if strategy not in ("Bayesian", "Random", "Grid", "Hyperband"):
            raise validation(f"Unsupported Strategy {strategy}")
        ranges = config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {}
        dists = distributions(ranges, grid=strategy == "Grid")
        objective = config.get("HyperParameterTuningJobObjective") or definition.get(
            "TuningObjective"
        )
        if not objective:
            raise validation("HyperParameterTuningJobObjective is required.")
        metrics = (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        if objective["MetricName"] not in [m["Name"] for m in metrics]:
            raise validation(
                f"The objective metric {objective['MetricName']} is not in MetricDefinitions."
            )
        limits = config.get("ResourceLimits") or {}
        max_jobs = limits.get("MaxNumberOfTrainingJobs")
        if strategy == "Grid":
            size = math.prod(len(v) for v in grid_space(dists).values())
            max_jobs = min(max_jobs or size, size)
        if not max_jobs:
            raise validation(
                "ResourceLimits.MaxNumberOfTrainingJobs is required for this strategy."
            )
        t = now()
        record = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": self.arn(name),
            "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": definition,
            "WarmStartConfig": body.get("WarmStartConfig"),
            "HyperParameterTuningJobStatus": "InProgress",
            "CreationTime": t,
            "LastModifiedTime": t,
            "_tags": body.get("Tags") or [],
            "_objective": objective,
            "_max_jobs": int(max_jobs),
            "_trials": {},  # child job name -> optuna trial number
        }
        with self.store.lock:
            if self.store.get(KIND, name) is not None:
                raise in_use(f"Tuning job {name} already exists")
            self.store.put(KIND, name, record)
        self.emit(name)
        self._start_driver(name)
        return {"HyperParameterTuningJobArn": record["HyperParameterTuningJobArn"]}

    # ---- read side ----

    def children(self, name: str) -> list[dict[str, Any]]:
        rec = self.get(name)
        jobs = [self.store.get("training-job", j) for j in rec.get("_trials", {})]
        return [self._summary(rec, j) for j in jobs if j is not None]

    def _summary(self, tuning: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
        objective = tuning["_objective"]
        tuned = job.get("_tuned", {})
        series = (job.get("_metric_series") or {}).get(objective["MetricName"]) or []
        status = job["TrainingJobStatus"]
        out: dict[str, Any] = {
            "TrainingJobName": job["TrainingJobName"],
            "TrainingJobArn": job["TrainingJobArn"],
            "TuningJobName": tuning["HyperParameterTuningJobName"],
            "CreationTime": job["CreationTime"],
            "TrainingStartTime": job.get("TrainingStartTime"),
            "TrainingEndTime": job.get("TrainingEndTime"),
            "TrainingJobStatus": status,
            "TunedHyperParameters": tuned,
            "FailureReason": job.get("FailureReason"),
        }
        if series and status in ("Completed", "Stopped"):
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": objective["Type"],
                "MetricName": objective["MetricName"],
                "Value": series[-1],
            }
            out["ObjectiveStatus"] = "Succeeded"
        elif status in ("InProgress", "Stopping"):
            out["ObjectiveStatus"] = "Pending"
        else:
            out["ObjectiveStatus"] = "Failed"
        return public(out)

    def best(self, tuning: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any] | None:
        done = [
            c
            for c in children
            if c["TrainingJobStatus"] == "Completed"
            and "FinalHyperParameterTuningJobObjectiveMetric" in c
        ]
        if not done:
            return None
        sign = 1 if tuning["_objective"]["Type"] == "Maximize" else -1
        return max(
            done, key=lambda c: sign * c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        )

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        children = self.children(name)
        out = public(rec)
        counts = {
            s: sum(c["TrainingJobStatus"] == s for c in children)
            for s in ("Completed", "InProgress", "Stopped", "Failed", "Stopping")
        }
        out["TrainingJobStatusCounters"] = {
            "Completed": counts["Completed"],
            "InProgress": counts["InProgress"] + counts["Stopping"],
            "RetryableError": 0,
            "NonRetryableError": counts["Failed"],
            "Stopped": counts["Stopped"],
        }
        out["ObjectiveStatusCounters"] = {
            s: sum(c["ObjectiveStatus"] == s for c in children)
            for s in ("Succeeded", "Pending", "Failed")
        }
        best = self.best(rec, children)
        if best:
            out["BestTrainingJob"] = best
        return out

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        items = []
        for r in self.store.all(KIND):
            d = self.describe(r["HyperParameterTuningJobName"])
            items.append(
                public(
                    {
                        "HyperParameterTuningJobName": d["HyperParameterTuningJobName"],
                        "HyperParameterTuningJobArn": d["HyperParameterTuningJobArn"],
                        "HyperParameterTuningJobStatus": d["HyperParameterTuningJobStatus"],
                        "Strategy": d["HyperParameterTuningJobConfig"].get("Strategy", "Bayesian"),
                        "CreationTime": d["CreationTime"],
                        "HyperParameterTuningEndTime": d.get("HyperParameterTuningEndTime"),
                        "LastModifiedTime": d.get("LastModifiedTime"),
                        "TrainingJobStatusCounters": d["TrainingJobStatusCounters"],
                        "ObjectiveStatusCounters": d["ObjectiveStatusCounters"],
                        "ResourceLimits": d["HyperParameterTuningJobConfig"].get("ResourceLimits"),
                    }
                )
            )
        items = sort_filter(
            items,
            body,
            "HyperParameterTuningJobName",
            "HyperParameterTuningJobStatus",
            default_sort="Name",
            default_order="Ascending",
        )
        return page(items, body, "HyperParameterTuningJobSummaries")

    def list_children(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["HyperParameterTuningJobName"]
        items = self.children(name)
        if body.get("StatusEquals"):
            items = [c for c in items if c["TrainingJobStatus"] == body["StatusEquals"]]
        sort_by = body.get("SortBy") or "Name"
        reverse = (body.get("SortOrder") or "Ascending") == "Descending"
        if sort_by == "FinalObjectiveMetricValue":
            items = [c for c in items if "FinalHyperParameterTuningJobObjectiveMetric" in c]
            items.sort(
                key=lambda c: c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                reverse=reverse,
            )
        else:
            key = {
                "Name": "TrainingJobName",
                "CreationTime": "CreationTime",
                "Status": "TrainingJobStatus",
            }[sort_by]
            items.sort(key=lambda c: c[key], reverse=reverse)
        return page(items, body, "TrainingJobSummaries")

    # ---- write side ----

    def stop(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        if rec["HyperParameterTuningJobStatus"] != "InProgress":
            raise validation(
                f"The tuning job {name} is in status {rec['HyperParameterTuningJobStatus']}."
            )
        self.store.update(
            KIND, name, HyperParameterTuningJobStatus="Stopping", LastModifiedTime=now()
        )
        self.emit(name)
        driver = self.drivers.get(name)
        if driver and driver.is_alive():
            driver.stop_requested.set()
            with driver.cond:
                driver.cond.notify_all()
        else:
            self._finish(name, "Stopped")
        return {}

    def _finish(self, name: str, status: str, reason: str | None = None) -> None:
        t = now()
        self.store.update(
            KIND,
            name,
            HyperParameterTuningJobStatus=status,
            HyperParameterTuningEndTime=t,
            LastModifiedTime=t,
            FailureReason=reason,
        )
        log.info("tuning job %s %s", name, status)
        self.emit(name)

    def emit(self, name: str) -> None:
        rec = self.get(name)
        detail = self.describe(name)
        detail["Tags"] = {t["Key"]: t["Value"] for t in rec.get("_tags", [])}
        self.svc.events.emit(
            "SageMaker HyperParameter Tuning Job State Change",
            rec["HyperParameterTuningJobArn"],
            detail,
        )

    def on_training_finished(self, job: str) -> None:
        pass  # drivers wait on their children directly

    def _start_driver(self, name: str) -> None:
        driver = Driver(self, name)
        self.drivers[name] = driver
        driver.start()

    def resume_all(self) -> None:
        for rec in self.store.all(KIND):
            name = rec["HyperParameterTuningJobName"]
            if rec["HyperParameterTuningJobStatus"] == "Stopping":
                for job in rec.get("_trials", {}):
                    self.svc.training.request_stop(job)
                self._finish(name, "Stopped")
            elif rec["HyperParameterTuningJobStatus"] == "InProgress":
                log.info("resuming tuning job %s", name)
                self._start_driver(name)

    def shutdown(self) -> None:
        for driver in list(self.drivers.values()):
            driver.shutdown.set()
            with driver.cond:
                driver.cond.notify_all()
        for driver in list(self.drivers.values()):
            driver.join(timeout=30)


class Driver(threading.Thread):
    """Asks optuna for trials, runs each as a child training job, tells it the outcome."""

    def __init__(self, tuning: Tuning, name: str) -> None:
        super().__init__(name=f"sm-tune-{name}", daemon=True)
        self.tu = tuning
        self.svc = tuning.svc
        self.name_ = name
        self.stop_requested = threading.Event()
        self.shutdown = threading.Event()
        self.cond = threading.Condition()
        self.running: set[str] = set()
        self.optuna_lock = threading.Lock()
        self._pruned: dict[str, dict[str, bool]] = {}

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            log.exception("tuning job %s crashed", self.name_)
            if not self.shutdown.is_set():
                self.tu._finish(
                    self.name_, "Failed", f"InternalServerError: {type(e).__name__}: {e}"
                )

    def _study(self, rec: dict[str, Any]) -> optuna.Study:
        config = rec["HyperParameterTuningJobConfig"]
        strategy = config.get("Strategy", "Bayesian")
        seed = config.get("RandomSeed")
        if strategy == "Grid":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(
                grid_space(self.dists), seed=seed
            )
        elif strategy == "Bayesian":
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=min(5, max(1, rec["_max_jobs"] // 3))
            )
        else:
            sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner: optuna.pruners.BasePruner
        if strategy == "Hyperband":
            hb = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
            pruner = optuna.pruners.HyperbandPruner(
                min_resource=int(hb.get("MinResource") or 1),
                max_resource=int(hb["MaxResource"]) if hb.get("MaxResource") else "auto",
            )
        elif config.get("TrainingJobEarlyStoppingType") == "Auto":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        else:
            pruner = optuna.pruners.NopPruner()
        folder = self.svc.data_dir / "tuning" / self.name_
        folder.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
        direction = "maximize" if rec["_objective"]["Type"] == "Maximize" else "minimize"
        return optuna.create_study(
            study_name=self.name_,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            load_if_exists=True,
        )

    def _warm_start(self, rec: dict[str, Any], study: optuna.Study) -> None:
        warm = rec.get("WarmStartConfig") or {}
        for parent in warm.get("ParentHyperParameterTuningJobs") or []:
            pname = parent["HyperParameterTuningJobName"]
            if self.svc.store.get(KIND, pname) is None:
                continue
            for child in self.tu.children(pname):
                metric = child.get("FinalHyperParameterTuningJobObjectiveMetric")
                if child["TrainingJobStatus"] != "Completed" or not metric:
                    continue
                try:
                    params = {
                        k: from_hp_string(child["TunedHyperParameters"][k], d)
                        for k, d in self.dists.items()
                    }
                except (KeyError, ValueError):
                    continue  # a parent trial outside this job's ranges
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=self.dists, value=metric["Value"]
                    )
                )

    def _run(self) -> None:
        rec = self.tu.get(self.name_)
        config = rec["HyperParameterTuningJobConfig"]
        definition = rec["TrainingJobDefinition"]
        ranges = config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {}
        self.dists = distributions(ranges, grid=config.get("Strategy") == "Grid")
        study = self._study(rec)
        if not study.trials and rec.get("WarmStartConfig"):
            self._warm_start(rec, study)
        by_number = {t.number: t for t in study.trials}
        # re-attach to the trials that were running when the service stopped
        for job, number in rec.get("_trials", {}).items():
            frozen = by_number.get(number)
            if frozen is not None and frozen.state == TrialState.RUNNING:
                self._watch(study, job, frozen._trial_id, set(frozen.intermediate_values))
        limits = config.get("ResourceLimits") or {}
        parallel = max(
            1, min(int(limits.get("MaxParallelTrainingJobs") or 1), self.svc.max_parallel_trials)
        )
        target = (config.get("TuningJobCompletionCriteria") or {}).get("TargetObjectiveMetricValue")
        while True:
            with self.cond:
                self.cond.wait_for(
                    lambda: len(self.running) < parallel
                    or self.stop_requested.is_set()
                    or self.shutdown.is_set()
                )
            if self.shutdown.is_set():
                return
            if self.stop_requested.is_set() or self._target_reached(study, rec, target):
                break
            rec = self.tu.get(self.name_)
            index = len(rec["_trials"]) + 1
            if index > rec["_max_jobs"]:
                break
            if config.get("Strategy") == "Grid" and len(study.trials) >= rec["_max_jobs"]:
                break
            with self.optuna_lock:
                trial = study.ask(self.dists)
            job = f"{self.name_}-{index:03d}-{secrets.token_hex(4)}"
            trials = dict(rec["_trials"])
            trials[job] = trial.number
            self.svc.store.update(KIND, self.name_, _trials=trials, LastModifiedTime=now())
            self._launch(study, job, trial, rec)
        # wait for what is still running (stop them first if asked to stop)
        if self.stop_requested.is_set():
            for job in list(self.running):
                self.svc.training.request_stop(job)
        with self.cond:
            self.cond.wait_for(lambda: not self.running or self.shutdown.is_set())
        if self.shutdown.is_set():
            return
        if self.stop_requested.is_set():
            self.tu._finish(self.name_, "Stopped")
            return
        children = self.tu.children(self.name_)
        if self.tu.best(self.tu.get(self.name_), children) is None:
            self.tu._finish(
                self.name_,
                "Failed",
                f"No training job succeeded after {len(children)} attempts. Please take a look "
                "at the training job failures to get more details.",
            )
        else:
            self.tu._finish(self.name_, "Completed")

    def _target_reached(
        self, study: optuna.Study, rec: dict[str, Any], target: float | None
    ) -> bool:
        if target is None:
            return False
        best = self.tu.best(rec, self.tu.children(self.name_))
        if not best:
            return False
        value = best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        return value >= target if rec["_objective"]["Type"] == "Maximize" else value <= target

    def _launch(
        self, study: optuna.Study, job: str, trial: optuna.Trial, rec: dict[str, Any]
    ) -> None:
        definition = rec["TrainingJobDefinition"]
        tuned = {k: hp_string(v) for k, v in trial.params.items()}
        body = {k: definition[k] for k in CHILD_FIELDS if k in definition}
        body["TrainingJobName"] = job
        body["HyperParameters"] = {**(definition.get("StaticHyperParameters") or {}), **tuned}
        body["Tags"] = rec.get("_tags") or []
        if body.get("CheckpointConfig"):  # trials must not resume from each other's checkpoints
            body["CheckpointConfig"] = {
                **body["CheckpointConfig"],
                "S3Uri": body["CheckpointConfig"]["S3Uri"].rstrip("/") + f"/{job}/",
            }
        with self.cond:
            self.running.add(job)
        try:
            self.svc.training.create(
                body,
                tuning_job_arn=rec["HyperParameterTuningJobArn"],
                listeners=[self._listener(study, job, trial._trial_id)],
            )
            self.svc.store.update("training-job", job, _tuned=tuned)
        except Exception as e:
            log.warning("could not start trial %s: %s", job, e)
            with self.optuna_lock:
                study.tell(trial, state=TrialState.FAIL)
            with self.cond:
                self.running.discard(job)
                self.cond.notify_all()
            return
        threading.Thread(target=self._wait, args=(study, job, trial._trial_id), daemon=True).start()

    def _listener(
        self, study: optuna.Study, job: str, trial_id: int, reported: set[int] | None = None
    ) -> Any:
        metric_name = self.tu.get(self.name_)["_objective"]["MetricName"]
        trial = optuna.Trial(study, trial_id)
        state = self._pruned.setdefault(job, {"pruned": False})

        def on_metric(name: str, value: float, index: int) -> None:
            log.debug("trial %s metric %s=%s step %d", job, name, value, index + 1)
            if name != metric_name or state["pruned"] or index + 1 in (reported or ()):
                return
            with self.optuna_lock:
                trial.report(value, step=index + 1)
                prune = trial.should_prune()
            if prune:
                state["pruned"] = True
                log.info("pruning trial %s at step %d (%s=%s)", job, index + 1, name, value)
                self.svc.training.request_stop(job)

        return on_metric

    def _watch(self, study: optuna.Study, job: str, trial_id: int, reported: set[int]) -> None:
        with self.cond:
            self.running.add(job)
        listener = self._listener(study, job, trial_id, reported)
        rec = self.svc.store.get("training-job", job) or {}
        metric = self.tu.get(self.name_)["_objective"]["MetricName"]
        for i, v in enumerate((rec.get("_metric_series") or {}).get(metric) or []):
            listener(metric, v, i)
        self.svc.training.add_listener(job, listener)
        threading.Thread(target=self._wait, args=(study, job, trial_id), daemon=True).start()

    def _wait(self, study: optuna.Study, job: str, trial_id: int) -> None:
        try:
            while not self.shutdown.is_set():
                rec = self.svc.training.wait(job, timeout=0.5)
                if rec["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                    break
            else:
                return
            tuning = self.tu.get(self.name_)
            summary = self.tu._summary(tuning, rec)
            metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
            pruned = self._pruned.get(job, {}).get("pruned", False)
            with self.optuna_lock:
                if pruned:
                    study.tell(
                        trial_id_to_number(study, trial_id),
                        state=TrialState.PRUNED,
                        skip_if_finished=True,
                    )
                elif rec["TrainingJobStatus"] == "Completed" and metric:
                    study.tell(
                        trial_id_to_number(study, trial_id), metric["Value"], skip_if_finished=True
                    )
                else:
                    study.tell(
                        trial_id_to_number(study, trial_id),
                        state=TrialState.FAIL,
                        skip_if_finished=True,
                    )
        except Exception:
            log.exception("trial %s bookkeeping failed", job)
        finally:
            with self.cond:
                self.running.discard(job)
                self.cond.notify_all()


def trial_id_to_number(study: optuna.Study, trial_id: int) -> int:
    return study._storage.get_trial_number_from_id(trial_id)
