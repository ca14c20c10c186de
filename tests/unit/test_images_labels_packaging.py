"""Header checks, label parsing, deterministic source packaging."""

import struct
import time
from pathlib import Path

import pytest
from flywheel.contracts.images import InvalidImage, inspect_header, sniff_content_type, target_size
from flywheel.domain.labels import item_id_from_reference, label_from_upload_key, parse_csv
from flywheel.packaging import package_source_dir

# What every training sourcedir carries besides its own files (flywheel.contracts).
CONTRACT_MEMBERS = [
    "flywheel/__init__.py",
    "flywheel/contracts/__init__.py",
    "flywheel/contracts/images.py",
    "flywheel/contracts/manifest.py",
    "flywheel/contracts/metrics.py",
    "flywheel/contracts/metrics_schema.json",
    "flywheel/contracts/model_config.py",
    "flywheel/contracts/model_config_schema.json",
    "flywheel/contracts/schema.py",
]


def png_header(w: int, h: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", w, h)
        + b"\x08\x02\x00\x00\x00"
    )


def test_real_type_comes_from_magic_bytes():
    assert sniff_content_type(png_header(10, 10)) == "image/png"
    assert sniff_content_type(b"\xff\xd8\xff\xe0....") == "image/jpeg"
    assert sniff_content_type(b"<html>") is None


def test_bomb_is_rejected_from_the_header_alone():
    with pytest.raises(InvalidImage, match="bomb"):
        inspect_header(png_header(100_000, 100_000), max_bytes=10**6)
    assert inspect_header(png_header(640, 480), max_bytes=10**6).width == 640


def test_target_size_never_enlarges():
    assert target_size(4000, 2000, 1024) == (1024, 512)
    assert target_size(100, 50, 1024) == (100, 50)


def test_labels_from_keys_and_references():
    assert label_from_upload_key("labeled/cat/a b.jpg") == "cat"
    assert (
        label_from_upload_key("labeled/x.jpg") is None
        and label_from_upload_key("cat/x.jpg") is None
    )
    item = "a" * 64
    assert item_id_from_reference(f"s3://bucket/images/{item}.png") == item
    assert item_id_from_reference(item) == item and item_id_from_reference("nope") is None


def test_csv_with_header_extra_columns_and_empty_labels():
    parsed = parse_csv("image_id_or_key,label,model_label\nx,cat,dog\ny,,dog\nbad\n")
    assert [(line.reference, line.label) for line in parsed.lines] == [("x", "cat")]
    assert parsed.skipped == 1 and parsed.errors[0]["line"] == 4


def test_packaging_is_byte_identical_and_ignores_caches(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "t.pyc").write_bytes(b"junk")
    (tmp_path / "python").mkdir()  # another layer's folder in /opt
    (tmp_path / "python" / "other.py").write_text("")
    first = package_source_dir(tmp_path)
    time.sleep(0.01)
    (tmp_path / "train.py").touch()
    assert package_source_dir(tmp_path) == first
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(first[0])) as tar:
        assert tar.getnames() == [*CONTRACT_MEMBERS, "pkg/m.py", "train.py"]


def test_packaging_carries_the_wheels_and_leaves_the_makefile_out(tmp_path):
    # Given a built TrainingCodeLayer: source, wheels/, the offline requirements.txt
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "Makefile").write_text("build-TrainingCodeLayer:\n")
    (tmp_path / "requirements.txt").write_text("--no-index\n--find-links wheels\njsonschema\n")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "jsonschema-4.26.0-py3-none-any.whl").write_bytes(b"PK")

    # When it is packaged
    blob, _ = package_source_dir(tmp_path)

    # Then the wheels travel in the tarball the container unpacks, the build file does not
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getnames() == [
            *CONTRACT_MEMBERS,
            "requirements.txt",
            "train.py",
            "wheels/jsonschema-4.26.0-py3-none-any.whl",
        ]


def test_the_source_dir_carries_the_shared_contracts_byte_for_byte(tmp_path):
    # Given a training source dir without a flywheel/ of its own
    (tmp_path / "train.py").write_text("print(1)\n")

    # When it is packaged
    blob, _ = package_source_dir(tmp_path)

    # Then the job (and the model's code/) import the very modules the functions import
    import io
    import tarfile

    import flywheel.contracts.images

    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        shipped = tar.extractfile("flywheel/contracts/images.py").read()
    assert shipped == Path(flywheel.contracts.images.__file__).read_bytes()


def test_training_requirements_never_vendor_what_the_image_has():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "training_jobs/requirements.txt").read_text()
    names = {
        line.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }
    assert "opencv-python-headless" in names and "efficientnet-lite-pytorch" in names
    assert not names & {"torch", "torchvision", "numpy", "scipy"}
