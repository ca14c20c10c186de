"""Channels (ImageFolder, Ground Truth manifest), hyperparameter parsing, model building."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import train
from classifier import data, engine, models
from conftest import run_training


def write_png(path, value=0):
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))[1].tobytes())


def gt_line(source_ref, class_name, attribute="label"):
    return json.dumps(
        {
            "source-ref": source_ref,
            attribute: 0,
            f"{attribute}-metadata": {"class-name": class_name, "human-annotated": "yes"},
        }
    )


def test_manifest_source_refs_resolve_inside_the_channel(tmp_path):
    # Given images at their S3 key paths and one only by its basename
    write_png(tmp_path / "datasets" / "s1" / "a.png")
    write_png(tmp_path / "b.png")
    lines = [
        gt_line("s3://bucket/datasets/s1/a.png", "cat"),
        gt_line("s3://other/deep/key/b.png", "dog"),
    ]
    (tmp_path / "snapshot.manifest").write_text("\n".join(lines) + "\n\n")
    samples = data.load_channel(tmp_path, "label")
    assert samples == [
        (str(tmp_path / "datasets" / "s1" / "a.png"), "cat"),
        (str(tmp_path / "b.png"), "dog"),
    ]


@pytest.mark.parametrize(
    "ref",
    [
        "s3://bucket/../../outside.png",
        "s3://bucket/x/../../../outside.png",
        "../outside.png",
        "OUTSIDE",  # replaced by the absolute path of the file outside the channel
        "s3://bucket/link/outside.png",
        "outside.png\x00",
    ],
)
def test_a_source_ref_never_resolves_outside_the_channel(tmp_path, ref):
    # Given a channel next to an image it must not reach (also through a symlink)
    channel, outside = tmp_path / "channel", tmp_path / "outside.png"
    write_png(outside)
    channel.mkdir()
    (channel / "link").symlink_to(tmp_path)
    ref = str(outside) if ref == "OUTSIDE" else ref
    (channel / "m.manifest").write_text(gt_line(ref, "cat") + "\n")

    # When the channel is read, Then the reference is not found rather than read
    assert data.resolve_source_ref(ref, channel) is None
    with pytest.raises(ValueError, match="1 source-ref not found"):
        data.load_channel(channel, "label")


def test_the_snapshot_manifest_the_functions_write_is_a_channel_train_py_reads(tmp_path):
    # Given a dataset snapshot's train manifest as start_training writes it, and its images
    from flywheel.contracts import manifest
    from flywheel.domain.splits import build_snapshot, manifest_lines

    snapshot = build_snapshot(
        [(f"{i:064x}", label, sampling) for i, (label, sampling) in enumerate(
            [("cat", "random"), ("dog", "selected"), ("cat", "selected"), ("dog", "random")] * 3
        )]
    )  # fmt: skip
    lines = manifest_lines(snapshot, "bucket", "labeling-job/snap", "2026-11-30T12:00:00", "train")
    for e in (e for e in snapshot.entries if e.split == "train"):
        write_png(tmp_path / e.channel_key(snapshot.snapshot_id))
    (tmp_path / "train.manifest").write_text(manifest.dumps(lines))

    # When train.py reads the channel
    sampling: dict[str, str] = {}
    samples = data.load_channel(tmp_path, "label", sampling)

    # Then every line is an image with its class and how its label was drawn
    train = [e for e in snapshot.entries if e.split == "train"]
    assert sorted(label for _, label in samples) == sorted(e.label for e in train)
    assert sorted(sampling.values()) == sorted(e.sampling for e in train)


def test_manifest_errors_say_what_is_missing(tmp_path):
    (tmp_path / "m.jsonl").write_text(gt_line("s3://bucket/x/missing.png", "cat") + "\n")
    with pytest.raises(ValueError, match="1 source-ref not found"):
        data.load_channel(tmp_path, "label")
    (tmp_path / "m.jsonl").write_text(gt_line("s3://bucket/x/missing.png", "cat", "species") + "\n")
    with pytest.raises(ValueError, match="--label-attribute"):
        data.load_channel(tmp_path, "label")
    (tmp_path / "m.jsonl").write_text('{"label": "cat"}\n')
    with pytest.raises(ValueError, match="m.jsonl line 1: no source-ref"):
        data.load_channel(tmp_path, "label")


def test_split_is_deterministic_by_file_name_and_test_set_id_by_names():
    samples = [(f"/a/{c}/img{i}.png", str(c)) for c in range(3) for i in range(300)]
    train, val, test = data.split_samples(samples, 0.2, 0.2)
    moved = [(p.replace("/a/", "/elsewhere/"), c) for p, c in samples]
    assert [len(s) for s in data.split_samples(moved, 0.2, 0.2)] == [
        len(train),
        len(val),
        len(test),
    ]
    assert 0.15 < len(test) / len(samples) < 0.25 and 0.15 < len(val) / len(samples) < 0.25
    assert data.test_set_id(test) == data.test_set_id(list(reversed(test)))
    assert data.test_set_id(test) != data.test_set_id(val)


def test_a_class_missing_from_train_keeps_every_index(tmp_path, digits_folder):
    # Given digits 0-2 where train lacks the "2"s but validation and test have them
    channels = {name: tmp_path / name for name in ("train", "validation", "test")}
    for label in ("0", "1", "2"):
        images = sorted((digits_folder / label).iterdir())
        for name, part in zip(channels, (images[:100], images[100:140], images[140:]), strict=True):
            if not (name == "train" and label == "2"):
                for image in part:
                    (channels[name] / label).mkdir(parents=True, exist_ok=True)
                    (channels[name] / label / image.name).write_bytes(image.read_bytes())
    # (and a first-round job told to start from a champion that does not exist yet)
    # (two cross-fitting folds, the fewest there are: the fold models get every index too)
    hyperparameters = {
        "arch": "small_cnn", "epochs": "1", "workers": "0", "init-model": "champion",
        "cross-fit-folds": "2",
    }  # fmt: skip
    result = run_training(tmp_path, channels, hyperparameters)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "init-model champion unusable (no champion channel): training from scratch" in result.stdout
    )
    config = json.loads((tmp_path / "model" / "model_config.json").read_text())
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert config["classes"] == metrics["classes"] == ["0", "1", "2"]
    assert metrics["test"]["per_class"]["2"]["support"] > 0 and metrics["data"]["train"] == 200


def test_hyperparameters_as_sagemaker_sends_them():
    args = train.parse_args(
        [
            "--pretrained",
            "True",
            "--epochs",
            "3",
            "--sagemaker_program",
            "train.py",
            "--_tuning_objective_metric",
            "val_accuracy",
            "--init-model",
            "champion",
        ]
    )
    assert args.pretrained is True and args.epochs == 3 and args.init_model == "champion"
    assert train.parse_args(["--pretrained", "1"]).pretrained is True
    assert train.parse_args(["--pretrained", "false"]).pretrained is False
    for bad, message in [
        (["--learning-rate", "0.1"], "unknown --learning-rate"),
        (["--arch", "vgg99"], "arch in"),
        (["--pretrained", "maybe"], "boolean"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "< 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            train.parse_args(bad)


@pytest.mark.parametrize(
    ("arch", "size"),
    [("small_cnn", 8), ("small_cnn", 32), ("resnet18", 32), ("mobilenet_v3_small", 64)],
)
def test_models_build_for_any_class_count(arch, size):
    model = models.build_model(arch, 7).eval()
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 7)


def test_pretrained_failures_are_one_clear_line(monkeypatch):
    with pytest.raises(ValueError, match="small_cnn has no pretrained weights"):
        models.build_model("small_cnn", 3, pretrained=True)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    import torchvision.models._api

    monkeypatch.setattr(
        torchvision.models._api, "load_state_dict_from_url", offline
    )  # no download, ever
    with pytest.raises(
        ValueError, match=r"^cannot load pretrained weights for resnet18: .*no route to host"
    ) as error:
        models.build_model("resnet18", 3, pretrained=True)
    assert "\n" not in str(error.value)


def test_init_model_rows_are_mapped_by_class_name():
    old = models.build_model("small_cnn", 2)  # classes ["dog", "cat"]
    new = models.build_model("small_cnn", 3)  # classes ["cat", "cow", "dog"]
    carried = models.transfer_weights(new, ["cat", "cow", "dog"], old.state_dict(), ["dog", "cat"])
    assert carried == 2
    assert torch.equal(new.fc[1].weight[0], old.fc[1].weight[1]) and torch.equal(
        new.fc[1].weight[2], old.fc[1].weight[0]
    )
    assert torch.equal(new.features[0][0].weight, old.features[0][0].weight)


def test_the_bf16_path_trains_and_predicts(digits_folder):
    # The CUDA path (bf16 autocast, channels_last), run here under CPU autocast
    samples = data.load_channel(digits_folder, "label")[:128]
    args = train.parse_args(["--batch-size", "32", "--workers", "0"])
    index = {str(i): i for i in range(10)}
    cpu, mean, std = torch.device("cpu"), models.IMAGENET_MEAN, models.IMAGENET_STD
    dataset = data.ImageDataset(samples, index, 32, 0.5)
    loader = engine.make_loader(dataset, args, cpu, shuffle=True)
    model = models.build_model("small_cnn", 10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = (args.lr, 8, 1)  # peak lr, total steps, warmup steps
    loss, step = engine.train_one_epoch(model, loader, optimizer, 0, schedule, cpu, True, mean, std)
    logits, labels = engine.predict(model, loader, cpu, True, mean, std)
    assert step == 4 and 0 < loss < 10
    assert logits.dtype == "float32" and logits.shape == (128, 10) and len(labels) == 128


def test_the_strong_view_keeps_the_image_shape_and_cuts_a_square_out():
    # Given a textured 32x32 colour image
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    views = [data.strong_augment(image, np.random.default_rng(seed)) for seed in range(20)]
    # Then every view is an image like it, different from it, with a grey square of 8-16 px
    for view in views:
        assert view.shape == image.shape and view.dtype == np.uint8
        assert not np.array_equal(view, image)
        grey = np.all(view == 127, axis=2)
        rows, cols = np.flatnonzero(grey.any(1)), np.flatnonzero(grey.any(0))
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
    # and no two seeds give the same view
    assert len({v.tobytes() for v in views}) == len(views)
