"""moto in server mode, with its state kept in the data directory.

moto keeps everything in memory, so a restart would lose every upload, item and
queued message. This wrapper pickles the in-process backends of the services
the stack uses (S3 objects, DynamoDB items, SQS messages with their receive
counts and visibility, SNS, EventBridge, CloudWatch, Cognito user pools) into ``moto-state.pkl``
periodically and on stop, and puts them back before the server starts.
SSM's backend does not pickle (it holds lambdas), so its parameters go through
the API instead. Snapshots are written to a temp file and renamed, so a crash
mid-write leaves the previous snapshot intact.
"""

from __future__ import annotations

import _thread
import copyreg
import logging
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from joserfc import jwk
from moto.backends import get_backend
from moto.server import ThreadedMotoServer

from infra.local.moto_stepfunctions import install_for_server

log = logging.getLogger(__name__)

PICKLED_SERVICES = ("s3", "sqs", "dynamodb", "sns", "events", "cloudwatch", "cognito-idp")
API_SERVICES = ("ssm",)
ALL_SERVICES = PICKLED_SERVICES + API_SERVICES

# SQS queues hold locks; a restored queue gets fresh ones.
copyreg.pickle(type(threading.RLock()), lambda _lock: (threading.RLock, ()))
copyreg.pickle(_thread.LockType, lambda _lock: (threading.Lock, ()))
# A user pool holds its signing key (cryptography objects do not pickle): keep the JWK.
copyreg.pickle(jwk.RSAKey, lambda key: (jwk.RSAKey.import_key, (key.as_dict(private=True),)))

REGION = "us-east-1"


def _patch_moto_sqs() -> None:
    """Make moto's SendMessage/ReceiveMessage O(batch) instead of O(batch x queue depth).

    moto 5.2 builds a queue's full attribute dict - recounting every queued
    message for the Approximate* counts - to read one attribute: per sent
    message (ContentBasedDeduplication) and per received message (retention).
    With a few thousand uploads queued, moto spent most of its time there.
    Same semantics: the attributes become a lazy mapping, computed per key.
    """
    import json as _json
    from collections.abc import Iterator, Mapping

    from moto.core.utils import camelcase_to_underscores, unix_time
    from moto.sqs.models import Queue, SQSBackend

    class LazyAttributes(Mapping):  # type: ignore[type-arg]
        def __init__(self, queue: Any) -> None:
            self._q = queue
            keys = list(queue.BASE_ATTRIBUTES)
            if queue.fifo_queue:
                keys += queue.FIFO_ATTRIBUTES
            if queue.kms_master_key_id:
                keys += queue.KMS_ATTRIBUTES
            if queue.policy:
                keys.append("Policy")
            if queue.redrive_policy:
                keys.append("RedrivePolicy")
            self._keys = list(dict.fromkeys(keys))

        def __getitem__(self, key: str) -> Any:
            if key not in self._keys:
                raise KeyError(key)
            if key == "Policy":
                return self._q.policy
            if key == "RedrivePolicy":
                return _json.dumps(self._q.redrive_policy)
            value = getattr(self._q, camelcase_to_underscores(key))
            return str(value).lower() if isinstance(value, bool) else value

        def __iter__(self) -> Iterator[str]:
            return iter(self._keys)

        def __len__(self) -> int:
            return len(self._keys)

    Queue.attributes = property(LazyAttributes)  # type: ignore[assignment]

    # moto's Queue.delete_message rebuilds the message list from a snapshot and
    # assigns it back: two deletes (or a delete and a send) at once in the
    # threaded server lose one update, and a deleted message comes back. The
    # local router polls with several threads, so serialise the mutations.
    mutations = threading.RLock()
    original_delete, original_add = Queue.delete_message, Queue.add_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with mutations:
            original_delete(self, receipt_handle)

    def add_message(self: Any, message: Any) -> None:
        with mutations:
            original_add(self, message)

    Queue.delete_message = delete_message  # type: ignore[method-assign]
    Queue.add_message = add_message  # type: ignore[method-assign]

    # Two concurrent ReceiveMessage calls on one queue can both hand out the same
    # message (moto marks it received without a lock): one receive per queue at a time.
    receive_locks: dict[str, threading.Lock] = {}
    original_receive = SQSBackend.receive_message

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with mutations:
            lock = receive_locks.setdefault(queue_name, threading.Lock())
        with lock:
            return original_receive(self, queue_name, *args, **kwargs)

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]

    # Message visibility checks call these per message; datetime arithmetic made
    # them the next hot spot. Same values (seconds / ms since the epoch, UTC).
    import time as _time

    import moto.sqs.models as sqs_models

    def fast_unix_time(dt: Any = None) -> float:
        return _time.time() if dt is None else unix_time(dt)

    sqs_models.unix_time = fast_unix_time
    sqs_models.unix_time_millis = lambda dt=None: fast_unix_time(dt) * 1000.0

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > _time.time()

    SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )


_patch_moto_sqs()


def client(service: str, endpoint_url: str, region: str = REGION) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class MotoServer:
    """A ThreadedMotoServer on 127.0.0.1 whose state survives restarts."""

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        snapshot_every_s: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "moto-state.pkl"
        self.host, self.port = host, port
        self.snapshot_every_s = snapshot_every_s
        self._server: ThreadedMotoServer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.url = ""

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        for service in ALL_SERVICES:  # the backends are process-global
            get_backend(service).reset()
        ssm_params = self._restore_pickled()
        install_for_server(self.state_dir)  # Step Functions executions (moto_stepfunctions.py)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        if ssm_params:
            self._restore_ssm(ssm_params)
        if self.snapshot_every_s > 0:
            self._thread = threading.Thread(
                target=self._snapshot_loop, name="moto-snapshot", daemon=True
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._server:
            self.snapshot()
            self._server.stop()
            self._server = None

    # -- snapshots -----------------------------------------------------------

    def snapshot(self) -> None:
        """Write the current state atomically; safe to call from any thread."""
        with self._lock:
            state = {"version": 1, "services": {}, "ssm": self._dump_ssm()}
            for service in PICKLED_SERVICES:
                backend_dict = get_backend(service)
                state["services"][service] = {
                    account: dict(backend_dict[account].items())
                    for account in list(backend_dict.keys())
                }
            for attempt in range(5):
                try:
                    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
                    break
                except RuntimeError:  # a dict changed size under a live request: retry
                    if attempt == 4:
                        raise
                    time.sleep(0.05)
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.state_file)

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self.snapshot_every_s):
            try:
                self.snapshot()
            except Exception:  # a failed snapshot must not take the stack down
                log.exception("moto snapshot failed")

    def _restore_pickled(self) -> list[dict[str, Any]]:
        if not self.state_file.exists():
            return []
        state = pickle.loads(self.state_file.read_bytes())
        for service, accounts in state["services"].items():
            backend_dict = get_backend(service)
            for account, regions in accounts.items():
                for region, backend in regions.items():
                    backend_dict[account][region] = backend
        return state.get("ssm", [])

    def _dump_ssm(self) -> list[dict[str, Any]]:
        if not self._server:
            return []
        ssm = client("ssm", self.url)
        names = [
            p["Name"]
            for page in ssm.get_paginator("describe_parameters").paginate()
            for p in page["Parameters"]
        ]
        params = []
        for i in range(0, len(names), 10):
            for p in ssm.get_parameters(Names=names[i : i + 10], WithDecryption=True)["Parameters"]:
                params.append({"Name": p["Name"], "Value": p["Value"], "Type": p["Type"]})
        return params

    def _restore_ssm(self, params: list[dict[str, Any]]) -> None:
        ssm = client("ssm", self.url)
        for p in params:
            ssm.put_parameter(Name=p["Name"], Value=p["Value"], Type=p["Type"], Overwrite=True)


class MotoProcess:
    """The same server in a child process, so moto gets a core of its own.

    Same interface as MotoServer. The child snapshots and exits on SIGTERM, and
    also when its stdin closes (the parent died), so state is never left behind.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        snapshot_every_s: float = 10.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host, self.port, self.snapshot_every_s = host, port, snapshot_every_s
        self._proc: Any = None
        self.url = ""

    def start(self) -> str:
        import subprocess
        import sys

        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "moto.log", "ab")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infra.local.moto_server",
                "--state-dir",
                str(self.state_dir),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--snapshot-every",
                str(self.snapshot_every_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        log.close()
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("ready "):
            self._proc.kill()
            raise RuntimeError(f"moto server did not start (see {self.state_dir / 'moto.log'})")
        self.url = line.split(" ", 1)[1]
        return self.url

    def snapshot(self) -> None:
        import signal

        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        import signal

        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except Exception:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def main() -> None:
    """python -m infra.local.moto_server --state-dir DIR [--port N]  (run by the stack)"""
    import argparse
    import signal

    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--snapshot-every", type=float, default=10.0)
    args = p.parse_args()
    server = MotoServer(
        Path(args.state_dir), port=args.port, host=args.host, snapshot_every_s=args.snapshot_every
    )
    url = server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=server.snapshot).start())

    def watch_parent() -> None:
        # Raw reads (no buffered-reader lock to trip over at interpreter shutdown).
        while os.read(0, 1024):
            pass
        done.set()  # EOF: the parent is gone

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"ready {url}", flush=True)
    while not done.wait(1):
        pass
    server.stop()


if __name__ == "__main__":
    main()
