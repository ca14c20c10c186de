"""Train the flywheel's image classifier: the SageMaker training job, also runnable locally.

    python training_jobs/train.py --train path/to/imagefolder --epochs 5      # local, CPU
    torchrun --nproc_per_node=2 training_jobs/train.py --train ...            # several processes

One job trains the served model on every label, self-training on the `unlabeled` channel, then
one model per cross-fitting fold so that every random label certifies the auto-label threshold
(docs/certification.md). In the AWS PyTorch training container the hyperparameters arrive as
these flags and the paths from SM_* variables; see docs/training.md. One metric line per epoch
of the served model:
    epoch=3 train_loss=0.4100 val_loss=0.3800 val_accuracy=0.9120
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))  # classifier/ sits next to this file
from classifier import artifact, calibration, data, learners, metrics, models, ood  # noqa: E402
from classifier.engine import Run, confidence_and_correct, evaluate_champion  # noqa: E402
from flywheel.contracts import metrics as metrics_contract  # noqa: E402  (flywheel/ beside)

CHECKPOINTS = "/opt/ml/checkpoints"  # SageMaker syncs it with CheckpointConfig.S3Uri

# ----------------------------------------------------------------------------- configuration


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.strip().lower() in ("true", "1", "yes", "y", "t"):
        return True
    if value.strip().lower() in ("false", "0", "no", "n", "f", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


class ArgumentParser(argparse.ArgumentParser):
    def error(
        self, message: str
    ):  # a bad hyperparameter: raise so __main__ writes the failure file
        raise ValueError(f"bad hyperparameter: {message}")


def env(name: str, fallback: str = "") -> str:
    return os.environ.get(name) or fallback


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cpus = os.cpu_count() or 1
    # fmt: off
    # optimisation: AdamW, cosine schedule with linear warmup, early stopping on validation
    p.add_argument("--epochs", type=int, default=40, help="max supervised epochs (40)")
    p.add_argument("--batch-size", type=int, default=64, help="per process (64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (3e-3)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW (0.05)")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup (1)")
    p.add_argument("--patience", type=int, default=10, help="epochs without val gain; 0=never (10)")
    # semi-supervised: self-training on the unlabeled channel, kept only when validation gains
    p.add_argument("--pseudo-label", type=str2bool, default=True, help="self-training (true)")
    p.add_argument("--pseudo-threshold", type=float, default=0.95,
                   help="teacher confidence; a head's FixMatch mask per class (0.95)")
    p.add_argument("--pseudo-epochs", type=int, default=8, help="student epochs (8)")
    p.add_argument("--max-pseudo-labels", type=int, default=4000, help="per model (4000)")
    # model
    p.add_argument("--arch", default="auto",
                   help="auto (the better of small_cnn and a frozen pretrained efficientnet_lite0 "
                        "on validation), small_cnn, efficientnet_lite0 or torchvision's (auto)")
    p.add_argument("--pretrained", type=str2bool, default=False, help="ImageNet weights (false)")
    p.add_argument("--freeze-backbone", type=str2bool, default=True,
                   help="pretrained: train a head on frozen features with FixMatch (true)")
    p.add_argument("--image-size", type=int, default=0, help="0 = arch size, <= images' (0)")
    p.add_argument("--augment", type=float, default=0.5, help="strength in [0, 1] (0.5)")
    p.add_argument("--init-model", default="", help="model.tar.gz/dir to fine-tune, or 'champion'")
    # data
    p.add_argument("--label-attribute", default="label", help="Ground Truth attribute (label)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="if no validation channel")
    p.add_argument("--test-fraction", type=float, default=0.2, help="of random labels, no test ch.")
    p.add_argument("--default-sampling", choices=["random", "selected"], default="random",
                   help="labels whose manifest does not say how they were drawn (random)")
    p.add_argument("--workers", type=int, default=min(4, cpus), help="DataLoader processes")
    p.add_argument("--seed", type=int, default=0)
    # auto-label threshold: certified on every random-sampled label (docs/certification.md)
    p.add_argument("--target-accuracy", type=float, default=0.95, help="to certify (0.95)")
    p.add_argument("--confidence", type=float, default=0.95, help="that it holds (0.95)")
    p.add_argument("--cross-fit-folds", type=int, default=5, help="0 = certify on test only (5)")
    p.add_argument("--ood-quantile", type=float, default=0.99,
                   help="held-out images the out-of-distribution check accepts (0.99)")
    # paths: SageMaker's variables, local fallbacks
    p.add_argument("--train", default=env("SM_CHANNEL_TRAIN", "data/train"))
    p.add_argument("--validation", default=env("SM_CHANNEL_VALIDATION"))
    p.add_argument("--test", default=env("SM_CHANNEL_TEST"))
    p.add_argument("--unlabeled", default=env("SM_CHANNEL_UNLABELED"), help="unlabeled images")
    p.add_argument("--champion", default=env("SM_CHANNEL_CHAMPION"), help="serving model")
    p.add_argument("--model-dir", default=env("SM_MODEL_DIR", "model"))
    p.add_argument("--output-data-dir", default=env("SM_OUTPUT_DATA_DIR", "output/data"))
    p.add_argument("--checkpoint-dir", default=CHECKPOINTS if os.path.isdir(CHECKPOINTS) else "",
                   help="checkpoint.pt lives here; empty = none")
    p.add_argument("--num-gpus", type=int, default=int(env("SM_NUM_GPUS", "-1")), help="0 = CPU")
    p.add_argument("--model-version", default=env("TRAINING_JOB_NAME", f"local-{int(time.time())}"))
    # fmt: on
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args, unknown = get_args_parser().parse_known_args(argv)
    # SageMaker adds its own hyperparameters (sagemaker_*, _tuning_objective_metric): skip those.
    bad = [u for u in unknown if u.startswith("--") and not u[2:].startswith(("_", "sagemaker_"))]
    if bad:
        raise ValueError(f"bad hyperparameter: unknown {', '.join(bad)}")
    fractions = (args.val_fraction, args.test_fraction)
    checks = {
        "epochs >= 1": args.epochs >= 1,
        "batch-size >= 1": args.batch_size >= 1,
        "lr > 0": args.lr > 0,
        "weight-decay >= 0": args.weight_decay >= 0,
        "augment in [0, 1]": 0 <= args.augment <= 1,
        "target-accuracy in (0, 1)": 0 < args.target_accuracy < 1,
        "confidence in (0, 1)": 0 < args.confidence < 1,
        "ood-quantile in (0, 1)": 0 < args.ood_quantile < 1,
        "cross-fit-folds 0 or >= 2": args.cross_fit_folds == 0 or args.cross_fit_folds >= 2,
        "pseudo-threshold in (0, 1]": 0 < args.pseudo_threshold <= 1,
        "pseudo-epochs >= 0": args.pseudo_epochs >= 0,
        "patience >= 0": args.patience >= 0,
        "val-fraction + test-fraction < 1": min(fractions) >= 0 and sum(fractions) < 1,
        f"arch in {[learners.AUTO, *models.available_archs()[:4]]}...": args.arch
        in [learners.AUTO, *models.available_archs()],
    }
    failed = [rule for rule, ok in checks.items() if not ok]
    if failed:
        raise ValueError(f"bad hyperparameter: need {'; '.join(failed)}")
    return args


# ----------------------------------------------------------------------------- main


def main(args: argparse.Namespace) -> dict:
    # -- processes and device: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK, one process per GPU
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    use_cuda = torch.cuda.is_available() and args.num_gpus != 0
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, local_rank = (
        (dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))) if distributed else (0, 0)
    )
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        # Cores left by the DataLoader workers; oversubscribed OpenMP threads spin and stall.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - args.workers))
    master, amp = rank == 0, device.type == "cuda"  # one mixed-precision path: bf16 on CUDA
    log = (lambda *a: print(*a, flush=True)) if master else (lambda *a: None)

    # -- data: labels (each says how it was drawn), test, the unlabeled pool
    sampling: dict[str, str] = {}
    train = data.load_channel(args.train, args.label_attribute, sampling)
    if not train:
        raise ValueError(
            f"no training images in {args.train!r} (ImageFolder <class>/<image> or one manifest)"
        )
    val = data.load_channel(args.validation, args.label_attribute)
    test = data.load_channel(args.test, args.label_attribute)
    pool = data.load_unlabeled(args.unlabeled)

    def is_random(sample: data.Sample) -> bool:
        return sampling.get(sample[0], args.default_sampling) == "random"

    if not test:  # the gate's test images: random-sampled labels only, never review answers
        _, _, test = data.split_samples([s for s in train if is_random(s)], 0, args.test_fraction)
        tested = set(test)
        train = [s for s in train if s not in tested]
    if not test:
        raise ValueError(
            "need test images: a test channel, or random-sampled labels in train "
            f"({sum(map(is_random, train))} now; see --default-sampling)"
        )
    init = (
        artifact.read_artifact(args.init_model) if args.init_model not in ("", "champion") else None
    )
    if args.init_model == "champion":  # the first round has no champion: start from scratch
        try:
            if not args.champion:
                raise ValueError("no champion channel")
            init = artifact.read_artifact(args.champion)
        except (ValueError, OSError) as error:
            log(f"init-model champion unusable ({error}): training from scratch")
    # Fixed class list: a class absent from one split never shifts the indices of the others.
    classes = sorted({c for _, c in train + val + test} | set(init[0]["classes"] if init else []))
    random_labels = [s for s in train if is_random(s)]
    folds = args.cross_fit_folds if len(random_labels) >= 2 * args.cross_fit_folds else 0
    log(f"data train={len(train)} (random {len(random_labels)}) test={len(test)} "
        f"unlabeled={len(pool)} classes={len(classes)} cross-fit folds={folds}")  # fmt: skip

    def split_validation(labels):
        """A validation set carved from the labels by file-name hash (random ones when enough)."""
        if val:
            return labels, val
        source = [s for s in labels if is_random(s)]
        source = source if len(source) >= 50 else labels
        # the band after the test fraction: the same hash put the test split below it
        _, held, _ = data.split_samples(source, args.val_fraction, args.test_fraction)
        held = held or source[:1]
        kept = set(held)
        return [s for s in labels if s not in kept], held

    # -- the learners: small_cnn on the images, a frozen pretrained backbone with a head, or
    # the one --arch names; each has its own input size and normalisation
    test_paths = [p for p, _ in test]
    every_image = [p for p, _ in train + val + test] + pool
    candidates = {}
    for arch in learners.candidate_archs(args):
        head = learners.is_head(arch, args)
        if args.arch == learners.AUTO and head and not models.pretrained_available(arch):
            log(f"{arch} skipped: its pretrained weights are not installed")
            continue
        default = models.default_image_size(arch)
        size = args.image_size or (default if head else data.auto_image_size(default, train))
        run = Run(args, device, amp, rank, distributed, classes, arch, size, log)
        candidates[arch] = learners.build(run, args, train + val, every_image)

    # -- the served model: every label; the test images and the pool unlabeled
    final_train, final_val = split_validation(train)
    finals = {}
    for name, learner in candidates.items():
        if not (learner.collective or master):
            continue
        # only an ImageLearner of the same arch fine-tunes; a frozen head always starts afresh
        own_init = init if init and init[0]["arch"] == name and learner.collective else None
        if init and own_init is None:
            log(f"init-model is {init[0]['arch']}, not {learner.description}: "
                "training from scratch")  # fmt: skip
        log(f"learner {name}: {learner.description}")
        finals[name] = learner.fit("final", final_train, final_val, pool + test_paths, own_init,
                                   args.checkpoint_dir if learner.collective else "")  # fmt: skip
    chosen, choice_scores = learners.choose(finals) if master else (None, {})
    chosen = run.broadcast(chosen)
    learner, final = candidates[chosen], finals.get(chosen) or {}  # {}: a waiting process
    if len(candidates) > 1:
        figures = ", ".join(f"{n} {v['val_accuracy']:.4f}" for n, v in choice_scores.items())
        log(f"learner chosen: {chosen} (validation accuracy: {figures})")
    run = learner.run

    # -- cross-fitting: fold k's random labels are scored by a model that never saw their labels
    # (it saw their images unlabeled, as the final model sees the images it will label)
    oof: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(folds):
        stage = f"fold {k + 1}/{folds}"
        held = [s for s in random_labels if data.fold_of(s[0], folds) == k]
        kept = set(held)
        fold_train, fold_val = split_validation([s for s in train if s not in kept])
        resumed = Path(args.checkpoint_dir, f"fold-{k + 1}", f"scores-{chosen}.npz")
        if run.broadcast(bool(args.checkpoint_dir) and resumed.is_file()):  # rank 0 decides
            if master:
                with np.load(resumed) as scores:
                    oof.append((scores["confidence"], scores["correct"]))
            log(f"{stage}: scores from the checkpoint")
            continue
        if not (learner.collective or master):
            continue
        fold_dir = str(Path(args.checkpoint_dir, f"fold-{k + 1}")) if args.checkpoint_dir else ""
        # Never from the champion: it may have trained on this fold's labels in an earlier round
        result = learner.fit(stage, fold_train, fold_val,
                             pool + test_paths + [p for p, _ in held], None,
                             fold_dir if learner.collective else "")  # fmt: skip
        if not master:
            continue
        temperature = calibration.fit_temperature(*learner.logits(result, fold_val))
        held_logits, held_labels = learner.logits(result, held)
        scores = confidence_and_correct(held_logits, held_labels, temperature)
        oof.append(scores)
        if args.checkpoint_dir:
            resumed.parent.mkdir(parents=True, exist_ok=True)
            np.savez(resumed, confidence=scores[0], correct=scores[1])
        log(f"{stage}: {len(held)} held-out random labels, accuracy {scores[1].mean():.4f}")
    if distributed:
        dist.destroy_process_group()
    if not master:
        return {}

    # -- calibration (temperature on validation) and the certified auto-label threshold
    val_logits, val_labels = learner.logits(final, final_val)
    temperature = calibration.fit_temperature(val_logits, val_labels)
    test_logits, test_labels = learner.logits(final, test)
    ece_before = calibration.expected_calibration_error(
        *confidence_and_correct(val_logits, val_labels, 1.0)
    )
    ece_after = calibration.expected_calibration_error(
        *confidence_and_correct(val_logits, val_labels, temperature)
    )
    pool_scores = [confidence_and_correct(test_logits, test_labels, temperature), *oof]
    conf, correct = (np.concatenate(parts) for parts in zip(*pool_scores, strict=True))
    # The learner was chosen on labels that certify: each candidate gets its share of delta.
    families = len(candidates)
    choice = calibration.certify_threshold(conf, correct, args.target_accuracy, args.confidence,
                                           families=families)  # fmt: skip
    Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)  # the evidence, for audits
    np.savez(Path(args.output_data_dir) / "certification.npz", confidence=conf, correct=correct)
    projection = calibration.labels_needed(conf, correct, args.target_accuracy, args.confidence,
                                           families=families)  # fmt: skip
    need = calibration.min_samples_for(
        args.target_accuracy, args.confidence, len(calibration.START_MULTIPLES) * families
    )
    log(f"calibration temperature={temperature:.3f} ece_before={ece_before:.4f} "
        f"ece_after={ece_after:.4f}")  # fmt: skip
    if choice.reached:
        log(f"threshold={choice.threshold:.4f} coverage={choice.coverage:.3f} "
            f"lower_bound={choice.lower_bound:.4f} n={choice.n}")  # fmt: skip
    else:
        log(f"threshold: no confidence certifies {args.target_accuracy} with {choice.n} random "
            f"labels (needs >= {need} all correct): auto-label nothing "
            f"(threshold={choice.threshold})")  # fmt: skip

    # -- out-of-distribution refusal: class means and a shared covariance of the training
    # features; the refusal threshold is the --ood-quantile of images the model never trained on
    train_features, train_labels = learner.features(final, final_train)
    heldout_features, _ = learner.features(final, final_val + test)
    detector = ood.fit(train_features, train_labels, heldout_features, quantile=args.ood_quantile)
    log(f"ood threshold={detector['threshold']:.2f} quantile={args.ood_quantile} "
        f"n={detector['n_heldout']}")  # fmt: skip

    # -- evaluation on the test split, and of the champion on the same images
    test_report = metrics.classification_report(
        [c for _, c in test], [classes[i] for i in test_logits.argmax(1)], classes
    )
    has_champion = args.champion and Path(args.champion).exists()
    champion_test = (
        evaluate_champion(args.champion, test, args, device, amp) if has_champion else None
    )
    log(f"test_accuracy={test_report['accuracy']:.4f}")
    if champion_test:
        log(f"champion_test_accuracy={champion_test['accuracy']:.4f}")

    # -- the artifact: weights, config, metrics, serving code
    val_predicted = [classes[i] for i in val_logits.argmax(1)]
    why = (
        "the only one asked for (--arch)"
        if len(candidates) == 1
        else "the highest validation accuracy (then the lowest validation loss) of the candidates"
    )
    result = {
        "schema_version": metrics_contract.SCHEMA_VERSION,
        "model_version": args.model_version,
        "arch": chosen,
        "learner": {
            "chosen": chosen,
            "description": learner.description,
            "candidates": choice_scores,
            "why": why,
        },
        "classes": classes,
        "epochs": final["history"],
        "best_epoch": final["best_epoch"],
        "validation": metrics.classification_report(
            [c for _, c in final_val], val_predicted, classes
        ),
        "test": test_report,
        "test_set_id": data.test_set_id(test),
        "champion_test": champion_test,
        "calibration": {
            "temperature": temperature,
            "ece_before": ece_before,
            "ece_after": ece_after,
            "n": len(final_val),
        },  # fmt: skip
        "threshold": {
            **choice.as_dict(),
            "data": f"cross-fit {folds} folds + test" if folds else "test",
            "families": families,
            "labels_needed": projection,
            "min_all_correct": need,
        },
        "data": {
            "train": len(final_train),
            "validation": len(final_val),
            "test": len(test),
            "random": len(random_labels) + len(test),
            "unlabeled": len(pool),
            "pseudo": final["pseudo"],
        },  # fmt: skip
    }
    config = {
        "arch": chosen, "classes": classes, "image_size": run.size, "mean": run.mean,
        "std": run.std, "temperature": temperature, "threshold": choice.threshold,
        "target_accuracy": args.target_accuracy, "model_version": args.model_version,
        "topk": min(5, len(classes)), "ood": detector,
    }  # fmt: skip
    artifact.save_artifact(args.model_dir, final["best"], config, result)
    Path(args.output_data_dir).mkdir(parents=True, exist_ok=True)
    artifact.write_json(Path(args.output_data_dir) / metrics_contract.FILE, result)
    return result


def write_failure(message: str) -> None:
    """SageMaker shows the failure file as the job's FailureReason (first 1 KiB)."""
    output = os.environ.get("SM_OUTPUT_DIR") or (
        "/opt/ml/output" if os.path.isdir("/opt/ml/output") else ""
    )
    if output:
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "failure").write_text(message[:1024])


if __name__ == "__main__":
    try:
        main(parse_args())
    except Exception as error:
        traceback.print_exc()
        write_failure(f"{type(error).__name__}: {error}")
        sys.exit(1)
