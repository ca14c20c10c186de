"""Job and model names: deterministic, valid characters, SageMaker length limits."""

import re

import pytest
from flywheel.domain import names

VALID = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


@pytest.mark.parametrize("prefix", ["dfw", "a", "abcdefghij"])
def test_training_and_tuning_names_fit_the_limits(prefix):
    snapshot = "0123456789abcdef"
    training = names.training_job_name(prefix, snapshot)
    tuning = names.tuning_job_name(prefix, snapshot)
    assert len(training) <= 63 and VALID.match(training)
    assert len(tuning) <= 32 and VALID.match(tuning)
    assert training == f"{prefix}-{snapshot}"
    assert training != tuning


def test_names_are_deterministic():
    assert names.tuning_job_name("dfw", "ff" * 8) == names.tuning_job_name("dfw", "ff" * 8)


def test_endpoint_config_name_depends_on_variant_settings_and_fits():
    best_child = "dfw-h0123456789abcde-003-1a2b3c4d"
    a = names.endpoint_config_name(best_child, {"ServerlessConfig": {"MemorySizeInMB": 3072}})
    b = names.endpoint_config_name(best_child, {"InstanceType": "ml.m5.large"})
    assert a != b and len(a) <= 63 and VALID.match(a) and a.startswith(best_child)


def test_invalid_names_are_refused():
    with pytest.raises(ValueError):
        names.training_job_name("bad_prefix", "0123")


@pytest.mark.parametrize("attempt", [2, 9, 10, 123])
def test_a_retry_gets_an_attempt_suffix_and_still_fits(attempt):
    snapshot = "0123456789abcdef"
    training = names.training_job_name("abcdefghij", snapshot, attempt)
    tuning = names.tuning_job_name("abcdefghij", snapshot, attempt)
    assert training == f"abcdefghij-{snapshot}-r{attempt}"
    assert tuning.endswith(f"-r{attempt}") and len(tuning) <= 32 and VALID.match(tuning)
    assert len(training) <= 63 and VALID.match(training)
    # deterministic, and distinct from the first attempt and from each other
    assert training == names.training_job_name("abcdefghij", snapshot, attempt)
    assert training != names.training_job_name("abcdefghij", snapshot)
    assert tuning != names.tuning_job_name("abcdefghij", snapshot, attempt + 1)


def test_the_first_attempt_keeps_the_historic_name():
    assert names.training_job_name("dfw", "ab" * 8, 1) == names.training_job_name("dfw", "ab" * 8)
    with pytest.raises(ValueError):
        names.training_job_name("dfw", "ab" * 8, 0)


def test_job_attempt_walks_past_failed_and_stopped_attempts():
    def name_of(n: int) -> str:
        return names.training_job_name("dfw", "ab" * 8, n)

    def statuses(table: dict[str, str]):
        return lambda name: table.get(name)

    first, second, third = name_of(1), name_of(2), name_of(3)
    assert names.job_attempt(name_of, statuses({})) == (first, None)
    assert names.job_attempt(name_of, statuses({first: "InProgress"})) == (first, "InProgress")
    assert names.job_attempt(name_of, statuses({first: "Completed"})) == (first, "Completed")
    assert names.job_attempt(name_of, statuses({first: "Failed"})) == (second, None)
    assert names.job_attempt(name_of, statuses({first: "Failed", second: "Stopped"})) == (
        third,
        None,
    )
    assert names.job_attempt(name_of, lambda _: "Failed", max_attempts=3) == (third, "Failed")
