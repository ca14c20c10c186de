"""Durable state: one JSON file per resource, written atomically, mirrored in memory.

Every write goes through `put` (temp file + fsync + os.replace), so a killed
process leaves either the old or the new record, never half of one. Callers
hold `store.lock` across read-modify-write sequences.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

KINDS = (
    "training-job",
    "hyper-parameter-tuning-job",
    "model",
    "endpoint-config",
    "endpoint",
    "model-package-group",
    "model-package",
)


def _file_name(name: str) -> str:
    return name.replace("/", "__") + ".json"


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "state"
        self.lock = threading.RLock()
        self._mem: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        for kind in KINDS:
            folder = self.root / kind
            folder.mkdir(parents=True, exist_ok=True)
            for f in sorted(folder.glob("*.json")):
                record = json.loads(f.read_text())
                self._mem[kind][record["_key"]] = record

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._mem[kind].get(name)
            return copy.deepcopy(record) if record is not None else None

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        with self.lock:
            record["_key"] = name
            write_json_atomic(self.root / kind / _file_name(name), record)
            self._mem[kind][name] = copy.deepcopy(record)

    def update(self, kind: str, name: str, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into a record (None deletes a key) and persist it."""
        with self.lock:
            record = self._mem[kind][name]
            record = copy.deepcopy(record)
            for k, v in changes.items():
                if v is None:
                    record.pop(k, None)
                else:
                    record[k] = v
            self.put(kind, name, record)
            return copy.deepcopy(record)

    def delete(self, kind: str, name: str) -> None:
        with self.lock:
            self._mem[kind].pop(name, None)
            (self.root / kind / _file_name(name)).unlink(missing_ok=True)

    def all(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self._mem[kind].values()]
