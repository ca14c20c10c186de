"""Template tier: template.yaml as the SAM translator (what CloudFormation runs) sees it."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAM_VENV = ROOT / ".venv-sam"

from samlocal.cfn import load_template  # noqa: E402


class _NoIamPolicies:
    """Managed policy loader without IAM calls (policies are referenced by ARN already)."""

    @staticmethod
    def load() -> dict[str, str]:
        return {}


@pytest.fixture(scope="session")
def raw_template() -> dict:
    return load_template(ROOT / "template.yaml")


@pytest.fixture(scope="session")
def translated(raw_template) -> dict:
    from samtranslator.translator.transform import transform

    template = copy.deepcopy(raw_template)
    # What `sam package` does before CloudFormation sees it: local paths become S3 URIs.
    for lid, res in template["Resources"].items():
        props = res.get("Properties") or {}
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://sam-artifacts/{lid}.zip"
    params = {
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "AWS::StackName": "dataflywheel",
        "AWS::NoValue": None,
    }
    return transform(template, params, _NoIamPolicies())


@pytest.fixture(scope="session")
def sam_bin() -> Path:
    """The aws-sam-cli venv; a missing one is a failure (the test command creates it)."""
    sam = SAM_VENV / "bin" / "sam"
    if not sam.exists():
        pytest.fail(
            f"{sam} is missing. Create it with: python3.11 -m venv .venv-sam && "
            ".venv-sam/bin/pip install aws-sam-cli==1.170.0 (or `make setup`)."
        )
    return sam


@pytest.fixture(scope="session")
def sam_env() -> dict[str, str]:
    """Environment for sam, with python3.12 (the runtime) on PATH for the import smoke test."""
    env = dict(os.environ)
    pyenv = Path.home() / ".pyenv" / "versions"
    extra = sorted(str(p / "bin") for p in pyenv.glob("3.12*")) if pyenv.exists() else []
    env["PATH"] = os.pathsep.join([*extra, env.get("PATH", "")])
    env["SAM_CLI_TELEMETRY"] = "0"
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.pop("VIRTUAL_ENV", None)
    return env


def function_folders() -> list[Path]:
    return sorted(p for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "shared")


for _folder in function_folders():
    sys.path.insert(0, str(_folder))
