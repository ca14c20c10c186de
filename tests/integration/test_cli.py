"""flywheel CLI against moto: empty exports, uploads declared a random sample."""

from __future__ import annotations

from typing import Any

import pytest

from infra import cli


class FakeStack:
    """What the CLI reads from a StackClient, bound to the moto stack."""

    def __init__(self, stack, rows: list[dict[str, Any]] | None = None) -> None:
        self.stack, self.rows = stack, rows or []
        self.upload_bucket, self.data_bucket = stack.upload_bucket, stack.data_bucket

    def client(self, service: str) -> Any:
        return self.stack.session.client(service)

    def items(self, states: tuple[str, ...]) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["state"] in states]


@pytest.mark.parametrize("fmt", ["manifest", "csv"])
def test_export_of_an_empty_state_writes_an_empty_file(stack, monkeypatch, tmp_path, fmt):
    monkeypatch.setattr(cli, "_client", lambda args: FakeStack(stack))
    out = tmp_path / f"labels.{fmt}"
    assert cli.main(["export", "--format", fmt, "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines == ([] if fmt == "manifest" else [lines[0]])


def test_export_of_an_empty_state_as_imagefolder_is_an_empty_folder(stack, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "_client", lambda args: FakeStack(stack))
    out = tmp_path / "dataset"
    assert cli.main(["export", "--format", "imagefolder", "-o", str(out)]) == 0
    assert out.is_dir() and not any(out.iterdir())


def test_upload_random_sample_sets_the_sampling_metadata(stack, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "_client", lambda args: FakeStack(stack))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)

    assert cli.main(["upload", str(tmp_path), "--labels-from-dirs", "--random-sample"]) == 0

    head = stack.s3.head_object(Bucket=stack.upload_bucket, Key="labeled/cat/a.png")
    assert head["Metadata"] == {"flywheel-sampling": "random"}
    # A "random sample" of unlabeled images declares nothing: refused
    assert cli.main(["upload", str(tmp_path), "--random-sample"]) == 1
