"""flywheel CLI against a stack found through CloudFormation (moto): the deployed-stack path."""

from __future__ import annotations

import pytest

from dataflywheel import cli


@pytest.fixture
def stack_args(stack) -> list[str]:
    """``--stack NAME --region R``: DescribeStacks outputs name every resource."""
    return stack.register()


@pytest.mark.parametrize("fmt", ["manifest", "csv"])
def test_export_of_an_empty_state_writes_an_empty_file(stack_args, tmp_path, fmt):
    out = tmp_path / f"labels.{fmt}"
    assert cli.main([*stack_args, "export", "--format", fmt, "-o", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines == ([] if fmt == "manifest" else [lines[0]])


def test_export_of_an_empty_state_as_imagefolder_is_an_empty_folder(stack_args, tmp_path):
    out = tmp_path / "dataset"
    assert cli.main(["export", "--format", "imagefolder", "-o", str(out), *stack_args]) == 0
    assert out.is_dir() and not any(out.iterdir())


def test_upload_random_sample_sets_the_sampling_metadata(stack, stack_args, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)

    code = cli.main(["upload", str(tmp_path), "--labels-from-dirs", "--random-sample", *stack_args])

    assert code == 0
    head = stack.s3.head_object(Bucket=stack.upload_bucket, Key="labeled/cat/a.png")
    assert head["Metadata"] == {"flywheel-sampling": "random"}
    # A "random sample" of unlabeled images declares nothing: refused
    assert cli.main([*stack_args, "upload", str(tmp_path), "--random-sample"]) == 1


def test_a_stack_that_does_not_exist_is_one_clear_line(stack, capsys):
    code = cli.main(["status", "--stack", "nope", "--region", "us-east-1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("flywheel: error: no stack named nope (region us-east-1)")
    assert "Traceback" not in err


def test_a_stack_from_an_older_template_names_the_missing_output(stack, tmp_path, capsys):
    # Given a deployed stack whose template had no EndpointName output
    from samlocal.provision import register_stack, stack_outputs

    outputs = stack_outputs(stack.resolved, stack.physical)
    del outputs["EndpointName"]
    register_stack(stack.resolved, outputs, stack.session.client("cloudformation"))
    image = tmp_path / "a.png"
    image.write_bytes(b"png")

    # When predict needs it
    code = cli.main(["predict", str(image), "--stack", stack.resolved["StackName"]])

    # Then the error says which output and why
    assert code == 1
    assert "has no output EndpointName: it was deployed from an older template" in (
        capsys.readouterr().err
    )
