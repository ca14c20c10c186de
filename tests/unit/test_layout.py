"""The layout's one rule: samlocal (the emulator) is generic, so imports go one way.

dataflywheel (the operator tools) may start a local stack; samlocal must never import the
operator tools, the functions' package (flywheel) or the training code: it runs any SAM
template, and knows this project only through template.yaml.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_SAMLOCAL = ("dataflywheel", "flywheel", "classifier", "train", "inference")


def imported_modules(package: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        names = found.setdefault(path.relative_to(ROOT).as_posix(), set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return found


def test_samlocal_imports_neither_the_operator_tools_nor_the_project_code():
    modules = imported_modules(ROOT / "samlocal")
    assert len(modules) >= 15  # the whole emulator was read
    offending = {
        path: sorted(names & set(FORBIDDEN_IN_SAMLOCAL))
        for path, names in modules.items()
        if names & set(FORBIDDEN_IN_SAMLOCAL)
    }
    assert offending == {}


def test_the_operator_tools_reach_the_emulator_only_through_its_package():
    modules = imported_modules(ROOT / "dataflywheel")
    assert any("samlocal" in names for names in modules.values())  # flywheel up starts it
    assert not (ROOT / "infra").exists()


def test_the_emulator_has_its_own_readme_and_pins_and_the_project_installs_them():
    pins = (ROOT / "samlocal" / "requirements.txt").read_text()
    assert "moto[server]==" in pins and "optuna==" in pins
    assert (ROOT / "samlocal" / "README.md").exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'local = { file = ["samlocal/requirements.txt"] }' in pyproject
    assert "moto" not in pyproject.split("[project.scripts]")[0]  # one place for each pin


def test_paths_the_emulator_derives_from_its_own_location_name_this_repository():
    from samlocal import functions, stack

    assert stack.DEFAULT_TEMPLATE == ROOT / "template.yaml" and stack.DEFAULT_TEMPLATE.is_file()
    assert functions.REPO_ROOT == ROOT
