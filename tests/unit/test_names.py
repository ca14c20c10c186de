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
