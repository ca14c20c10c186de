"""flywheel export --format imagefolder: a label is data, it never picks where a file goes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flywheel.adapters import items

from dataflywheel import cli

HOSTILE_LABELS = [
    "../x",
    "/abs",
    "a/../../b",
    "..",
    "con\x00",
    "%2e%2e/x",
    "../../../../../outside/x",
    "x" * 300,
]


def seed(stack, n: int, label: str) -> str:
    item_id = f"{n:064x}"
    stack.s3.put_object(Bucket=stack.data_bucket, Key=f"images/{item_id}.png", Body=b"png")
    items.put_new(
        stack.table,
        {
            "item_id": item_id,
            "state": "human_labeled",
            "image_key": f"images/{item_id}.png",
            "label": label,
            "label_source": "human",
        },
    )
    return item_id


@pytest.fixture
def stack_cli(stack):
    stack.args = stack.register()  # the CLI finds it through DescribeStacks
    return stack


def test_imagefolder_export_never_writes_outside_its_directory(stack_cli, tmp_path: Path, capsys):
    # Given one good item and items whose stored labels are paths (written before validation)
    good = seed(stack_cli, 1, "cat")
    for n, label in enumerate(HOSTILE_LABELS, start=2):
        seed(stack_cli, n, label)
    out = tmp_path / "deep" / "a" / "b" / "c" / "d" / "export"

    # When the dataset is exported as an ImageFolder tree
    code = cli.main(
        [
            *stack_cli.args,
            *("export", "--format", "imagefolder", "-o", str(out), "--states", "human_labeled"),
        ]
    )

    # Then only the good item is in the tree, the rest is named on stderr and the exit code says so
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == [out / "cat" / f"{good}.png"]
    assert code == 1
    err = capsys.readouterr().err
    assert f"{len(HOSTILE_LABELS)} item(s) not exported" in err and "invalid class name" in err


def test_upload_refuses_a_label_that_is_not_a_class_name(stack_cli, tmp_path: Path):
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    assert cli.main([*stack_cli.args, "upload", str(image), "--label", "../../x"]) == 1
    assert "Contents" not in stack_cli.s3.list_objects_v2(Bucket=stack_cli.upload_bucket)
