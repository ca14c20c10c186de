"""Pipeline throughput of the local stack: ingest and auto-label rates for N uploads, next to
the limits measured in the same run, with the RSS of moto and the model server.

    .venv/bin/python benchmarks/pipeline_throughput.py                       # N = 300, 1000
    .venv/bin/python benchmarks/pipeline_throughput.py --sizes 1000,5000,10000 --out bench.json
    .venv/bin/python benchmarks/pipeline_throughput.py --images photos --sizes 1000

Per N, on a fresh `flywheel up` (a child process, as the end-to-end tests start it):

1. moto round trips: sequential DynamoDB GetItem and SQS GetQueueAttributes calls per second.
2. A champion, the cheapest honest way: 100 human-labeled digits, one short training job
   (`StartTrainingFunction`, no tuning, a few epochs), promoted by the real promote path and
   rollout (baked 4 s).
3. Ingest: the champion parameter is set aside (auto-label then consumes its messages and
   leaves the items unlabeled, as with no model), N distinct unlabeled images (`--images`:
   32x32 digit PNGs, or 512x384 JPEG crops of scikit-learn's sample photographs) are
   uploaded from 8 threads; the rate is N over the time from the first upload to the latest
   `created_at` of the items.
4. Auto-label: the champion is put back and the rollout's own `relabel_sweep` queues every
   unlabeled item; the rate is N over the time from the sweep to the latest `updated_at`.
5. The limits, in this process after the stack is stopped: the OpenCV work of ingest
   (`contracts.images.check_image`, `image_codec.normalise_png`) on the same images on one
   core, and the champion's `inference.py` (`model_fn`, then `input_fn` + `predict_fn` +
   `output_fn` on JSON batches of the autolabel function's INFERENCE_BATCH_SIZE) on one core;
   and boto3's own CPU for an image's four unbatched requests (the upload, ingest's GetObject,
   PutObject and conditional PutItem) against a server that answers at once: the ceiling
   that the client alone puts on ingest, with any store, on this host's cores.

Next to each rate: the CPU the stack used per item over the phase (every process of the
`flywheel up` tree with the children it reaped, moto's share apart; the ingest phase runs
until the label queue is drained too). Wall time per item moves with whatever else the host
runs; CPU per item barely does, so it tells whether an item costs more in a bigger stack.

The end of each phase comes from the items' own timestamps, so progress is polled rarely
(every max(1, N/2000) s) and cheaply (DescribeTable's ItemCount, one Select=COUNT query for
the unlabeled): a poller that queried every state twice a second cost moto about a tenth of
its time at 1,000 items, and would grow with N. The figures depend on the host: print
`os.getloadavg()` next to them and compare ratios to the same-run limits, not absolute rates
across hosts.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for sub in ("", "functions/shared", "functions/ingest"):
    sys.path.insert(0, str(REPO / sub))

# The stack's processes by a mark in their command line (Stack.cpu_s and Stack.rss_mb).
PROCESS_KINDS = {
    "moto": b"moto_server",
    "functions": b"samlocal.worker",
    "model_server": b"sagemaker/worker.py",
}
STATES = ("unlabeled", "auto_labeled", "needs_review", "human_labeled", "rejected")
SEED_PER_CLASS = 10
PARAMETERS = {
    "EnableTuning": "false",
    "TrainingEpochs": "5",
    "CrossFitFolds": "2",
    "MinTestAccuracy": "0.0",  # any first model is promoted: this measures speed, not accuracy
    "TargetAutoLabelAccuracy": "0.8",
    "ClassNames": "0,1,2,3,4,5,6,7,8,9",
    "AuditFraction": "0",  # every unlabeled upload is auto-label work
    "MinNewHumanLabels": "1",
    # The first model is baked like any other: a short bake, or the default's 10 minutes.
    "RolloutBakeSeconds": "4",
    "RolloutPollSeconds": "2",
}


def note(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", flush=True)


# ----------------------------------------------------------------------------- data


def digit_pngs(n: int, seed: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` distinct 32x32 digit PNGs (load_digits, upscaled as `flywheel demo` does; a few
    pixels of noise make every copy a distinct image) and their labels."""
    import cv2
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    pngs, labels, seen = [], [], set()
    i = 0
    while len(pngs) < n:
        k = i % len(d.images)
        img = np.clip(d.images[k] * 16, 0, 255).astype(np.uint8)
        img = cv2.resize(img, (32, 32), interpolation=cv2.INTER_CUBIC)
        if i >= len(d.images):
            noise = rng.integers(-12, 13, size=img.shape)
            img = np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)
        png = cv2.imencode(".png", img)[1].tobytes()
        digest = hashlib.sha256(png).digest()
        if digest not in seen:
            seen.add(digest)
            pngs.append(png)
            labels.append(str(int(d.target[k])))
        i += 1
    return pngs, labels


def photo_jpegs(n: int, seed: int = 0, size: tuple[int, int] = (512, 384)) -> list[bytes]:
    """``n`` distinct camera-like JPEGs: crops of ``size`` at random offsets (and mirrored)
    from scikit-learn's two sample photographs (640x427), quality 90."""
    import cv2
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = [image[:, :, ::-1] for image in load_sample_images().images]  # RGB -> BGR
    rng = np.random.default_rng(seed)
    w, h = size
    out, seen = [], set()
    while len(out) < n:
        photo = photos[int(rng.integers(len(photos)))]
        x = int(rng.integers(photo.shape[1] - w + 1))
        y = int(rng.integers(photo.shape[0] - h + 1))
        crop = photo[y : y + h, x : x + w]
        if rng.integers(2):
            crop = crop[:, ::-1]
        jpeg = cv2.imencode(".jpg", np.ascontiguousarray(crop), [cv2.IMWRITE_JPEG_QUALITY, 90])
        data = jpeg[1].tobytes()
        digest = hashlib.sha256(data).digest()
        if digest not in seen:
            seen.add(digest)
            out.append(data)
    return out


# ----------------------------------------------------------------------------- the stack


class Stack:
    """`flywheel up` in a child process on a fresh data directory."""

    def __init__(self, data_dir: Path, workers: int | None) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.c: Any = None

    def start(self) -> None:
        from dataflywheel.stack_client import StackClient
        from samlocal.stack import StackError

        args = [sys.executable, "-m", "dataflywheel.cli", "--data-dir", str(self.data_dir), "up"]
        args += ["--port-base", "0", "--no-schedules", "--status-every", "3600"]
        for k, v in PARAMETERS.items():
            args += ["--parameter", f"{k}={v}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.workers:
            env["FLYWHEEL_MODEL_SERVER_WORKERS"] = str(self.workers)
        self.data_dir.mkdir(parents=True)
        log = open(self.data_dir.parent / "up.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flywheel up exited; see {log.name}")
            try:
                self.c = StackClient(self.data_dir)
                if self.c.info["pid"] == self.proc.pid:
                    os.environ.update(self.c.env)  # for the flywheel adapters used below
                    from flywheel.adapters import aws

                    aws.reset_all()  # clients cached for an earlier stack's endpoints
                    return
            except StackError:
                pass
            time.sleep(0.5)
        raise RuntimeError("flywheel up did not come up in time")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # -- reads (the same in every version of the code under test) ------------------

    def count(self, state: str) -> int:
        ddb, total, kwargs = self.c.client("dynamodb"), 0, {}
        while True:
            page = ddb.query(
                TableName=self.c.items_table,
                IndexName="state-index",
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={":s": {"S": state}},
                Select="COUNT",
                **kwargs,
            )
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def total(self) -> int:
        """Items in the table, from DescribeTable: moto counts them live (AWS updates
        ItemCount every few hours), at the cost of one dict length instead of a Query per
        state that reads and copies every item."""
        table = self.c.client("dynamodb").describe_table(TableName=self.c.items_table)
        return int(table["Table"]["ItemCount"])

    def last_written(self, field: str, since: str) -> tuple[int, float]:
        """How many items have ``field`` (an ISO timestamp) after ``since``, and the latest
        as epoch seconds: one Scan, after a phase, so that the polls during it can be rare."""
        import datetime as dt

        pages = (
            self.c.client("dynamodb")
            .get_paginator("scan")
            .paginate(
                TableName=self.c.items_table,
                ProjectionExpression="#f",
                ExpressionAttributeNames={"#f": field},
                FilterExpression="#f > :since",
                ExpressionAttributeValues={":since": {"S": since}},
            )
        )
        stamps = [item[field]["S"] for page in pages for item in page["Items"]]
        latest = dt.datetime.strptime(max(stamps), "%Y-%m-%dT%H:%M:%S.%fZ")
        return len(stamps), latest.replace(tzinfo=dt.UTC).timestamp()

    def label_queue_depth(self) -> int:
        attrs = self.c.client("sqs").get_queue_attributes(
            QueueUrl=self.c.output("LabelQueueUrl"),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def _tree(self) -> list[tuple[int, str | None]]:
        """`flywheel up` and its descendants, each with its kind (PROCESS_KINDS) or None."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
            except (OSError, IndexError, ValueError):
                continue
        todo, tree = [self.proc.pid], []
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            kinds = [kind for kind, mark in PROCESS_KINDS.items() if mark in cmd]
            tree.append((pid, kinds[0] if kinds else None))
        return tree

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by the whole stack (every process of the tree, with the
        children each has reaped: snapshot forks, ended workers) and by its parts: moto,
        the function workers, the model server; the rest is `flywheel up` itself (the event
        router, the local SageMaker). CPU, unlike wall time, barely moves with what else
        the host runs."""
        tick = os.sysconf("SC_CLK_TCK")
        out = dict.fromkeys(("stack", *PROCESS_KINDS), 0.0)
        for pid, kind in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
            out["stack"] += used
            if kind:
                out[kind] += used
        return out

    def rss_mb(self) -> dict[str, float]:
        """RSS (and peak) of moto and the model server(s): descendants of `flywheel up`."""
        out: dict[str, float] = {}
        for pid, kind in self._tree():
            if kind not in ("moto", "model_server"):
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            mem = {
                k: int(line.split()[1]) / 1024
                for line in status.splitlines()
                for k in ("VmRSS", "VmHWM")
                if line.startswith(k + ":")
            }
            out[f"{kind}_rss_mb"] = out.get(f"{kind}_rss_mb", 0) + mem.get("VmRSS", 0)
            out[f"{kind}_peak_mb"] = out.get(f"{kind}_peak_mb", 0) + mem.get("VmHWM", 0)
            out[f"{kind}_processes"] = out.get(f"{kind}_processes", 0) + 1
        return {k: round(v, 1) for k, v in out.items()}


def wait(predicate: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    from dataflywheel.stack_client import wait_until  # after the path setup, like the other imports

    return wait_until(predicate, timeout, what, every=every)


def moto_round_trips(stack: Stack, seconds: float = 3.0) -> dict[str, float]:
    ddb, sqs = stack.c.client("dynamodb"), stack.c.client("sqs")
    calls = {
        "ddb_get_item_per_s": lambda: ddb.get_item(
            TableName=stack.c.items_table, Key={"item_id": {"S": "no-such-item"}}
        ),
        "sqs_get_attributes_per_s": lambda: sqs.get_queue_attributes(
            QueueUrl=stack.c.output("LabelQueueUrl"), AttributeNames=["ApproximateNumberOfMessages"]
        ),
    }
    out = {}
    for name, call in calls.items():
        call()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            call()
            n += 1
        out[name] = round(n / (time.perf_counter() - t0), 1)
    return out


def upload(stack: Stack, keys_and_bodies: list[tuple[str, bytes, dict]]) -> None:
    s3 = stack.c.client("s3")

    def put(job: tuple[str, bytes, dict]) -> None:
        key, body, meta = job
        s3.put_object(Bucket=stack.c.upload_bucket, Key=key, Body=body, **meta)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, keys_and_bodies))


def train_champion(stack: Stack, pngs: list[bytes], labels: list[str]) -> dict:
    seed, by_class = [], {}
    for png, label in zip(pngs, labels, strict=True):
        if len(by_class.setdefault(label, [])) < SEED_PER_CLASS:
            by_class[label].append(png)
            seed.append((f"labeled/{label}/seed-{len(seed):04d}.png", png))
    meta = {"Metadata": {"flywheel-sampling": "random"}}
    upload(stack, [(k, b, meta) for k, b in seed])
    wait(lambda: stack.count("human_labeled") >= len(seed), 300, "the seed to be ingested")
    job = stack.c.invoke("StartTrainingFunction", {"reason": "manual", "tuning": False})
    note(f"seed of {len(seed)} ingested; training {job.get('job_name')}")
    champ = wait(
        lambda: (ch := stack.c.champion()) and ch.get("training_job") == job["job_name"] and ch,
        900,
        "the first champion",
        every=2,
    )
    sm = stack.c.client("sagemaker")
    wait(
        lambda: sm.describe_endpoint(EndpointName=stack.c.endpoint_name)["EndpointStatus"]
        == "InService",
        300,
        "the endpoint",
    )
    wait(lambda: stack.label_queue_depth() == 0, 300, "the post-promotion sweep")
    note(f"champion {champ['model_version']} serves {stack.c.endpoint_name}")
    return champ


def run_size(n: int, work: Path, workers: int | None, images: str) -> dict[str, Any]:
    pngs, labels = digit_pngs((n if images == "digits" else 0) + 2000)
    seed_pngs, seed_labels = pngs[-2000:], labels[-2000:]
    unlabeled = pngs[:n] if images == "digits" else photo_jpegs(n)
    stack = Stack(work / f"{images}-n{n}" / "data", workers)
    result: dict[str, Any] = {
        "n": n,
        "images": images,
        "upload_kb": round(sum(map(len, unlabeled)) / len(unlabeled) / 1024, 1),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    every = max(1.0, n / 2000)  # progress polls: rare, the end time comes from the items
    stack.start()
    try:
        result["moto_empty"] = moto_round_trips(stack)
        train_champion(stack, seed_pngs, seed_labels)
        result["inference_batch_size"] = _batch_size()
        ssm = stack.c.client("ssm")
        saved = ssm.get_parameter(Name=stack.c.champion_parameter)["Parameter"]["Value"]
        ssm.delete_parameter(Name=stack.c.champion_parameter)
        base = stack.total()

        # -- ingest: first upload to the last item's created_at -------------------
        jobs = [(f"incoming/bench {i:06d}.img", data, {}) for i, data in enumerate(unlabeled)]
        random.Random(1).shuffle(jobs)
        since, t0, cpu0 = _iso_now(), time.time(), stack.cpu_s()
        uploader = threading.Thread(target=upload, args=(stack, jobs))
        uploader.start()
        wait(lambda: stack.total() >= base + n, 60 + n * 0.5, "ingest", every=every)
        uploader.join()
        created, last = stack.last_written("created_at", since)
        t_ingest = last - t0
        result["ingested"] = created
        result["ingest_s"] = round(t_ingest, 2)
        result["ingest_per_s"] = round(n / t_ingest, 1)
        note(f"N={n}: ingested {created} in {t_ingest:.1f}s ({n / t_ingest:.1f} img/s)")
        wait(lambda: stack.label_queue_depth() == 0, 600, "the label queue to drain", every)
        result["ingest_cpu_ms"] = _cpu_per_item(cpu0, stack.cpu_s(), n)
        result["rss_after_ingest"] = stack.rss_mb()

        # -- auto-label: the sweep to the last item's updated_at -----------------
        from flywheel.services.rollout import relabel_sweep

        ssm.put_parameter(
            Name=stack.c.champion_parameter, Value=saved, Type="String", Overwrite=True
        )
        since, t1, cpu1 = _iso_now(), time.time(), stack.cpu_s()
        sent = relabel_sweep(stack.c.items_table, stack.c.output("LabelQueueUrl"))
        wait(
            lambda: stack.label_queue_depth() == 0 and stack.count("unlabeled") == 0,
            60 + n * 0.6,
            "the auto-label sweep",
            every,
        )
        labeled, last = stack.last_written("updated_at", since)
        t_label = last - t1
        result["swept"] = sent
        result["label_s"] = round(t_label, 2)
        result["label_per_s"] = round(n / t_label, 1)
        result["counts"] = {s: stack.count(s) for s in STATES}
        result["label_cpu_ms"] = _cpu_per_item(cpu1, stack.cpu_s(), n)
        note(f"N={n}: auto-labeled in {t_label:.1f}s ({n / t_label:.1f} items/s)")
        result["rss_after_label"] = stack.rss_mb()
        result["moto_loaded"] = moto_round_trips(stack)
        model_data = json.loads(saved)["model_data"]
        model_dir = work / f"n{n}" / "model"
        _download_model(stack, model_data, model_dir)
    finally:
        stack.stop()
    result["opencv_limit_per_s"] = opencv_limit(unlabeled[: min(n, 2000)])
    result["model_limit"] = model_limit(model_dir, unlabeled, result["inference_batch_size"])
    result["client_floor"] = client_floor(unlabeled[0])
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["ingest_vs_opencv"] = round(result["ingest_per_s"] / result["opencv_limit_per_s"], 3)
    result["client_ceiling_vs_opencv"] = round(
        result["client_floor"]["ceiling_per_s"] / result["opencv_limit_per_s"], 3
    )
    result["label_vs_model"] = round(
        result["label_per_s"] / result["model_limit"]["request_per_s"], 3
    )
    return result


def _cpu_per_item(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """CPU milliseconds per item over a phase: the stack's and each kind of process's."""
    return {k: round((after[k] - before[k]) * 1000 / n, 2) for k in before}


def _iso_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the items' stamps


def _batch_size() -> int:
    """The autolabel function's INFERENCE_BATCH_SIZE as the template resolves it."""
    from samlocal import provision as prov

    resolved = prov.resolve(REPO / "template.yaml", "flywheel", PARAMETERS)
    env = resolved["Resources"]["AutoLabelFunction"]["Properties"]["Environment"]["Variables"]
    return int(env["INFERENCE_BATCH_SIZE"])


def _download_model(stack: Stack, uri: str, into: Path) -> None:
    bucket, _, key = uri[5:].partition("/")
    into.mkdir(parents=True, exist_ok=True)
    tar = into.parent / "model.tar.gz"
    stack.c.client("s3").download_file(bucket, key, str(tar))
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")


# ----------------------------------------------------------------------------- limits


def opencv_limit(pngs: list[bytes], max_side: int = 1024) -> float:
    """Images per second of ingest's decode check and normalisation on one core."""
    import cv2
    from flywheel.contracts.images import check_image
    from image_codec import normalise_png

    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    for png in pngs:
        check_image(png, max_bytes=25 * 1024 * 1024)
        normalise_png(png, max_side)
    return round(len(pngs) / (time.perf_counter() - t0), 1)


class _NullAws(http.server.BaseHTTPRequestHandler):
    """Answers every S3 or DynamoDB request at once with a canned success: a store that
    costs nothing, so the client's own work is all that is measured."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave together, as a real server's do
    body = b""

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, body: bytes, content_type: str) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        for name, value in (
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("ETag", '"0"'),
            ("x-amz-version-id", "v1"),
        ):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(self.body, "application/octet-stream")

    def do_PUT(self) -> None:
        self._reply(b"", "application/xml")

    def do_POST(self) -> None:
        self._reply(b"{}", "application/x-amz-json-1.0")


def _serve_null_aws(port: Any, body: bytes) -> None:
    _NullAws.body = body
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NullAws)
    port.value = server.server_address[1]
    server.serve_forever()


def client_floor(sample: bytes, calls: int = 1000) -> dict[str, float]:
    """CPU of boto3 itself (this process only) per call of the three requests ingest makes
    for every image (GetObject of the upload, PutObject of the normalised PNG, a conditional
    PutItem) and the upload's own PutObject, against a server in another process that costs
    nothing: a floor under the cost of an image that no faster store can lower. The batched
    calls (receive, delete, BatchGetItem, SendMessageBatch) come on top, a tenth each."""
    import multiprocessing

    import boto3
    from botocore.config import Config

    port = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=_serve_null_aws, args=(port, sample), daemon=True)
    server.start()
    try:
        wait(lambda: port.value, 10, "the null AWS server", every=0.05)
        opts = {
            "endpoint_url": f"http://127.0.0.1:{port.value}",
            "region_name": "us-east-1",
            "aws_access_key_id": "bench",
            "aws_secret_access_key": "bench",
        }
        s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **opts)
        ddb = boto3.client("dynamodb", **opts)
        item = {"item_id": {"S": "0" * 64}, "state": {"S": "unlabeled"}, "key": {"S": "k"}}
        requests = {
            "get_object_ms": lambda: s3.get_object(Bucket="b", Key="k")["Body"].read(),
            "put_object_ms": lambda: s3.put_object(Bucket="b", Key="k", Body=sample),
            "put_item_ms": lambda: ddb.put_item(
                TableName="t", Item=item, ConditionExpression="attribute_not_exists(item_id)"
            ),
        }
        out: dict[str, float] = {}
        for name, call in requests.items():
            for _ in range(50):  # connections and botocore's caches warm
                call()
            t0 = time.process_time()
            for _ in range(calls):
                call()
            out[name] = round((time.process_time() - t0) / calls * 1000, 3)
    finally:
        server.terminate()
        server.join()
    per_image = out["get_object_ms"] + 2 * out["put_object_ms"] + out["put_item_ms"]
    out["per_image_ms"] = round(per_image, 3)
    out["ceiling_per_s"] = round((os.cpu_count() or 1) * 1000 / per_image, 1)
    return out


def model_limit(model_dir: Path, pngs: list[bytes], batch: int) -> dict[str, float]:
    """The champion's inference.py on one core: forward only, and a whole JSON request."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(model_dir / "code"))
    import inference

    model = inference.model_fn(str(model_dir))
    sample = pngs[: max(batch * 8, min(len(pngs), 512))]
    bodies = [
        json.dumps({"images": [base64.b64encode(p).decode() for p in sample[i : i + batch]]})
        for i in range(0, len(sample), batch)
    ]
    decoded = [inference.input_fn(b, "application/json") for b in bodies]
    inference.predict_fn(decoded[0], model)  # warm-up
    t0 = time.perf_counter()
    for images in decoded:
        inference.predict_fn(images, model)
    forward = len(sample) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for body in bodies:
        out = inference.predict_fn(inference.input_fn(body, "application/json"), model)
        inference.output_fn(out, "application/json")
    request = len(sample) / (time.perf_counter() - t0)
    return {"batch": batch, "forward_per_s": round(forward, 1), "request_per_s": round(request, 1)}


# ----------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("N", lambda r: r["n"]),
        ("images (mean upload KB)", lambda r: f"{r['images']} ({r['upload_kb']})"),
        ("ingest img/s", lambda r: r["ingest_per_s"]),
        ("  s/item", lambda r: f"{r['ingest_s'] / r['n']:.4f}"),
        ("  stack CPU ms/item (moto/functions/model)", lambda r: _cpu(r, "ingest")),
        ("  OpenCV limit img/s (1 core)", lambda r: r["opencv_limit_per_s"]),
        ("  ingest / OpenCV limit", lambda r: r["ingest_vs_opencv"]),
        ("  boto3 CPU ms/image, zero-cost store", lambda r: r["client_floor"]["per_image_ms"]),
        ("  its ceiling img/s (all cores)", lambda r: r["client_floor"]["ceiling_per_s"]),
        ("  its ceiling / OpenCV limit", lambda r: r["client_ceiling_vs_opencv"]),
        ("auto-label items/s", lambda r: r["label_per_s"]),
        ("  s/item", lambda r: f"{r['label_s'] / r['n']:.4f}"),
        ("  stack CPU ms/item (moto/functions/model)", lambda r: _cpu(r, "label")),
        ("  model limit img/s (request, 1 core)", lambda r: r["model_limit"]["request_per_s"]),
        ("  model forward img/s (1 core)", lambda r: r["model_limit"]["forward_per_s"]),
        ("  batch size", lambda r: r["inference_batch_size"]),
        ("  auto-label / model limit", lambda r: r["label_vs_model"]),
        ("moto GetItem/s (empty / loaded)", lambda r: _pair(r, "ddb_get_item_per_s")),
        ("moto SQS attrs/s (empty / loaded)", lambda r: _pair(r, "sqs_get_attributes_per_s")),
        ("moto RSS MB (peak)", lambda r: _rss(r, "moto")),
        ("model server RSS MB (peak, procs)", lambda r: _rss(r, "model_server", True)),
        ("load average before / after", lambda r: f"{r['load_before'][0]} / {r['load_after'][0]}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(
        f"{name:<{width}}  " + "  ".join(f"{fmt(r)!s:>16}" for r in results) for name, fmt in rows
    )


def _cpu(r: dict, phase: str) -> str:
    ms = r[f"{phase}_cpu_ms"]
    return f"{ms['stack']} ({ms['moto']}/{ms['functions']}/{ms['model_server']})"


def _pair(r: dict, key: str) -> str:
    return f"{r['moto_empty'][key]} / {r['moto_loaded'][key]}"


def _rss(r: dict, kind: str, procs: bool = False) -> str:
    m = r["rss_after_label"]
    text = f"{m.get(f'{kind}_rss_mb', 0):.0f} ({m.get(f'{kind}_peak_mb', 0):.0f})"
    return text + (f" x{m.get(f'{kind}_processes', 0)}" if procs else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="300,1000", help="comma-separated upload counts")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--work-dir", help="where the stacks' data goes (default: a temp dir)")
    p.add_argument(
        "--workers", type=int, help="model server workers (FLYWHEEL_MODEL_SERVER_WORKERS)"
    )
    p.add_argument(
        "--images",
        choices=["digits", "photos"],
        default="digits",
        help="digits: 32x32 PNGs (~0.8 KB, the pipeline's overhead shows); photos: 512x384 "
        "JPEG crops of scikit-learn's sample photographs (~54 KB, the decode shows)",
    )
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="pipeline-throughput-"))
    note(f"cpus={os.cpu_count()} load={os.getloadavg()} work dir {work}")
    results = []
    for n in sizes:
        results.append(run_size(n, work, args.workers, args.images))
        note(f"N={n}: {json.dumps(results[-1])}")
    print(table(results))
    if len(results) > 1:
        first, last = results[0], results[-1]
        for kind in ("ingest", "label"):
            ratio = (last[f"{kind}_s"] / last["n"]) / (first[f"{kind}_s"] / first["n"])
            cpu = last[f"{kind}_cpu_ms"]["stack"] / first[f"{kind}_cpu_ms"]["stack"]
            print(
                f"{kind} per-item time at N={last['n']} / N={first['n']}: {ratio:.2f}x "
                f"(the stack's CPU per item: {cpu:.2f}x)"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
