"""What `flywheel train --wait` shows of one job's log: epochs with metrics, and the stages."""

from __future__ import annotations

from dataflywheel.progress import EpochLog

DEFINITIONS = [
    {"Name": "val_accuracy", "Regex": "val_accuracy=([0-9.]+)"},
    {"Name": "test_accuracy", "Regex": r"\btest_accuracy=([0-9.]+)"},
]
LOG = """data train=450 (random 450) test=50 unlabeled=4500 classes=10
learner small_cnn: small_cnn trained on the images at 32 px
epoch=1 train_loss=2.1000 val_loss=1.9000 val_accuracy=0.4000
learner efficientnet_lite0: efficientnet_lite0 (ImageNet weights, frozen) + a linear head, 224 px
features: 5000 images through efficientnet_lite0, plain and strong views, 2 weak views of 450 labeled
learner chosen: efficientnet_lite0 (validation accuracy: small_cnn 0.7000, efficientnet_lite0 0.8200)
fold 1/5 epoch 10: train loss 0.9000, validation accuracy 0.8000
fold 1/5: 90 held-out random labels, accuracy 0.8111
calibration temperature=1.100 ece_before=0.0500 ece_after=0.0200
test_accuracy=0.8100"""  # noqa: E501


class Logs:
    """CloudWatch Logs' two calls, over one stream holding LOG."""

    def describe_log_streams(self, **_):
        return {"logStreams": [{"logStreamName": "dfw-1/algo-1-1700000000"}]}

    def get_log_events(self, nextToken=None, **_):
        if nextToken == "end":
            return {"events": [], "nextForwardToken": "end"}
        return {"events": [{"message": m} for m in LOG.splitlines()], "nextForwardToken": "end"}


def test_the_log_shows_which_learner_and_which_fold_is_training():
    lines = EpochLog(Logs(), "dfw-1", DEFINITIONS).new_lines()
    assert lines == [
        "  dfw-1  learner small_cnn: small_cnn trained on the images at 32 px",
        "  dfw-1  epoch   1  val_accuracy=0.4000",
        "  dfw-1  learner efficientnet_lite0: efficientnet_lite0 (ImageNet weights, frozen) + a "
        "linear head, 224 px",
        "  dfw-1  features: 5000 images through efficientnet_lite0, plain and strong views, 2 weak "
        "views of 450 labeled",
        "  dfw-1  learner chosen: efficientnet_lite0 (validation accuracy: small_cnn 0.7000, "
        "efficientnet_lite0 0.8200)",
        "  dfw-1  fold 1/5 epoch 10: train loss 0.9000, validation accuracy 0.8000",
        "  dfw-1  fold 1/5: 90 held-out random labels, accuracy 0.8111",
        "  dfw-1  metrics    test_accuracy=0.8100",
    ]
    # each line once: a second poll of the same stream adds nothing
    log = EpochLog(Logs(), "dfw-1", DEFINITIONS)
    log.new_lines()
    assert log.new_lines() == []
