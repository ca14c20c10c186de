"""A function's settings as the template gives them: the one way tests build settings.

    settings = template_settings("PromoteFunction", {"EndpointMode": "instance"})

The values come from template.yaml's Parameters defaults (plus the overrides given) and
the function's Environment, resolved by samlocal.cfn as the local runtime resolves them;
no test keeps a second copy of the defaults. Keyword arguments replace single variables
(for values no template parameter reaches, or bad values a test wants refused).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from flywheel.settings import FUNCTION_SETTINGS

from samlocal.cfn import function_environment, load_template, resolve

ROOT = Path(__file__).resolve().parents[1]
STACK = "dataflywheel"


@cache
def _template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def template_environment(
    logical_id: str, parameters: dict[str, str] | None = None, stack: str = STACK
) -> dict[str, str]:
    """The function's Environment with the template's parameters (defaults < ``parameters``)."""
    return function_environment(resolve(_template(), stack, parameters or {}), logical_id)


def template_settings(logical_id: str, parameters: dict[str, str] | None = None, **env: str) -> Any:
    """``FUNCTION_SETTINGS[logical_id]`` read from the template's Environment (+ ``env``)."""
    model = FUNCTION_SETTINGS[logical_id]
    return model.from_env(template_environment(logical_id, parameters) | env)
