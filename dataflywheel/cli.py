"""``flywheel``: run the data flywheel on this machine, and operate it here or in AWS.

    flywheel up                      # serve the local stack (Ctrl-C stops; state is kept)
    flywheel demo [--quick]          # the whole loop on scikit-learn's digits, with a report
    flywheel upload DIR_OR_FILES... [--label CLASS | --labels-from-dirs]
    flywheel predict IMAGE...
    flywheel status
    flywheel train [--tuning | --no-tuning] [--wait]   # --wait: trials, epochs, the decision
    flywheel wait [--timeout S]                  # until queues are drained and jobs decided
    flywheel schedule StartTrainingFunction      # run a template schedule now
    flywheel review export [-o DIR] [--format csv|label-studio]  /  flywheel review import FILE
    flywheel review open [--stack NAME] # the review app: print a sign-in URL
    flywheel export --format {manifest,csv,imagefolder} -o OUT
    flywheel preflight [--parameter K=V]          # the account's SageMaker quotas

Every command but ``up``, ``demo`` and ``preflight`` reaches a stack through
CloudFormation (``DescribeStacks``: the template's Outputs name every resource):
``--stack NAME [--region R] [--profile P]`` a deployed stack, with your normal AWS
credential chain; otherwise the local stack that ``flywheel up`` serves and registered
in its own CloudFormation, found through ``<data-dir>/endpoints.json`` (``--data-dir``,
default ``.flywheel`` or ``FLYWHEEL_DATA_DIR``). Global options go before or after the
command. ``preflight`` reads the real account (before or after ``sam deploy``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import mimetypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class CliError(Exception):
    """A one-line error for the user."""


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir or os.environ.get("FLYWHEEL_DATA_DIR") or ".flywheel")


def _local_data_dir(args: argparse.Namespace) -> Path | None:
    """The local stack's folder, or None for a deployed stack (--stack without --data-dir)."""
    if args.stack and not args.data_dir:
        return None
    return _data_dir(args)


def _client(args: argparse.Namespace) -> Any:
    from dataflywheel.stack_client import StackClient

    return StackClient(
        _local_data_dir(args), stack=args.stack, region=args.region, profile=args.profile
    )


def _parameters(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CliError(f"--parameter wants KEY=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


# -- up ---------------------------------------------------------------------------


def _status_line(c: Any) -> str:
    s = c.counts()
    champ = c.champion()
    jobs = c.training_jobs(limit=5)
    running = [j["TrainingJobName"] for j in jobs if j["TrainingJobStatus"] == "InProgress"]
    parts = [f"{k}={v}" for k, v in s.items() if v]
    who = "none"
    if champ:
        who = f"{champ['model_version']} acc={float(champ.get('test_accuracy', 0)):.3f}"
    return f"items: {' '.join(parts) or 'none'} | champion: {who} | jobs running: {len(running)}"


def cmd_up(args: argparse.Namespace) -> int:
    from dataflywheel.stack_client import StackClient
    from samlocal.stack import DEFAULT_STACK, LocalStack

    if args.region or args.profile:
        raise CliError("flywheel up serves the stack on this machine: no --region/--profile")
    stack = LocalStack(
        _data_dir(args),
        stack_name=args.stack or DEFAULT_STACK,
        port_base=args.port_base,
        parameters=_parameters(args.parameter),
        schedules=not args.no_schedules,
        model_server_workers=args.model_server_workers,
    )
    print(f"starting the local stack in {stack.data_dir} ...", flush=True)
    info = stack.start()
    stop = threading.Event()
    # Ctrl-C and SIGTERM both stop cleanly (state saved); set SIGINT explicitly, since a
    # shell's background job starts with it ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    e, o = info["endpoints"], info["outputs"]
    print(
        f"""flywheel is up (stack {info["stack_name"]}, data in {info["data_dir"]})
  AWS APIs (moto)   {e["moto"]}
  SageMaker         {e["sagemaker"] or "off"}
  Lambda invoke     {e["lambda"]}
  review API        {e.get("http_api") or "off"}   (Cognito JWT required)
  upload bucket     s3://{o["UploadBucketName"]}   (labeled/<class>/... = human label)
  data bucket       s3://{o["DataBucketName"]}     (review/ batches, labels/ answers)
  endpoint          {o["EndpointName"]}
  try: aws --endpoint-url {e["moto"]} s3 cp img.png s3://{o["UploadBucketName"]}/
       flywheel predict img.png      (Ctrl-C stops; state stays in {info["data_dir"]})""",
        flush=True,
    )
    reviewer = info.get("reviewer")
    c = StackClient(stack.data_dir)
    if reviewer:
        password = json.loads(Path(reviewer["file"]).read_text())["password"]
        who = f"{reviewer['username']} / {password}"
        print(f"  reviewer login    {who}   (also in {reviewer['file']})", flush=True)
        print(
            f"  review app        {review_app_url(c, 12 * 3600)}\n"
            "                    (open it, sign in with the login above; valid 12 h, "
            "a fresh link: flywheel review open)",
            flush=True,
        )
    try:
        while not stop.wait(args.status_every):
            try:
                line = f"[{time.strftime('%H:%M:%S')}] {_status_line(c)}"
            except Exception as exc:  # a transient read error must not stop the stack
                line = f"[{time.strftime('%H:%M:%S')}] status unavailable: {exc}"
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    print("stopping (state is saved) ...", flush=True)
    began = time.monotonic()
    stack.stop()
    parts = " ".join(f"{k} {v:.1f} s" for k, v in stack.stop_timings.items())
    print(f"stopped in {time.monotonic() - began:.1f} s ({parts})", flush=True)
    # Everything is saved and every child has exited: skip the interpreter's teardown
    # (freeing the template, clients, imported libraries took 1.4-2.8 s of a Ctrl-C).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- upload / predict -------------------------------------------------------------


def _images(paths: list[str]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif p.is_file():
            out.append(p)
        else:
            raise CliError(f"no such file or directory: {p}")
    if not out:
        raise CliError("no images found")
    return out


def cmd_upload(args: argparse.Namespace) -> int:
    from flywheel.domain.labels import InvalidLabel, validate_label
    from tqdm import tqdm

    c = _client(args)
    files = _images(args.paths)
    labels = {args.label} if args.label else set()
    labels |= {f.parent.name for f in files} if args.labels_from_dirs else set()
    for label in sorted(labels):  # the pipeline would refuse them: say so before uploading
        try:
            validate_label(label)
        except InvalidLabel as exc:
            raise CliError(exc.reason) from exc
    if args.random_sample and not (args.label or args.labels_from_dirs):
        raise CliError("--random-sample declares human labels: use it with --labels-from-dirs")
    s3 = c.client("s3")

    def key(f: Path) -> str:
        if args.label:
            return f"labeled/{args.label}/{f.name}"
        if args.labels_from_dirs:
            return f"labeled/{f.parent.name}/{f.name}"
        return f"{args.prefix.strip('/') + '/' if args.prefix else ''}{f.name}"

    extra: dict[str, Any] = {}
    if args.random_sample:
        # Declares these labels a uniform random sample of the uploads: they may certify.
        extra["Metadata"] = {"flywheel-sampling": "random"}

    def put(f: Path) -> None:
        s3.upload_file(
            str(f),
            c.upload_bucket,
            key(f),
            ExtraArgs={
                "ContentType": mimetypes.guess_type(f.name)[0] or "application/octet-stream",
                **extra,
            },
        )

    with ThreadPoolExecutor(8) as pool, tqdm(total=len(files), unit="img", desc="upload") as bar:
        for _ in pool.map(put, files):
            bar.update()
    print(f"uploaded {len(files)} image(s) to s3://{c.upload_bucket}/")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    c = _client(args)
    rt = c.client("sagemaker-runtime")
    rows = []
    for f in _images(args.images):
        ctype = mimetypes.guess_type(f.name)[0] or "application/x-image"
        try:
            resp = rt.invoke_endpoint(
                EndpointName=c.endpoint_name,
                ContentType=ctype,
                Accept="application/json",
                Body=f.read_bytes(),
            )
        except rt.exceptions.ValidationError as exc:
            raise CliError(
                f"endpoint {c.endpoint_name} is not serving yet "
                f"(no model promoted?): {exc.response['Error']['Message']}"
            ) from exc
        body = json.loads(resp["Body"].read())
        p = body["predictions"][0]
        rows.append(
            (str(f), p["label"], p["confidence"], p.get("auto_label"), body.get("model_version"))
        )
        if args.json:
            print(json.dumps({"image": str(f), **body}))
    if not args.json:
        width = min(60, max(len(r[0]) for r in rows))
        for r in rows:
            print(
                f"{r[0][-width:]:<{width}}  {r[1]:>6}  {r[2]:.3f}  "
                f"{'auto' if r[3] else 'review'}  {r[4]}"
            )
    return 0


# -- status / train ------------------------------------------------------------------


def _dashboard(c: Any) -> dict:
    """The dashboard's figures through the same service as ``GET /review/dashboard``, run
    here against the stack's endpoints (no token needed: the CLI has the stack's access)."""
    from flywheel.adapters import aws
    from flywheel.services import dashboard

    os.environ.update(c.env)
    aws.reset()
    # The stack's own value (DescribeStacks lists every parameter, defaults included).
    confidence = c.parameters.get("CertificationConfidence")
    if confidence is None:
        raise CliError(
            f"stack {c.stack_name} has no CertificationConfidence parameter: it was deployed "
            "from an older template.yaml; deploy this one (sam deploy)"
        )
    return dashboard.gather(c.items_table, c.champion_parameter, float(confidence))


def cmd_status(args: argparse.Namespace) -> int:
    from flywheel.domain.dashboard import lines

    c = _client(args)
    s = c.status()
    figures = _dashboard(c)
    if args.json:
        print(json.dumps({**s, "dashboard": figures}, default=str, indent=2))
        return 0
    print(f"stack {c.stack_name} ({c.where})")
    for line in lines(figures):
        print(line)
    jobs = s["training_jobs"]
    latest = s["latest_job"]
    print(
        "jobs       "
        + ("  ".join(f"{k}={v}" for k, v in jobs.items()) or "none")
        + (f"  latest {latest['TrainingJobName']} {latest['TrainingJobStatus']}" if latest else "")
    )
    for t in s["tuning_jobs"][:3]:
        print(f"tuning     {t['name']} {t['status']}")
    items = figures["items_by_state"]
    print(
        f"review     backlog={items['needs_review']}  batches={len(s['review_batches'])}"
        + (
            f"  latest s3://{c.data_bucket}/{s['review_batches'][-1]}"
            if s["review_batches"]
            else ""
        )
    )
    evaluation = s.get("latest_evaluation")
    if evaluation and evaluation.get("threshold"):
        from flywheel.domain.certification import curve_lines, explain

        champion_acc = evaluation.get("champion_test_accuracy")
        print(
            f"latest     {evaluation['model_version']}  test_accuracy="
            f"{float(evaluation['test_accuracy']):.4f} on {evaluation['test_n']} random labels"
            + (f"  champion {float(champion_acc):.4f} on the same" if champion_acc else "")
        )
        learner = evaluation.get("learner")
        if learner:
            tried = ", ".join(
                f"{name} {float(v['val_accuracy']):.4f}"
                for name, v in learner["candidates"].items()
            )
            print(f"learner    {learner['description']} (validation accuracy: {tried})")
        print(f"certified  {explain(evaluation['threshold'])}")
        for line in curve_lines(evaluation["threshold"]):
            print(f"           {line}")
    busy = {k: v for k, v in s["queues"].items() if v}
    print("queues     " + ("  ".join(f"{k}={v}" for k, v in busy.items()) or "empty"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Exit 0: started (or, with --wait, promoted); 2: the gate rejected it; 1: job failed."""
    c = _client(args)
    result = c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": args.tuning})
    print(json.dumps(result, default=str) if not isinstance(result, str) else result)
    if not args.wait:
        return 0
    name = (result or {}).get("job_name") if isinstance(result, dict) else None
    if not name or result.get("started") is False:
        why = result.get("reason") if isinstance(result, dict) else None
        raise CliError(f"no job was started{f' ({why})' if why else ''}, nothing to wait for")
    return _wait_for_decision(c, result.get("kind", "training"), name, args.timeout)


def _wait_for_decision(c: Any, kind: str, name: str, timeout: float) -> int:
    from dataflywheel.progress import JobProgress, follow

    deadline = time.monotonic() + timeout
    job = JobProgress(c.client("sagemaker"), c.client("logs"), kind, name)
    follow(
        lambda: (job.poll(), job.status in ("Completed", "Failed", "Stopped")),
        lambda line: print(line, flush=True),
        timeout,
        f"{kind} job {name}",
    )
    if job.status != "Completed":
        print(f"{name}: {job.status}; no model to promote")
        return 1
    version = c.judged_version(kind, name)
    if not version:
        print(f"{name}: Completed without a best training job; no model to promote")
        return 1
    print(f"waiting for promote to judge {version} ...", flush=True)
    decided = c.wait(
        lambda: c.decision(version),
        timeout=max(deadline - time.monotonic(), 1),
        what=f"the promotion decision on {version}",
    )
    scores = f"test_accuracy={decided['test_accuracy']}" + (
        f" vs champion {decided['champion_test_accuracy']}"
        if decided.get("champion_test_accuracy") not in (None, "none")
        else " (no champion before)"
    )
    print(f"{decided['outcome']}: {version}  {scores}  {decided['reason']}")
    return 0 if decided["outcome"] == "promoted" else 2


def cmd_wait(args: argparse.Namespace) -> int:
    """Until the stack is idle: work queues drained, no job running, every model judged."""
    c = _client(args)
    state: dict[str, Any] = {"last": None, "quiet": 0}

    def poll() -> tuple[list[str], bool]:
        busy = c.activity()
        lines = []
        if busy != state["last"]:
            stamp = time.strftime("%H:%M:%S")
            lines.append(f"[{stamp}] " + ("idle" if not busy else "busy: " + "  ".join(busy)))
        state["last"] = busy
        # Idle twice in a row: a message between two queues is briefly in neither.
        state["quiet"] = state["quiet"] + 1 if not busy else 0
        return lines, state["quiet"] >= 2

    from dataflywheel.progress import follow

    follow(
        poll,
        lambda line: print(line, flush=True),
        args.timeout,
        "the stack to be idle",
        every=args.every,
    )
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    c = _client(args)
    result = c.fire_schedule(args.function)
    print(json.dumps(result.get("result"), default=str))
    return 0


# -- review -----------------------------------------------------------------------


def cmd_review_export(args: argparse.Namespace) -> int:
    c = _client(args)
    request = {"reason": "manual", "image_urls": args.image_urls}
    result = c.invoke("ReviewExportFunction", request)
    if not result or not result.get("batch_id"):
        print(f"nothing to review ({json.dumps(result, default=str)})")
        return 0
    wanted = ("label_studio_tasks", "label_studio_config")
    if args.format == "csv":
        wanted = ("csv", "manifest")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    got = {}
    for name in wanted:
        key = str(result[name]).split(f"s3://{c.data_bucket}/", 1)[-1]
        dest = out / Path(key).name
        c.client("s3").download_file(c.data_bucket, key, str(dest))
        got[name] = dest
        print(f"wrote {dest}")
    print(f"{result['items']} item(s) of {result['pending']} pending: {result.get('reasons')}")
    if result.get("image_urls_expire"):
        print(
            f"image links expire at {result['image_urls_expire']} (earlier if the credentials "
            "that signed them do): export again for fresh ones"
        )
    if args.format == "csv":
        print(
            "open image_url, fill the label column of the CSV, then: "
            f"flywheel review import {got['csv']}"
        )
    else:
        print(
            "in Label Studio: Settings > Labeling Interface > Code: paste "
            f"{got['label_studio_config']}; Import: {got['label_studio_tasks']}; when done, "
            "Export as JSON (or JSON-MIN), then: flywheel review import <export>.json"
        )
    return 0


def review_app_url(c: Any, expires: int) -> str:
    """Upload the review page (configured for the local stack) and presign a GET of it."""
    from dataflywheel import review_app

    config = review_app.config_for(
        api_url=c.outputs["ReviewApiUrl"],
        client_id=c.outputs["ReviewUserPoolClientId"],
        region=c.info["region"],
        stack=c.info["stack_name"],
        cognito=c.info["endpoints"]["moto"],  # moto's cognito-idp: the page's own origin
    )
    return review_app.publish(c.client("s3"), c.data_bucket, config, expires)


def cmd_review_open(args: argparse.Namespace) -> int:
    from dataflywheel import review_app

    if _local_data_dir(args) is None:  # a deployed stack: its outputs through CloudFormation
        from botocore.config import Config

        session = _aws_session(args)
        region = session.region_name
        if not region:
            raise CliError("no AWS region: pass --region or configure one")
        outputs = dict(_client(args).outputs)
        # Virtual-hosted on the regional endpoint: the origin the API's CORS allows.
        s3 = session.client(
            "s3",
            region_name=region,
            endpoint_url=f"https://s3.{region}.amazonaws.com",
            config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
        )
        config = review_app.config_for(
            outputs["ReviewApiUrl"], outputs["ReviewUserPoolClientId"], region, args.stack
        )
        url = review_app.publish(s3, outputs["DataBucketName"], config, args.expires)
        how = (
            "sign in as a reviewer of user pool "
            f"{outputs.get('ReviewUserPoolId', '?')} (invite one: aws cognito-idp "
            "admin-create-user --user-pool-id <id> --username NAME)"
        )
    else:
        c = _client(args)
        url = review_app_url(c, args.expires)
        reviewer = c.info.get("reviewer") or {}
        who = reviewer.get("username", "reviewer")
        how = f"sign in as {who} (password in {reviewer.get('file')})"
    print(url)
    print(f"open it in a browser within {args.expires} s; {how}")
    return 0


def _labels_key(f: Path) -> str:
    """labels/<time>-<name>; a .json file is a Label Studio export (named so the stack's
    labels/*.label-studio.json notification picks it up)."""
    from flywheel.domain.labels import LABEL_FILE_SUFFIXES, LABEL_STUDIO_SUFFIX

    name = f.name
    if name.endswith(".json") and not name.endswith(LABEL_STUDIO_SUFFIX):
        name = name.removesuffix(".json") + LABEL_STUDIO_SUFFIX
    if not name.endswith(LABEL_FILE_SUFFIXES):
        raise CliError(
            "a labels file is .csv, .manifest, .jsonl or a Label Studio JSON export (.json)"
        )
    return f"labels/{time.strftime('%Y%m%dT%H%M%S')}-{name}"


def cmd_review_import(args: argparse.Namespace) -> int:
    c = _client(args)
    f = Path(args.file)
    if not f.is_file():
        raise CliError(f"no such file: {f}")
    key = _labels_key(f)
    s3 = c.client("s3")
    s3.upload_file(str(f), c.data_bucket, key)
    print(f"uploaded s3://{c.data_bucket}/{key}; waiting for it to be applied ...")

    def read(name: str) -> dict[str, Any] | None:
        try:
            return json.loads(s3.get_object(Bucket=c.data_bucket, Key=name)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None

    shown: set[int] = set()

    def result() -> dict[str, Any] | None:
        done = read(f"{key}.result.json")
        # A large file is applied in chunks, across invocations: say how far it got.
        p = None if done else read(f"{key}.progress.json")
        if p and int(p.get("rows_done", 0)) not in shown:
            shown.add(int(p.get("rows_done", 0)))
            print(
                f"applying: {p.get('rows_done')}/{p.get('rows_total')} rows (applied "
                f"{p.get('applied')}, unchanged {p.get('unchanged')}, unknown {p.get('unknown')})"
            )
        return done

    r = c.wait(result, timeout=args.timeout, every=1, what="the labels file result")
    print(json.dumps(r, indent=2, default=str))
    return 0


# -- export -----------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    c = _client(args)
    states = tuple(s.strip() for s in args.states.split(","))
    items = [i for i in c.items(states) if i.get("label") and i.get("image_key")]
    out = Path(args.output)
    if args.format == "imagefolder":
        out.mkdir(parents=True, exist_ok=True)  # an empty state is an empty dataset
    bucket = c.data_bucket
    refused: list[str] = []
    if args.format == "imagefolder":
        from flywheel.domain.labels import InvalidLabel, validate_label
        from flywheel.domain.paths import UnsafePath, safe_join

        s3 = c.client("s3")

        def fetch(i: dict[str, Any]) -> None:
            # Labels and ids are data: one that is no class name never picks a path.
            try:
                dest = safe_join(out, validate_label(str(i["label"])), f"{i['item_id']}.png")
            except (InvalidLabel, UnsafePath) as exc:
                refused.append(f"{i['item_id']}: {exc}")
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, i["image_key"], str(dest))

        with (
            ThreadPoolExecutor(8) as pool,
            tqdm(total=len(items), unit="img", desc="export") as bar,
        ):
            for _ in pool.map(fetch, items):
                bar.update()
    elif args.format == "csv":
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(
                [
                    "item_id",
                    "image_uri",
                    "label",
                    "label_source",
                    "confidence",
                    "model_version",
                    "source_key",
                ]
            )
            for i in items:
                w.writerow(
                    [
                        i["item_id"],
                        f"s3://{bucket}/{i['image_key']}",
                        i["label"],
                        i.get("label_source", ""),
                        i.get("confidence", ""),
                        i.get("model_version", ""),
                        i.get("source_key", ""),
                    ]
                )
    else:  # Ground Truth augmented manifest
        from flywheel.contracts import manifest

        out.parent.mkdir(parents=True, exist_ok=True)
        classes = sorted({str(i["label"]) for i in items})
        lines = []
        for i in items:
            human = i.get("label_source") == "human"
            lines.append(
                manifest.labeled_line(
                    f"s3://{bucket}/{i['image_key']}",
                    str(i["label"]),
                    classes.index(str(i["label"])),
                    human=human,
                    job_name="labeling-job/flywheel-human"
                    if human
                    else f"labeling-job/{i.get('model_version', 'model')}",
                    creation_date=str(i.get("updated_at", "")).rstrip("Z")[:26],
                    confidence=float(i.get("confidence", 1.0) if not human else 1.0),
                )
            )
        out.write_text(manifest.dumps(lines))
    print(f"exported {len(items) - len(refused)} labeled image(s) to {out} ({args.format})")
    if refused:
        for line in refused[:20]:
            print(f"flywheel: not exported: {line}", file=sys.stderr)
        print(f"flywheel: {len(refused)} item(s) not exported: invalid label", file=sys.stderr)
        return 1
    return 0


# -- demo -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from dataflywheel.demo import run_demo

    report = run_demo(
        out_dir=Path(args.out),
        fraction=args.fraction,
        quick=args.quick,
        seed=args.seed,
        keep=args.keep,
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )
    return 0 if report.get("targets_met") or args.quick or args.fraction < 1 else 1


# -- preflight --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _aws_session(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.Session(profile_name=args.profile, region_name=args.region)


def _samconfig_overrides(path: Path) -> dict[str, str]:
    """``parameter_overrides`` of samconfig.toml's default deploy section (KEY=VALUE ...)."""
    import shlex
    import tomllib

    if not path.is_file():
        return {}
    deploy = tomllib.loads(path.read_text()).get("default", {}).get("deploy", {})
    raw = deploy.get("parameters", {}).get("parameter_overrides", "")
    pairs = shlex.split(raw) if isinstance(raw, str) else list(raw)
    return _parameters([p for p in pairs if "=" in p])


def preflight_parameters(args: argparse.Namespace, session: Any) -> dict[str, str]:
    """Template defaults < samconfig.toml < the deployed stack's (--stack) < --parameter."""
    from samlocal.cfn import load_template

    template = load_template(ROOT / "template.yaml")
    params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    params.update(_samconfig_overrides(ROOT / "samconfig.toml"))
    if args.stack:
        from dataflywheel.stack_ref import describe_with

        region = session.region_name
        cfn = session.client("cloudformation")
        ref = describe_with(cfn, args.stack, f"region {region}", region)
        params.update(ref.parameters)
    params.update(_parameters(args.parameter))
    return params


def cmd_preflight(args: argparse.Namespace) -> int:
    """Exit 0: the quota allows the stack's training; 1: it does not; 2: not checked."""
    from flywheel.adapters.quotas import QuotaLookupFailed, sagemaker_quotas
    from flywheel.domain.containers import container_image
    from flywheel.domain.quotas import TrainingNeed, check_training_quota, wanted_quota_names
    from flywheel.errors import ConfigurationError

    from samlocal.cfn import load_template

    if args.data_dir:
        raise CliError("preflight checks an AWS account: --stack NAME names a deployed stack")
    session = _aws_session(args)
    region = session.region_name
    if not region:
        raise CliError("no AWS region: pass --region or set AWS_REGION / a profile's region")
    p = preflight_parameters(args, session)
    tuning = p["EnableTuning"] == "true"
    need = TrainingNeed(
        p["TrainingInstanceType"],
        int(p["TrainingInstanceCount"]),
        p["UseSpotTraining"] == "true",
        int(p["MaxParallelTuningJobs"]) if tuning else 1,
    )
    images = load_template(ROOT / "template.yaml")["Mappings"]["PyTorchImages"].get(region, {})
    try:
        image = container_image(
            need.instance_type,
            images.get("TrainingCpu", ""),
            images.get("TrainingGpu", ""),
            p.get("TrainingImageUri", ""),
        )
    except ConfigurationError as exc:
        image = f"none ({exc})"
    print(f"region          {region}{f' (stack {args.stack})' if args.stack else ''}")
    kind = f"tuning, {need.parallel_jobs} parallel" if tuning else "single job"
    print(
        f"training        {need.instance_count} x {need.instance_type}"
        f"{' spot' if need.spot else ''} ({kind})"
    )
    print(f"training image  {image}")
    try:
        found = sagemaker_quotas(wanted_quota_names(need), session.client("service-quotas"))
    except QuotaLookupFailed as exc:
        print(
            f"quota           not checked: {exc} (needs servicequotas:ListServiceQuotas and "
            "servicequotas:ListAWSDefaultServiceQuotas)"
        )
        return 2
    verdict = check_training_quota(found, need, region)
    print(f"quota           {verdict.status}: {verdict.message}")
    return {"ok": 0, "insufficient": 1}.get(verdict.status, 2)


# -- parser -----------------------------------------------------------------------


GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--stack",),
        {
            "metavar": "NAME",
            "help": "the stack's name: a deployed stack (AWS, your credential chain) unless "
            "--data-dir is given; for up, the local stack's name (default flywheel)",
        },
    ),
    (("--region",), {"help": "AWS region of the deployed stack (default: your AWS config's)"}),
    (("--profile",), {"help": "AWS named profile (default: your credential chain)"}),
    (
        ("--data-dir",),
        {
            "metavar": "DIR",
            "help": "the local stack's folder (default .flywheel, or FLYWHEEL_DATA_DIR); "
            "its endpoints.json says where the local endpoints listen",
        },
    ),
    (("-v", "--verbose"), {"action": "store_true", "help": "log what the runtime does"}),
]


def _add_global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """On the top parser with defaults; on every command with none, so a value given
    after the command is kept and one given before it is not overwritten."""
    group = parser.add_argument_group("stack options (before or after the command)")
    for flags, kwargs in GLOBAL_OPTIONS:
        extra: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
        group.add_argument(*flags, **kwargs, **extra)


class _Parser(argparse.ArgumentParser):
    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _CommandParser)
        return super().add_subparsers(**kwargs)


class _CommandParser(_Parser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, top=False)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="flywheel",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="serve the local stack in the foreground")
    up.add_argument(
        "--port-base",
        type=int,
        default=4750,
        help="moto on PORT, SageMaker on PORT+1, Lambda on PORT+2 (0 = any free)",
    )
    up.add_argument(
        "--parameter",
        action="append",
        metavar="KEY=VALUE",
        help="template parameter override (repeatable), e.g. EnableTuning=false",
    )
    up.add_argument(
        "--no-schedules", action="store_true", help="do not run the template's schedules"
    )
    up.add_argument(
        "--status-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="print a status line this often (default 10)",
    )
    up.add_argument(
        "--model-server-workers",
        type=int,
        metavar="N",
        help="model server processes per endpoint variant (default: FLYWHEEL_MODEL_SERVER_WORKERS "
        "or one per core up to 2; a model's SAGEMAKER_MODEL_SERVER_WORKERS wins)",
    )
    up.set_defaults(fn=cmd_up)

    demo = sub.add_parser("demo", help="run the whole loop on scikit-learn's digits and report")
    demo.add_argument("--quick", action="store_true", help="a reduced run for CI (< 5 minutes)")
    demo.add_argument(
        "--fraction", type=float, default=1.0, help="use this fraction of the dataset"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split and sampling")
    demo.add_argument("--out", default="flywheel-demo-report", help="report directory")
    demo.add_argument("--keep", action="store_true", help="keep the demo's stack data directory")
    demo.set_defaults(fn=cmd_demo)

    up_ = sub.add_parser("upload", help="upload images to the upload bucket")
    up_.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    g = up_.add_mutually_exclusive_group()
    g.add_argument("--label", help="human label for all of them (key labeled/<label>/...)")
    g.add_argument(
        "--labels-from-dirs",
        action="store_true",
        help="each image's folder name is its label (ImageFolder layout)",
    )
    up_.add_argument("--prefix", default="", help="key prefix for unlabeled uploads")
    up_.add_argument(
        "--random-sample",
        action="store_true",
        help="these labeled images are a uniform random sample of the data: they may certify "
        "the auto-label threshold (S3 metadata flywheel-sampling=random)",
    )
    up_.set_defaults(fn=cmd_upload)

    pr = sub.add_parser("predict", help="classify images with the endpoint")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    pr.add_argument("--json", action="store_true", help="one JSON response per line")
    pr.set_defaults(fn=cmd_predict)

    st = sub.add_parser("status", help="items by state, jobs, champion, review backlog")
    st.add_argument("--json", action="store_true", help="the status as JSON")
    st.set_defaults(fn=cmd_status)

    tr = sub.add_parser(
        "train",
        help="start a training (or tuning) run now",
        description="Invokes StartTrainingFunction. With --wait: each trial's and job's status "
        "and per-epoch metrics as they are logged, then promote's decision. Exit 0 started or "
        "promoted, 2 the gate rejected the model, 1 the job failed.",
    )
    g = tr.add_mutually_exclusive_group()
    g.add_argument(
        "--tuning",
        dest="tuning",
        action="store_true",
        default=None,
        help="a hyperparameter tuning job (default: the stack's EnableTuning)",
    )
    g.add_argument("--no-tuning", dest="tuning", action="store_false", help="one training job")
    tr.add_argument(
        "--wait", action="store_true", help="follow trials and epochs, then promote's decision"
    )
    tr.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait in all (default 1800)"
    )
    tr.set_defaults(fn=cmd_train)

    wt = sub.add_parser(
        "wait",
        help="wait until the stack is idle (queues drained, no job running, models judged)",
        description="Returns when no message waits in a work queue, no training or tuning job "
        "runs, the endpoint is not updating and promote has judged the latest model. Exit 1 "
        "on timeout.",
    )
    wt.add_argument(
        "--timeout", type=float, default=1800, help="seconds to wait at most (default 1800)"
    )
    wt.add_argument("--every", type=float, default=2.0, help="seconds between checks (default 2)")
    wt.set_defaults(fn=cmd_wait)

    sc = sub.add_parser("schedule", help="run a function's template schedule now")
    sc.add_argument(
        "function",
        help="logical id, e.g. StartTrainingFunction (invoked with its schedule's Input)",
    )
    sc.set_defaults(fn=cmd_schedule)

    rv = sub.add_parser("review", help="export a review batch / import answers")
    rsub = rv.add_subparsers(dest="review_command", required=True, metavar="ACTION")
    rx = rsub.add_parser("export", help="export needs_review items now and download the batch")
    rx.add_argument("-o", "--output", default=".", help="folder for the batch files")
    rx.add_argument(
        "--format",
        choices=("csv", "label-studio"),
        default="csv",
        help="csv: the review CSV and a Ground Truth manifest; label-studio: Label Studio "
        "tasks with the model's pre-annotations and the labeling config to paste",
    )
    rx.add_argument(
        "--image-urls",
        choices=("presigned", "s3"),
        default="presigned",
        help="presigned: GET links anyone with the file can open until they expire "
        "(IMAGE_URL_SECONDS); s3: s3:// URIs that a Label Studio S3 storage connection "
        "resolves (docs/review-api.md)",
    )
    rx.set_defaults(fn=cmd_review_export)
    ri = rsub.add_parser(
        "import",
        help="upload a labels file (.csv/.manifest/.jsonl, or a Label Studio JSON export) "
        "and wait for its result",
    )
    ri.add_argument("file", help="the filled-in labels file")
    ri.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for its result (default 300)"
    )
    ri.set_defaults(fn=cmd_review_import)
    ro = rsub.add_parser(
        "open",
        help="upload the review app and print a presigned URL to open it",
        description="Uploads the review page to the data bucket (app/index.html, configured "
        "for the stack's API and user pool) and prints a presigned GET of it. Without --stack: "
        "the local stack; with --stack: a deployed one (your AWS credentials).",
    )
    ro.add_argument(
        "--expires", type=int, default=3600, help="seconds the URL stays valid (default 3600)"
    )
    ro.set_defaults(fn=cmd_review_open)

    ex = sub.add_parser("export", help="export the labeled dataset")
    ex.add_argument(
        "--format",
        choices=("manifest", "csv", "imagefolder"),
        default="manifest",
        help="Ground Truth augmented manifest, CSV, or an ImageFolder tree (default manifest)",
    )
    ex.add_argument("-o", "--output", required=True, help="the file (or folder) to write")
    ex.add_argument(
        "--states",
        default="human_labeled,auto_labeled",
        help="comma-separated item states to include",
    )
    ex.set_defaults(fn=cmd_export)

    pf = sub.add_parser(
        "preflight",
        help="check the AWS account's SageMaker quotas for the stack's training settings",
        description="Reads the real account (your AWS credentials): the training quota for "
        "TrainingInstanceType (spot or on-demand, x MaxParallelTuningJobs when tuning) and the "
        "image that instance type gets. Parameters: template defaults, then samconfig.toml's "
        "parameter_overrides, then the deployed stack's (--stack), then --parameter. "
        "Exit 0 ok, 1 quota too low, 2 could not check.",
    )
    pf.add_argument(
        "--parameter",
        action="append",
        metavar="KEY=VALUE",
        help="template parameter to check instead (repeatable), e.g. UseSpotTraining=false",
    )
    pf.set_defaults(fn=cmd_preflight)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from botocore.exceptions import BotoCoreError, ClientError

    from dataflywheel.stack_ref import StackRefError
    from samlocal.stack import StackError

    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, StackError, StackRefError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as exc:
        print(f"flywheel: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
