"""One default per setting: the template's. The functions, the request builders and train.py's
hyperparameters get every value the template sets from the stack, never from a copy."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
from flywheel.domain.deployment import EndpointSettings
from flywheel.domain.splits import build_snapshot
from flywheel.domain.training import JobSettings, training_job_request, tuning_job_request
from flywheel.services.start_training import job_settings
from flywheel.settings import FUNCTION_SETTINGS
from pydantic import ValidationError
from template_settings import template_environment, template_settings

ROOT = Path(__file__).resolve().parents[2]
TRAIN_PY = ROOT / "training_jobs" / "train.py"
SEARCH_SPACE = json.loads((ROOT / "training_jobs" / "search_space.json").read_text())
# Hyperparameters the search space tunes: a tuning job never takes the stack's value for them
TUNED = {r["Name"] for kind in SEARCH_SPACE["parameter_ranges"].values() for r in kind}
SNAPSHOT = build_snapshot(
    [(f"{i:064x}", "ab"[i % 2], "random" if i % 3 else "selected") for i in range(40)]
)


@pytest.mark.parametrize("logical_id", sorted(FUNCTION_SETTINGS))
def test_every_setting_comes_from_the_template_and_none_has_a_default(logical_id):
    model = FUNCTION_SETTINGS[logical_id]
    env = template_environment(logical_id)
    # Every field is a variable of the function's Environment ...
    assert set(model.model_fields) <= set(env), set(model.model_fields) - set(env)
    # ... so a default beside it would be a second, unused (or diverging) copy of the value
    defaults = {n: f.default for n, f in model.model_fields.items() if not f.is_required()}
    assert defaults == {}, f"{model.__name__} fields with their own default: {defaults}"
    # and the template's values pass the model's bounds
    model.from_env(env)


@pytest.mark.parametrize("logical_id", sorted(FUNCTION_SETTINGS))
def test_a_variable_the_template_does_not_set_is_a_clear_error(logical_id):
    env = template_environment(logical_id)
    for name in FUNCTION_SETTINGS[logical_id].model_fields:
        with pytest.raises(ValidationError, match=f"{name}\n  Field required"):
            FUNCTION_SETTINGS[logical_id].from_env({k: v for k, v in env.items() if k != name})


@pytest.mark.parametrize("request_settings", [JobSettings, EndpointSettings])
def test_the_request_builders_settings_have_no_defaults_either(request_settings):
    with_default = [
        f.name
        for f in dataclasses.fields(request_settings)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]
    assert with_default == []


# ---- train.py's hyperparameters -------------------------------------------------------


def train_py_options() -> set[str]:
    """``--name`` options train.py's parser declares (read from its source: no torch import)."""
    tree = ast.parse(TRAIN_PY.read_text())
    return {
        node.args[0].value[2:]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "add_argument"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and str(node.args[0].value).startswith("--")
    }


def hyperparameters(parameters: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """What start_training sends train.py for a stack with these parameters: the training
    job's HyperParameters and the tuning job's StaticHyperParameters."""
    job = job_settings(template_settings("StartTrainingFunction", parameters), "us-east-1")
    training = training_job_request(job, "dfw-x", SNAPSHOT, SEARCH_SPACE, "s3://c", None)
    tuning = tuning_job_request(job, "dfw-hx", SNAPSHOT, SEARCH_SPACE, "s3://c", None, None)
    return training["HyperParameters"], tuning["TrainingJobDefinition"]["StaticHyperParameters"]


def other_values(spec: dict) -> list[str]:
    """Values of a template parameter other than its default, most plausible first."""
    default = str(spec.get("Default", ""))
    if "AllowedValues" in spec:
        return [str(v) for v in spec["AllowedValues"] if str(v) != default]
    if spec.get("Type") == "Number":
        number = float(default)
        if number.is_integer() and "." not in default:
            return [str(int(number) + 1), str(int(number) - 1)]
        return [str(number / 2), str(number + 1)]
    return [default + "x"]


def valid_other_value(name: str, spec: dict) -> str | None:
    for value in other_values(spec):
        try:
            hyperparameters({name: value})
        except (ValueError, ValidationError):  # the template or a settings bound refuses it
            continue
        return value
    return None


def same_value(sent: str, stack: str) -> bool:
    try:
        return float(sent) == float(stack)
    except ValueError:
        return sent.lower() == stack.lower()


def test_start_training_passes_every_hyperparameter_the_template_sets_explicitly(raw_template):
    # Given the template parameters start_training's Environment reads
    params = raw_template["Parameters"]
    env = raw_template["Resources"]["StartTrainingFunction"]["Properties"]["Environment"]
    referenced = sorted(
        v["Ref"]
        for v in env["Variables"].values()
        if isinstance(v, dict) and v.get("Ref") in params
    )
    base_training, base_tuning = hyperparameters({})
    options = train_py_options()
    reached: dict[str, str] = {}
    unchanged = []
    for name in referenced:
        # When one of them takes another value
        value = valid_other_value(name, params[name])
        if value is None:
            unchanged.append(name)
            continue
        training, tuning = hyperparameters({name: value})
        changed = {
            k
            for k in training.keys() | base_training.keys()
            if training.get(k) != base_training.get(k)
        }
        changed |= {
            k for k in tuning.keys() | base_tuning.keys() if tuning.get(k) != base_tuning.get(k)
        }
        changed -= {"sagemaker_submit_directory", "sagemaker_region"}
        for key in changed:
            reached[key] = name
            # Then train.py gets the stack's value, under a flag it has,
            assert key in options, f"{name} reaches hyperparameter {key}, not a train.py flag"
            if key in TUNED:  # (TrainingArch: a tuning job's search space tunes arch itself)
                assert same_value(training[key], value) and key not in tuning, (name, key)
                assert key in base_training, (name, key)
                continue
            assert same_value(training[key], value) and same_value(tuning[key], value), (
                name,
                key,
            )
            # and at the default too, so train.py's own CLI default never decides
            assert key in base_training and key in base_tuning, (name, key)
            # and search_space.json does not carry a value the stack always replaces
            assert key not in (SEARCH_SPACE.get("static_hyperparameters") or {}), key
    # Only constrained strings (image URIs, name prefixes) may resist a generic other value
    assert all("AllowedPattern" in params[n] for n in unchanged), unchanged
    assert reached, "no template parameter reaches train.py: the test lost its subject"
