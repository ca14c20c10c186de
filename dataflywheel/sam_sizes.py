"""Unzipped size of every built function, its layers included (Lambda's limit: 250 MB).

    .venv-sam/bin/sam build && .venv/bin/python -m dataflywheel.sam_sizes   # table; exit 1 if over

Reads .aws-sam/build/template.yaml: each function's CodeUri plus its own and the Globals
layers (built layers under .aws-sam/build, unbuilt ones such as TrainingCodeLayer at their
ContentUri).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from samlocal.cfn import load_template

LIMIT_BYTES = 262_144_000  # 250 MB (MiB-based) - Lambda's unzipped function + layers quota
SKIP: set[str] = set()  # count everything that gets zipped, caches included


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in SKIP]
        total += sum(
            (Path(dirpath) / f).stat().st_size
            for f in filenames
            if not (Path(dirpath) / f).is_symlink()
        )
    return total


def sizes(build_dir: Path) -> dict[str, dict[str, int]]:
    template = load_template(build_dir / "template.yaml")
    resources = template["Resources"]
    global_layers = (template.get("Globals", {}).get("Function", {}) or {}).get("Layers", [])
    out: dict[str, dict[str, int]] = {}
    for lid, res in resources.items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        props = res["Properties"]
        parts = {lid: tree_size(build_dir / props["CodeUri"])}
        for layer in [*global_layers, *props.get("Layers", [])]:
            name = layer["Ref"] if isinstance(layer, dict) else str(layer)
            content = resources[name]["Properties"]["ContentUri"]
            parts[name] = tree_size((build_dir / content).resolve())
        out[lid] = parts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", default=".aws-sam/build", type=Path)
    args = parser.parse_args(argv)
    table = sizes(args.build_dir)
    over = False
    print(f"{'function':<24}{'unzipped MB':>12}  parts (MB)")
    for lid, parts in sorted(table.items()):
        total = sum(parts.values())
        over |= total > LIMIT_BYTES
        detail = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in parts.items())
        flag = "  OVER 250 MB" if total > LIMIT_BYTES else ""
        print(f"{lid:<24}{total / 2**20:>12.1f}  {detail}{flag}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
