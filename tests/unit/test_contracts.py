"""flywheel.contracts: the definitions the training job and the functions share.

The metrics.json fixture is what train.py wrote for a 3-epoch digits run
(tests/training/test_train.py::test_smoke_metrics_pass_the_gate_reader proves the same
for a fresh run).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from flywheel.contracts import manifest, model_config
from flywheel.contracts import metrics as metrics_contract
from flywheel.domain.gate import parse_metrics
from flywheel.domain.labels import parse_manifest
from flywheel.domain.splits import build_snapshot, manifest_lines
from flywheel.errors import InvalidArtifact

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "metrics.json"
METRICS = json.loads(FIXTURE.read_text())


def changed(path: str, value=None, *, delete: bool = False):
    """A copy of the fixture with one value replaced (or deleted) at a dotted path."""
    doc = copy.deepcopy(METRICS)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = doc
    for part in parents:
        node = node[part]
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


BROKEN_OR_NOT = [
    *(
        changed(key, delete=True)
        for key in json.loads(metrics_contract.SCHEMA_PATH.read_text())["required"]
    ),
    changed("best_epoch", delete=True),  # optional
    changed("schema_version", True),  # true is not 1
    changed("schema_version", 2),
    changed("schema_version", 1.0),  # 1.0 is 1
    changed("model_version", ""),
    changed("classes", []),
    changed("classes", [3]),
    changed("epochs.0.epoch", 0),
    changed("epochs.0.val_accuracy", 1.5),
    changed("test.accuracy", -0.1),
    changed("test.accuracy", "0.9"),
    changed("test.n", 40.0),  # an integer in JSON
    changed("test.n", 40.5),
    changed("test.confusion_matrix.matrix", [[1.5]]),
    changed("test.per_class.0", {"precision": 1.0}),
    changed("test_set_id", "x"),
    changed("champion_test", None),
    changed("champion_test", METRICS["test"]),  # no model_version
    changed("champion_test", {**METRICS["test"], "model_version": "dfw-old"}),
    changed("champion_test", {"accuracy": 0.9}),
    changed("calibration.temperature", 0),
    changed("threshold.target_accuracy", 0),
    changed("threshold.reached", "yes"),
    changed("threshold.labels_needed.0.labels", None),
    changed("threshold.labels_needed.0.labels", -1),
    changed("threshold.min_all_correct", 0),
    changed("data.pseudo", -1),
    changed("data.extra", "a"),
    [],
    None,
]


@pytest.mark.parametrize("doc", BROKEN_OR_NOT, ids=range(len(BROKEN_OR_NOT)))
def test_fastjsonschema_and_jsonschema_agree_on_the_schema_file(doc):
    reference = jsonschema.Draft202012Validator(
        json.loads(metrics_contract.SCHEMA_PATH.read_text())
    ).is_valid(doc)
    try:
        metrics_contract.validate(doc)
        ours = True
    except metrics_contract.InvalidMetrics:
        ours = False
    assert ours == reference


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_not_json_numbers_whatever_jsonschema_says(value):
    # jsonschema lets NaN through (it fails no comparison): the gate would promote it
    with pytest.raises(InvalidArtifact, match="test.accuracy: .* is not a JSON number"):
        parse_metrics(changed("test.accuracy", value))


def test_the_schema_file_is_valid_json_schema_and_train_py_output_follows_it():
    jsonschema.Draft202012Validator.check_schema(
        json.loads(metrics_contract.SCHEMA_PATH.read_text())
    )
    metrics_contract.validate(METRICS)


def test_the_gate_reads_what_train_py_wrote():
    read = parse_metrics(FIXTURE.read_bytes())
    assert read.model_version == METRICS["model_version"]
    assert read.test_accuracy == METRICS["test"]["accuracy"] and read.test_n == 294
    assert read.threshold == METRICS["threshold"]["threshold"]
    assert read.champion_test_accuracy is None and read.raw == METRICS


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (changed("test", delete=True), "top level: must contain ['test'] properties"),
        (changed("test.accuracy", 1.5), "test.accuracy: must be smaller than or equal to 1"),
        (
            changed("threshold.target_accuracy", delete=True),
            "threshold: must contain ['target_accuracy'] properties",
        ),
        (b"{not json", "metrics.json is not JSON"),
    ],
)
def test_a_malformed_metrics_json_is_an_invalid_artifact_that_says_where(doc, reason):
    with pytest.raises(InvalidArtifact) as caught:
        parse_metrics(doc)
    assert reason in str(caught.value)


# -- Ground Truth augmented manifests


def test_a_labeled_line_reads_back_as_written():
    # Given a line as the dataset snapshot writes it (a labeling job's attribute name)
    line = manifest.labeled_line(
        "s3://b/datasets/s/train/cat/x.png",
        "cat",
        0,
        human=True,
        job_name="labeling-job/snap",
        creation_date="2026-11-30T12:00:00",
        sampling="random",
        attribute="animal",
        fields={"split": "train"},
    )
    # Then its shape is Ground Truth's, and the reader gives back what went in
    assert line["animal"] == 0 and line["animal-metadata"]["type"] == manifest.TYPE
    assert manifest.parse_line(manifest.dumps([line]).strip()) == manifest.ManifestLabel(
        "s3://b/datasets/s/train/cat/x.png", "cat", "animal", "random"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON line"),
        ("[1, 2]", "must be a JSON object"),
        ('{"label": "cat"}', "no source-ref"),
        ('{"source-ref": "s3://b/k", "label": 3}', "label is 3 and label-metadata has no"),
        ('{"source-ref": "s3://b/k", "label": 3, "label-metadata": 1}', "must be a JSON object"),
        ('{"source-ref": "s3://b/k", "a": 0, "a-metadata": {"class-name": 7}}', "class-name"),
    ],
)
def test_a_line_that_is_not_a_manifest_line_says_why(line, reason):
    with pytest.raises(manifest.InvalidManifestLine, match=reason):
        manifest.parse_line(line)


def test_a_line_without_an_answer_has_no_label_and_unknown_sampling_is_none():
    empty = manifest.parse_line('{"source-ref": "s3://b/k", "label": " "}')
    assert empty.label is None and empty.sampling is None
    bare = manifest.parse_line({"source-ref": "s3://b/k", "label": "cat"})
    assert bare.label == "cat" and bare.attribute == "label"
    odd = manifest.parse_line(
        {"source-ref": "k", "label": 0, "label-metadata": {"class-name": "cat", "sampling": "x"}}
    )
    assert odd.sampling is None


def test_the_cli_export_and_the_snapshot_lines_are_labels_files_the_functions_accept():
    # Given lines from both writers
    snapshot = build_snapshot([("a" * 64, "cat", "random"), ("b" * 64, "dog", "selected")])
    lines = manifest_lines(snapshot, "bucket", "labeling-job/x", "2026-11-30T12:00:00")
    # When they come back as a labels file
    parsed = parse_manifest(manifest.dumps(lines))
    # Then every line is a label for its image
    assert not parsed.errors and [line.label for line in parsed.lines] == ["cat", "dog"]


# -- model_config.json

CONFIG = {
    "arch": "small_cnn", "classes": ["cat", "dog"], "image_size": 32,
    "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "temperature": 1.2, "threshold": 1.01,
    "target_accuracy": 0.95, "model_version": "dfw-v1", "topk": 2,
}  # fmt: skip


def test_a_model_config_splits_into_its_two_files_and_joins_back_valid():
    whole = {**CONFIG, "ood": {"threshold": 3.0, "means": [[0.0]]}}
    served, detector = model_config.split(whole)
    assert "ood" not in served and detector == whole["ood"]
    assert model_config.validate(model_config.join(served, detector)) == whole
    assert model_config.split(CONFIG) == (CONFIG, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"topk": 0}, "topk: must be bigger than or equal to 1"),
        ({"std": [0.2, 0.0, 0.2]}, r"std\[1\]: must be bigger than 0"),
        ({"classes": []}, "classes: must contain at least 1 items"),
        ({"ood": {"means": []}}, r"ood: must contain \['threshold'\] properties"),
    ],
)
def test_a_model_config_the_endpoint_cannot_serve_is_refused_saying_where(change, reason):
    with pytest.raises(model_config.InvalidModelConfig, match=reason):
        model_config.validate({**CONFIG, **change})
    jsonschema.Draft202012Validator.check_schema(json.loads(model_config.SCHEMA_PATH.read_text()))
    assert not jsonschema.Draft202012Validator(
        json.loads(model_config.SCHEMA_PATH.read_text())
    ).is_valid({**CONFIG, **change})
