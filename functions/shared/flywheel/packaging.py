"""Deterministic ``sourcedir.tar.gz`` of training_jobs/ (same tree -> same bytes -> same hash).

start_training packages the TrainingCodeLayer (/opt) on first use and publishes it as
``code/sourcedir-<sha256[:16]>.tar.gz`` (the local stack runs the same function).
The built layer also holds ``wheels/`` (training_jobs/Makefile) and a requirements.txt
that installs only from them, so the tarball carries every dependency the container
installs: jobs need no internet.

    python -c "from flywheel.packaging import package_source_dir as p; print(p('training_jobs')[1])"
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

# Other layers share /opt in Lambda; none of these belong to the training code.
EXCLUDED_TOP_LEVEL = frozenset({"python", "extensions", "bin", "lib", "tests"})
EXCLUDED_NAMES = frozenset({"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".tar.gz", ".pt", ".pth", ".ckpt")
# Build files of the source tree (training_jobs/ packaged as is, e.g. by the local runtime).
EXCLUDED_TOP_LEVEL_FILES = frozenset({"Makefile"})


def _files(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in EXCLUDED_NAMES and not (rel_dir == Path(".") and d in EXCLUDED_TOP_LEVEL)
        )
        for name in sorted(filenames):
            if rel_dir == Path(".") and name in EXCLUDED_TOP_LEVEL_FILES:
                continue
            if not name.endswith(EXCLUDED_SUFFIXES):
                found.append(Path(dirpath, name).relative_to(root))
    return sorted(found, key=lambda p: p.as_posix())


CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
# The training code needs flywheel.contracts only, not the functions' package around it.
CONTRACTS_PACKAGE_INIT = (
    b'"""dataflywheel: only flywheel.contracts ships with the training code and the model."""\n'
)


def _contract_files() -> dict[str, bytes]:
    files = {"flywheel/__init__.py": CONTRACTS_PACKAGE_INIT}
    for rel in _files(CONTRACTS_DIR):
        files[f"flywheel/contracts/{rel.as_posix()}"] = (CONTRACTS_DIR / rel).read_bytes()
    return files


def package_source_dir(source_dir: str | Path) -> tuple[bytes, str]:
    """Return (tar.gz bytes, sha256 hex) with fixed mtimes, owners and modes.

    The tarball also carries ``flywheel/contracts/`` (the definitions inference.py shares
    with the functions) unless the source dir has its own ``flywheel/``.
    """
    root = Path(source_dir)
    if not (root / "train.py").is_file():
        raise FileNotFoundError(f"{root}/train.py not found: not a training source_dir")
    members = {rel.as_posix(): (root / rel).read_bytes() for rel in _files(root)}
    if not any(name.startswith("flywheel/") for name in members):
        members.update(_contract_files())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            data = members[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    blob = out.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def source_key(digest: str) -> str:
    return f"code/sourcedir-{digest[:16]}.tar.gz"
