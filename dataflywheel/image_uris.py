"""Regenerate template.yaml's PyTorchImages mapping from the SageMaker SDK's image_uris.

The SDK is a deploy-time tool only (never imported by a Lambda), so it lives in its own venv:

    python3.11 -m venv .venv-deploy && .venv-deploy/bin/pip install "sagemaker>=2.240,<3"
    .venv-deploy/bin/python dataflywheel/image_uris.py          # rewrites template.yaml's mapping
    .venv-deploy/bin/python dataflywheel/image_uris.py --check  # exit 1 if the template is stale

pytorch-training and pytorch-inference 2.6 py312, a CPU and a GPU image of each per region
(keys TrainingCpu, TrainingGpu, InferenceCpu, InferenceGpu); the functions pick one from the
instance type (flywheel.domain.containers; serverless inference is CPU). Regions are those where
the SDK lists both scopes. The parameters TrainingImageUri / InferenceImageUri override.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"
VERSION, PY = "2.6", "py312"
# One instance type per processor: the SDK derives cpu/gpu from the family (ml.m*, ml.g*).
PROCESSORS = {"Cpu": "ml.m5.xlarge", "Gpu": "ml.g5.xlarge"}
SCOPES = {"Training": "training", "Inference": "inference"}
BLOCK = re.compile(r"(# BEGIN PyTorchImages\n)(.*?)(# END PyTorchImages)", re.S)


def image_map() -> dict[str, dict[str, str]]:
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    from sagemaker import image_uris  # deploy-time dependency, see the docstring

    config = image_uris.config_for_framework("pytorch")

    def regions(scope: str) -> set[str]:
        full = config[scope]["version_aliases"].get(VERSION, VERSION)
        return set(config[scope]["versions"][full]["registries"])

    out = {}
    for region in sorted(regions("training") & regions("inference")):
        try:
            out[region] = {
                f"{scope_key}{proc_key}": image_uris.retrieve(
                    "pytorch",
                    region=region,
                    version=VERSION,
                    py_version=PY,
                    instance_type=instance_type,
                    image_scope=scope,
                )
                for scope_key, scope in SCOPES.items()
                for proc_key, instance_type in PROCESSORS.items()
            }
        except ValueError:  # a region the SDK lists but cannot build a URI for
            continue
    return out


def render(images: dict[str, dict[str, str]]) -> str:
    lines = ["Mappings:", "  PyTorchImages:"]
    for region, uris in images.items():
        lines.append(f"    {region}:")
        lines += [f"      {key}: {uri}" for key, uri in uris.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    text = args.template.read_text()
    match = BLOCK.search(text)
    if not match:
        print(f"no '# BEGIN PyTorchImages' block in {args.template}", file=sys.stderr)
        return 2
    block = render(image_map())
    if args.check:
        stale = match.group(2) != block
        print("stale" if stale else "up to date")
        return int(stale)
    args.template.write_text(text[: match.start(2)] + block + text[match.end(2) :])
    print(f"wrote {block.count('TrainingGpu:')} regions to {args.template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
