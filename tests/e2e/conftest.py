"""End-to-end fixtures: a real `flywheel up` process, driven only through AWS APIs."""

from __future__ import annotations

import pytest
from e2e_support import E2E_PARAMETERS, RunningStack  # noqa: I001


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory):
    stack = RunningStack(tmp_path_factory.mktemp("e2e") / "data", E2E_PARAMETERS)
    stack.data_dir.mkdir(parents=True)
    stack.start()
    yield stack
    stack.stop()
