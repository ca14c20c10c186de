"""The repository passes its own static checks: mypy over every package and ruff.

mypy reads its configuration (which packages, the search path) from pyproject.toml and
keeps its cache in .mypy_cache/, so after the first run only changed modules are checked
again; ruff's lint rules are there too. A failure prints the tools' own output.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )


def configured_sources() -> set[Path]:
    """The .py files pyproject's [tool.mypy] files name (folders, files, globs)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    found: set[Path] = set()
    for entry in config["files"]:
        for path in ROOT.glob(entry) if "*" in entry else [ROOT / entry]:
            found.update(path.rglob("*.py") if path.is_dir() else [path])
    return found


def test_mypy_covers_every_package():
    sources = {p.relative_to(ROOT).parts[0] for p in configured_sources()}
    assert sources == {"functions", "dataflywheel", "samlocal", "training_jobs"}
    handlers = {p.parent.name for p in configured_sources() if p.parent.parent.name == "functions"}
    folders = {p.name for p in (ROOT / "functions").iterdir() if p.is_dir() and p.name != "shared"}
    assert handlers == folders


def test_mypy_finds_no_errors_in_any_package():
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
    # every configured file was read, not an empty selection
    assert f"no issues found in {len(configured_sources())} source files" in result.stdout


def test_ruff_finds_nothing_to_fix():
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
