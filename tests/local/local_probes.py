"""Helpers for the local runtime tests: probe function specs and what they received."""

from __future__ import annotations

import json
from pathlib import Path

from samlocal.functions import FunctionSpec

PROBE_DIR = Path(__file__).parent / "fixtures" / "probe"


def probe_spec(
    logical_id: str, handler: str, out: Path, events=None, timeout_s=10.0
) -> FunctionSpec:
    return FunctionSpec(
        logical_id=logical_id,
        name=f"test-{logical_id}",
        handler=handler,
        code_dir=PROBE_DIR,
        environment={"PROBE_DIR": str(out)},
        timeout_s=timeout_s,
        events=events or {},
    )


def received(out: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"{kind}-*.json"))]
