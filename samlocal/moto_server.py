"""moto in server mode, with its state kept durably in the data directory.

moto keeps everything in memory. This wrapper makes every acknowledged write
survive ``kill -9`` of the moto process (or of the whole stack), with a
write-ahead journal in front of moto's WSGI app:

- A request that changes state (S3 PUT/POST/DELETE; every DynamoDB, SQS, SNS,
  EventBridge, CloudWatch, Cognito, SSM action except the read-only ones) runs
  under one mutation lock, and is appended to ``journal/<segment>.log`` in the
  order it was applied, with the seed of the random generator moto drew its ids
  from (message ids, versionIds, upload ids, event ids ... are the same when the
  request is replayed). The response is held until the record is fsync'ed; the
  journal's flusher syncs everything queued since its last pass at once (group
  commit), so concurrent requests share one fsync.
- SQS receipt handles are not replayable, so message deletions are journaled as
  their effect (this message id left this queue), and so are receives (receive
  counts, for redrive) and the moves to a dead-letter queue that moto makes while
  receiving. Visibility changes are not journaled: at a restart nothing is in
  flight any more, so every message is made visible again.
- On start: load the last snapshot (``moto-state.pkl``: the pickled backends),
  replay the journal segments after it, make every SQS message visible, write a
  fresh snapshot and drop the replayed segments, then serve. Snapshots are also
  taken on a clean stop, and in a forked child (writes wait for the fork only)
  when the journal has grown by ``snapshot_records`` or ``snapshot_bytes``; they
  are written to a temp file, synced and renamed, and a snapshot names the first
  segment it does not cover, so a crash at any point leaves a snapshot and the
  journal after it.

Step Functions is not journaled: an acknowledged StartExecution is kept in
``executions/`` until the execution ends, and the stack starts it again after a restart
(``moto_stepfunctions.py``). A clean stop gives its snapshot ``STOP_SNAPSHOT_S`` (forked),
so a Ctrl-C stays quick however big the state is; the journal covers the rest.
SSM's backend does not pickle (it holds lambdas): snapshots keep its
parameters' current values, restored through the API before the replay. The
stack's registration in CloudFormation is in the snapshots too (and is written
again by every ``flywheel up``).
moto's SQS is also patched for speed: O(1) DeleteMessage and
ChangeMessageVisibility (messages indexed by id and receipt handle), and lazy
queue attributes (see ``_patch_moto_sqs``).
"""

from __future__ import annotations

import _thread
import copyreg
import io
import json
import logging
import os
import pickle
import random
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import boto3
from joserfc import jwk
from moto.backends import get_backend
from moto.moto_api._internal import mock_random
from moto.moto_api._internal.moto_random import MotoRandom
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

from samlocal import journal as jr
from samlocal.moto_stepfunctions import ExecutionLog, forget_ended, install_for_server
from samlocal.moto_stepfunctions import record_request as record_execution_request

log = logging.getLogger(__name__)

PICKLED_SERVICES = (
    "s3",
    "sqs",
    "dynamodb",
    "sns",
    "events",
    "cloudwatch",
    "cognito-idp",
    "cloudformation",
)
API_SERVICES = ("ssm",)
ALL_SERVICES = PICKLED_SERVICES + API_SERVICES

# SQS queues hold locks; a restored queue gets fresh ones.
copyreg.pickle(type(threading.RLock()), lambda _lock: (threading.RLock, ()))
copyreg.pickle(_thread.LockType, lambda _lock: (threading.Lock, ()))
# A user pool holds its signing key (cryptography objects do not pickle): keep the JWK.
copyreg.pickle(jwk.RSAKey, lambda key: (jwk.RSAKey.import_key, (key.as_dict(private=True),)))

REGION = "us-east-1"
SNAPSHOT_VERSION = 2
SNAPSHOT_MAGIC = b"flywheel-moto-snapshot-2\n"  # then the first segment not covered (8 bytes)
# A background snapshot when the journal has grown by either, so a replay after a crash
# has at most this much to redo (a record costs about what its request did: 13 ms
# measured on 2 cores shared with a load average of 15).
DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024
DEFAULT_SNAPSHOT_RECORDS = 5000
# A clean stop waits this long for its snapshot (see MotoServer.stop).
STOP_SNAPSHOT_S = 2.0

# Every state change in the moto backends happens under this lock (requests that
# change state, and each pass of ReceiveMessage), so the journal's order is the
# order in which they were applied.
MUTATIONS = threading.RLock()
_SCOPE = threading.local()  # per request: the seeded generator, collected SQS effects
_JOURNAL: jr.Journal | None = None  # set while a MotoServer serves


# -- deterministic ids ---------------------------------------------------------------


class _ScopedRandom(MotoRandom):
    """moto's id generator, drawing from a per-request seeded generator when one is set."""

    def random(self) -> float:
        rng = getattr(_SCOPE, "rng", None)
        return rng.random() if rng is not None else super().random()

    def getrandbits(self, k: int) -> int:
        rng = getattr(_SCOPE, "rng", None)
        return rng.getrandbits(k) if rng is not None else super().getrandbits(k)


def _patch_moto_ids() -> None:
    # Every moto module imported the one instance: change its class in place.
    mock_random.__class__ = _ScopedRandom
    # S3 multipart upload ids come from os.urandom: draw them from moto's generator.
    from moto.s3.models import UPLOAD_ID_BYTES, FakeMultipart

    original_init = FakeMultipart.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        token = mock_random.token_urlsafe(UPLOAD_ID_BYTES)
        self.id = token.replace("-", "").replace("_", "")

    FakeMultipart.__init__ = init  # type: ignore[method-assign]


# -- SQS -----------------------------------------------------------------------------


class IndexedMessages:
    """A queue's messages in send order, indexed by message id and by receipt handle.

    Stands in for moto's ``Queue._messages`` list (append, remove, iteration, len), so
    that DeleteMessage and ChangeMessageVisibility find a message in O(1) instead of
    scanning the queue (moto 5.2 scans it twice per delete: a quadratic drain).
    """

    def __init__(self, messages: Any = ()) -> None:
        self.by_id: dict[str, Any] = {}
        self.by_handle: dict[str, Any] = {}
        for m in messages:
            self.append(m)

    def append(self, message: Any) -> None:
        self.by_id[message.id] = message
        for handle in message.all_receipt_handles:
            if handle:
                self.by_handle[handle] = message

    def remove(self, message: Any) -> None:
        if self.by_id.get(message.id) is not message:
            raise ValueError("message not in queue")
        del self.by_id[message.id]
        for handle in message.all_receipt_handles:
            if handle:
                self.by_handle.pop(handle, None)

    def received(self, message: Any) -> None:
        if message.receipt_handle:
            self.by_handle[message.receipt_handle] = message

    def __iter__(self) -> Any:
        return iter(list(self.by_id.values()))  # a copy: other threads may append

    def __len__(self) -> int:
        return len(self.by_id)

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def __contains__(self, message: Any) -> bool:
        message_id = getattr(message, "id", None)
        return message_id is not None and self.by_id.get(message_id) is message


class VisibleMessages:
    """moto's ``Queue.messages`` (the visible, undelayed messages in send order), lazily.

    moto builds that list from the whole queue on every ReceiveMessage and on every wake-up
    of a long poll, although a receive stops at its first ``count`` (at most 10): 5.2 ms a
    receive and its deletes at a depth of 8,000, so draining a deep queue was quadratic.
    Iterated, this stops where the receive stops; ``len`` still counts them all (the queue
    attributes).
    """

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def __iter__(self) -> Iterator[Any]:
        return (m for m in _indexed(self._queue) if m.visible and not m.delayed)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __bool__(self) -> bool:
        return any(True for _ in self)


def _indexed(queue: Any) -> IndexedMessages:
    if not isinstance(queue._messages, IndexedMessages):
        queue._messages = IndexedMessages(queue._messages)
    return queue._messages  # type: ignore[no-any-return]


def _effect(record: tuple[Any, ...]) -> None:
    """Note an SQS effect for the journal (only while a request collects them)."""
    effects = getattr(_SCOPE, "effects", None)
    if effects is not None:
        effects.append(record)


def _drop(queue: Any, message: Any) -> None:
    _indexed(queue).remove(message)
    queue.pending_messages.discard(message)
    queue.deleted_messages.update(h for h in message.all_receipt_handles if h)


def _patch_moto_sqs() -> None:
    """SQS made durable-friendly and O(batch): see the notes at each patch."""
    import json as _json
    from collections.abc import Mapping

    from moto.core.utils import camelcase_to_underscores, unix_time
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid
    from moto.sqs.models import Queue, SQSBackend

    # moto 5.2 builds a queue's full attribute dict - recounting every queued
    # message for the Approximate* counts - to read one attribute: per sent message
    # (ContentBasedDeduplication) and per received message (retention). Same
    # semantics: the attributes become a lazy mapping, computed per key.
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
    Queue.messages = property(VisibleMessages)  # type: ignore[assignment]

    original_init = Queue.__init__

    def queue_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._messages = IndexedMessages()

    Queue.__init__ = queue_init  # type: ignore[method-assign]

    # Sends and deletes from several threads of the threaded server: one at a time
    # (moto's own delete rebuilt the list and assigned it back, losing updates).
    original_add = Queue.add_message

    def add_message(self: Any, message: Any) -> None:
        with MUTATIONS:
            _indexed(self)
            original_add(self, message)
            moved = getattr(_SCOPE, "moved", None)
            if moved is not None and message in self._messages:
                moved.append((self, message))  # a receive moved it to this dead-letter queue

    def delete_message(self: Any, receipt_handle: str) -> None:
        """moto's semantics (an already deleted handle is fine, an unknown one is not,
        any handle the message ever had works), by index instead of by scan."""
        with MUTATIONS:
            if receipt_handle in self.deleted_messages:
                return
            message = _indexed(self).by_handle.get(receipt_handle)
            if message is None:
                raise ReceiptHandleIsInvalid()
            _drop(self, message)
            _effect(("sqs-del", self.account_id, self.region, self.name, message.id))

    Queue.add_message = add_message  # type: ignore[method-assign]
    Queue.delete_message = delete_message  # type: ignore[method-assign]

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        with MUTATIONS:
            message = _indexed(queue).by_handle.get(receipt_handle)
            if message is None:
                raise ReceiptHandleIsInvalid
            visibility_timeout_msec = int(visibility_timeout) * 1000
            given = time.time() * 1000 + visibility_timeout_msec
            if given - message.sent_timestamp > 43200 * 1000:
                raise InvalidParameterValue(
                    f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. "
                    "Reason: Total VisibilityTimeout for the message is beyond the limit "
                    "[43200 seconds]"
                )
            message.change_visibility(visibility_timeout)
            if message.visible and message in queue.pending_messages:
                queue.pending_messages.remove(message)

    SQSBackend.change_message_visibility = change_message_visibility  # type: ignore[method-assign]

    original_purge = SQSBackend.purge_queue

    def purge_queue(self: Any, queue_name: str) -> None:
        with MUTATIONS:
            original_purge(self, queue_name)
            self.get_queue(queue_name)._messages = IndexedMessages()

    SQSBackend.purge_queue = purge_queue  # type: ignore[method-assign]

    # ReceiveMessage: one receive per queue at a time (two concurrent ones could hand
    # out the same message), and each pass over the queue under the mutation lock with
    # its effects journaled (receive counts, dead-letter moves); the long poll waits
    # outside the lock.
    receive_locks: dict[tuple[str, str, str], threading.Lock] = {}
    original_receive = SQSBackend.receive_message

    def receive_message(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        queue = self.get_queue(queue_name)
        with MUTATIONS:
            key = (self.account_id, self.region_name, queue_name)
            lock = receive_locks.setdefault(key, threading.Lock())
        deadline = time.time() + float(wait_seconds_timeout or 0)
        with lock:
            while True:
                with MUTATIONS:
                    moved: list[tuple[Any, Any]] = []
                    _SCOPE.moved = moved
                    try:
                        result = original_receive(
                            self, queue_name, count, 0, visibility_timeout, message_attribute_names
                        )
                    finally:
                        _SCOPE.moved = None
                    messages = _indexed(queue)
                    for copy in result:
                        original = messages.by_id.get(copy.id)
                        if original is not None:
                            messages.received(original)
                    effects: list[tuple[Any, ...]] = [
                        ("sqs-move", self.account_id, self.region_name, queue_name, dlq.name, m.id)
                        for dlq, m in moved
                    ]
                    if result:
                        ids = [m.id for m in result]
                        where = (self.account_id, self.region_name, queue_name)
                        effects.append(("sqs-recv", *where, ids))
                    if effects and _JOURNAL is not None:
                        # Not waited for: a receive count lost in a crash only delays redrive.
                        _JOURNAL.append({"k": "fx", "fx": effects})
                remaining = deadline - time.time()
                if result or remaining <= 0:
                    return result
                queue.wait_for_messages(min(1.0, remaining))

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]

    # Message visibility checks call these per message; datetime arithmetic made
    # them the next hot spot. Same values (seconds / ms since the epoch, UTC).
    import moto.sqs.models as sqs_models

    def fast_unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else unix_time(dt)

    sqs_models.unix_time = fast_unix_time
    sqs_models.unix_time_millis = lambda dt=None: fast_unix_time(dt) * 1000.0

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return retention + message.sent_timestamp / 1000 > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )


def _patch_moto_routing() -> None:
    """moto's server lists its own package directory (~130 stat calls) twice per request
    to route it; the list never changes while it runs: list it once."""
    import moto.backends as backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


def _patch_moto_dynamodb() -> None:
    """moto counts a table's items (DescribeTable's ItemCount) by iterating over them, while
    other request threads write: O(items), and a write during the count fails the request
    ("dictionary changed size during iteration"). Counted from a copy of the top level,
    which is one step under the GIL; a hash-key-only table is just its length."""
    from moto.dynamodb.models.table import Table

    def table_len(self: Any) -> int:
        if not self.has_range_key:
            return len(self.items)
        return sum(len(by_range) for by_range in list(self.items.values()))

    Table.__len__ = table_len  # type: ignore[method-assign]


_patch_moto_routing()
_patch_moto_ids()
_patch_moto_sqs()
_patch_moto_dynamodb()


def _lockless_s3_values() -> None:
    """In a forked snapshot child only: read S3 values without the per-object lock (a
    thread of the parent may have held one at the fork; the child has no other thread)
    and without moving a shared file offset (pread, for values spooled to disk)."""
    from moto.s3.models import FakeKey

    def getstate(self: Any) -> dict[str, Any]:
        state = self.__dict__.copy()
        buf = state.pop("_value_buffer")
        state.pop("lock", None)
        try:
            if getattr(buf, "_rolled", False):
                fd = buf.fileno()
                state["value"] = os.pread(fd, os.fstat(fd).st_size, 0)
            else:
                state["value"] = buf._file.getvalue()
        except ValueError:  # closed: a deleted key (as moto's own __getstate__)
            state["value"] = ""
        return state

    FakeKey.__getstate__ = getstate  # type: ignore[method-assign]


def _sqs_queue(account: str, region: str, name: str) -> Any:
    return get_backend("sqs")[account][region].queues.get(name)


def apply_effect(fx: tuple[Any, ...]) -> None:
    """Replay one journaled SQS effect (messages are found by their id)."""
    kind, account, region, name = fx[:4]
    queue = _sqs_queue(account, region, name)
    if queue is None:
        return
    messages = _indexed(queue)
    if kind == "sqs-del":
        message = messages.by_id.get(fx[4])
        if message is not None:
            _drop(queue, message)
    elif kind == "sqs-recv":
        now = int(time.time() * 1000)
        for message_id in fx[4]:
            message = messages.by_id.get(message_id)
            if message is not None:
                message.approximate_receive_count += 1
                message.approximate_first_receive_timestamp = (
                    message.approximate_first_receive_timestamp or now
                )
    elif kind == "sqs-move":
        dlq, message = _sqs_queue(account, region, fx[4]), messages.by_id.get(fx[5])
        if dlq is not None and message is not None:
            messages.remove(message)
            _indexed(dlq).append(message)


def make_every_message_visible() -> int:
    """At a start nothing is in flight: every message is visible again (delays kept)."""
    n = 0
    for _account, regions in get_backend("sqs").items():
        for _region, backend in regions.items():
            for queue in backend.queues.values():
                queue._pending_messages = set()
                for message in _indexed(queue):
                    message.visible_at = 0.0
                    n += 1
    return n


# -- the journaled WSGI app ----------------------------------------------------------

# Read-only actions of the JSON / query / rpc-v2 protocols (everything else is journaled).
READ_PREFIXES = ("Get", "Describe", "List", "Head", "Query", "Scan", "BatchGet", "TransactGet")
# SQS actions journaled as their effect (receipt handles are not replayable).
SQS_EFFECT_ACTIONS = frozenset(
    {
        "DeleteMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibility",
        "ChangeMessageVisibilityBatch",
    }
)
_UNRECORDED = frozenset({"CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "wsgi.input_terminated"})


def _service(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:  # "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, ..."
        return str(auth.split("Credential=", 1)[1].split(",")[0].split("/")[3]).lower()
    except IndexError:
        return ""


def _action(environ: dict[str, Any], body: bytes) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    path = environ.get("PATH_INFO", "")
    if environ.get("HTTP_SMITHY_PROTOCOL") and "/operation/" in path:
        return str(path).rsplit("/operation/", 1)[-1].strip("/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return query["Action"][0]
    if "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        form = parse_qs(body.decode("latin-1"))
        if "Action" in form:
            return form["Action"][0]
    return None


def classify(environ: dict[str, Any], body: bytes) -> str:
    """'read' (pass through), 'fx' (journal its SQS effects) or 'http' (journal the request)."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method in ("GET", "HEAD", "OPTIONS"):
        return "read"
    if _service(environ) == "s3":
        return "http"
    if _service(environ) == "states":
        # Step Functions is not journaled: replaying StartExecution would run a rollout
        # again before the stack's Lambda API listens. Its starts are kept apart instead
        # and run again by the stack (JournaledApp, moto_stepfunctions.ExecutionLog).
        return "read"
    action = _action(environ, body)
    if action is None:
        return "http"
    if action == "ReceiveMessage" or action.startswith(READ_PREFIXES):
        return "read"  # ReceiveMessage journals its own effects (see _patch_moto_sqs)
    return "fx" if action in SQS_EFFECT_ACTIONS else "http"


def _with_body(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    env = {k: v for k, v in environ.items() if k not in _UNRECORDED}
    env["wsgi.input"] = io.BytesIO(body)
    env["CONTENT_LENGTH"] = str(len(body))
    return env


def _recorded_environ(environ: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if isinstance(v, str) and k not in _UNRECORDED}


def _replay_environ(recorded: dict[str, str], body: bytes) -> dict[str, Any]:
    env: dict[str, Any] = dict(recorded)
    env.update(
        {
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
    )
    return env


def run_app(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """Call a WSGI app to completion: status, headers, body chunks."""
    got: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    return got.get("status", "500 INTERNAL SERVER ERROR"), got.get("headers", []), chunks


def _status_code(status: str) -> int:
    return int(status.split(" ", 1)[0])


class JournaledApp:
    """moto's WSGI app behind the journal: a write is answered once it is on disk.

    Step Functions is not journaled (see ``classify``); its StartExecution and
    StopExecution go to ``executions`` instead (moto_stepfunctions.ExecutionLog).
    """

    def __init__(self, app: Any, journal: jr.Journal, executions: Any = None) -> None:
        self.app, self.journal, self.executions = app, journal, executions

    def _execution_call(
        self, env: dict[str, Any], body: bytes, action: str, start_response: Any
    ) -> Any:
        status, headers, chunks = run_app(self.app, env)
        if _status_code(status) == 200:
            try:
                record_execution_request(self.executions, action, body, b"".join(chunks))
            except OSError as exc:  # not durable: not acknowledged either
                start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "text/plain")])
                return [f"the execution could not be recorded: {exc}".encode()]
        start_response(status, headers)
        return chunks

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD", "OPTIONS"):
            return self.app(environ, start_response)
        body = get_input_stream(environ).read()
        env = _with_body(environ, body)
        kind = classify(env, body)
        if kind == "read":
            if self.executions is not None and _service(env) == "states":
                action = _action(env, body)
                if action in ("StartExecution", "StopExecution"):
                    return self._execution_call(env, body, action, start_response)
            return self.app(env, start_response)
        try:
            with MUTATIONS:
                seed = secrets.randbits(63) if kind == "http" else None
                _SCOPE.rng = random.Random(seed) if seed is not None else None
                _SCOPE.effects = []
                try:
                    status, headers, chunks = run_app(self.app, env)
                finally:
                    effects, _SCOPE.effects, _SCOPE.rng = _SCOPE.effects, None, None
                seq = 0
                if kind == "http":
                    record = {
                        "k": "http",
                        "seed": seed,
                        "env": _recorded_environ(environ),
                        "body": body,
                        "status": _status_code(status),
                    }
                    seq = self.journal.append(record)
                elif effects:
                    seq = self.journal.append({"k": "fx", "fx": effects})
            if seq:
                self.journal.wait_durable(seq)
        except jr.JournalError as exc:
            start_response("503 SERVICE UNAVAILABLE", [("Content-Type", "text/plain")])
            return [f"moto's journal cannot be written; nothing is acknowledged: {exc}".encode()]
        start_response(status, headers)
        return chunks


def replay_record(app: Any, record: dict[str, Any]) -> bool:
    """Apply one journal record to the backends; False when a request's status differs."""
    if record["k"] == "fx":
        for fx in record["fx"]:
            apply_effect(fx)
        return True
    _SCOPE.rng = random.Random(record["seed"])
    try:
        status, _, _ = run_app(app, _replay_environ(record["env"], record["body"]))
    finally:
        _SCOPE.rng = None
    return _status_code(status) == record["status"]


# -- the server ------------------------------------------------------------------------


def client(service: str, endpoint_url: str, region: str = REGION) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _json_call(
    app: Any,
    service: str,
    target: str,
    payload: dict[str, Any],
    content_type: str = "application/x-amz-json-1.1",
) -> dict[str, Any]:
    """One JSON-protocol request to moto's app, in process."""
    body = json.dumps(payload).encode()
    env = _replay_environ(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "HTTP_HOST": "localhost",
            "CONTENT_TYPE": content_type,
            "HTTP_X_AMZ_TARGET": target,
            "HTTP_AUTHORIZATION": (
                f"AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
        },
        body,
    )
    status, _, chunks = run_app(app, env)
    if _status_code(status) >= 300:
        raise RuntimeError(f"{target} failed in process: {status} {b''.join(chunks)[:300]!r}")
    return json.loads(b"".join(chunks) or b"{}")  # type: ignore[no-any-return]


def _fsync_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class MotoServer:
    """moto on 127.0.0.1 (threaded werkzeug server) whose acknowledged writes survive a crash."""

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
        snapshot_records: int = DEFAULT_SNAPSHOT_RECORDS,
        fsync: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.snapshot_records = snapshot_records
        self.state_file = self.state_dir / "moto-state.pkl"
        self.journal_dir = self.state_dir / "journal"
        self.host, self.port = host, port
        self.snapshot_bytes = snapshot_bytes
        self.fsync = fsync
        self.app: Any = None
        self.journal: jr.Journal | None = None
        self._server: Any = None
        self._serve_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._snapshot_lock = threading.Lock()
        self._journal_at_snapshot = (0, 0)  # journal bytes and records at the last snapshot
        self._snapshot_deadline = float("inf")  # a stopping server cuts snapshots short
        self.recovery: dict[str, Any] = {}
        self.url = ""
        # Step Functions executions started and not yet ended (moto_stepfunctions.py)
        self.executions = ExecutionLog(self.state_dir)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> str:
        global _JOURNAL
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        started = time.monotonic()
        for service in ALL_SERVICES:  # the backends are process-global
            get_backend(service).reset()
        install_for_server(self.state_dir)  # Step Functions executions (moto_stepfunctions.py)
        self.app = DomainDispatcherApplication(create_backend_app)
        first_segment, ssm_params = self._restore_snapshot()
        for p in ssm_params:
            _json_call(self.app, "ssm", "AmazonSSM.PutParameter", {**p, "Overwrite": True})
        restored = time.monotonic()
        replayed, mismatched, last = self._replay(first_segment)
        visible = make_every_message_visible()
        replay_done = time.monotonic()
        segment = max(last, first_segment - 1) + 1
        if replayed or (jr.segments(self.journal_dir) and not self.state_file.exists()):
            self._write_snapshot(self._pickle_state(), segment)  # compact before serving
        self.journal = jr.Journal(self.journal_dir, segment, fsync=self.fsync)
        self.journal.drop_segments_before(segment)
        _JOURNAL = self.journal
        self.recovery = {
            "records_replayed": replayed,
            "replay_status_mismatches": mismatched,
            "messages_made_visible": visible,
            "restore_s": round(restored - started, 3),
            "replay_s": round(replay_done - restored, 3),
            "start_s": round(time.monotonic() - started, 3),
        }
        log.info("moto state restored: %s", json.dumps(self.recovery))
        self._server = make_server(
            self.host,
            self.port,
            JournaledApp(self.app, self.journal, self.executions),
            threaded=True,
        )
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, name="moto-http", daemon=True
        )
        self._serve_thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._watch_thread = threading.Thread(
            target=self._watch_journal, name="moto-snapshot", daemon=True
        )
        self._watch_thread.start()
        return self.url

    def stop(self, snapshot: bool = True, snapshot_timeout_s: float | None = None) -> None:
        """Stop serving; with ``snapshot``, write a snapshot so the next start replays
        nothing. With ``snapshot_timeout_s`` the snapshot is pickled by a forked child
        that gets that long (a clean stop of the stack stays quick however big the state
        is); past it the child is killed and the journal, which holds every acknowledged
        write anyway, is replayed at the next start instead."""
        global _JOURNAL
        began = time.monotonic()
        timings: dict[str, Any] = {}
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if snapshot_timeout_s is not None:  # a background snapshot under way gets no longer
            self._snapshot_deadline = time.monotonic() + snapshot_timeout_s
        timings["http"] = time.monotonic() - began
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=60)
        if self.journal is not None:
            if snapshot and snapshot_timeout_s is None:
                self.snapshot()
            elif snapshot and self._journal_grown(since_records=0):
                left = self._snapshot_deadline - time.monotonic()
                timings["snapshot_written"] = left > 0 and self.snapshot_in_background(left)
            timings["snapshot"] = time.monotonic() - began
            self.journal.close()
            self.journal = None
            _JOURNAL = None
        timings["closed"] = time.monotonic() - began
        log.info(
            "moto stopped: %s",
            json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()}),
        )

    # -- snapshots -----------------------------------------------------------

    def snapshot(self) -> None:
        """Pickle the state (writes wait meanwhile), start a new journal segment, write
        the snapshot atomically, then drop the segments it covers (a clean stop)."""
        if self.journal is None:
            return
        with self._snapshot_lock:
            with MUTATIONS:
                data = self._pickle_state()
                segment = self.journal.rotate()
                self._mark_snapshot()
            self._write_snapshot(data, segment)
            self.journal.drop_segments_before(segment)

    def snapshot_in_background(self, timeout_s: float = 600) -> bool:
        """The same snapshot, pickled by a forked child from a copy-on-write image of the
        state: writes wait only for the fork, not for the pickle. True when it was written.

        The child is single-threaded and must not wait on a lock another thread held at
        the fork: it reads S3 values without their lock and only pickles, writes and
        exits. Should it fail or hang (it is killed after ``timeout_s``), nothing is
        lost: the journal still holds everything since the previous snapshot.
        """
        if self.journal is None:
            return False
        with self._snapshot_lock:
            tmp = self.state_file.with_suffix(".fork.tmp")
            with MUTATIONS:
                ssm = self._dump_ssm()  # through the app: not in the child (Flask's locks)
                segment = self.journal.rotate()
                pid = os.fork()
                if pid == 0:  # the child
                    status = 1
                    try:
                        _lockless_s3_values()
                        data = self._pickle_state(ssm)
                        _fsync_file(tmp, SNAPSHOT_MAGIC + segment.to_bytes(8, "little") + data)
                        status = 0
                    finally:
                        os._exit(status)
                self._mark_snapshot()
            deadline = time.monotonic() + timeout_s
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > min(deadline, self._snapshot_deadline):
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    status = -1
                    break
                time.sleep(0.05)
            if status != 0:
                tmp.unlink(missing_ok=True)
                if self._stop.is_set() and status == -1:
                    log.info("the stop cut a snapshot short; the journal is kept")
                else:
                    log.error("background snapshot failed (status %s); the journal is kept", status)
                return False
            os.replace(tmp, self.state_file)
            jr._fsync_dir(self.state_dir)
            self.journal.drop_segments_before(segment)
            return True

    def _mark_snapshot(self) -> None:
        assert self.journal is not None
        self._journal_at_snapshot = (self.journal.bytes_written, self.journal.records)

    def _journal_grown(self, since_records: int | None = None) -> bool:
        """Has the journal grown past the snapshot thresholds (or past ``since_records``
        records) since the last snapshot?"""
        journal = self.journal
        if journal is None:
            return False
        size, records = self._journal_at_snapshot
        if since_records is not None:
            return journal.records - records > since_records
        return (
            journal.bytes_written - size > self.snapshot_bytes
            or journal.records - records > self.snapshot_records
        )

    def _describe_execution(self, arn: str) -> str | None:
        try:
            got = _json_call(
                self.app,
                "states",
                "AWSStepFunctions.DescribeExecution",
                {"executionArn": arn},
                content_type="application/x-amz-json-1.0",
            )
        except RuntimeError:  # no such execution (moto restarted, not restarted yet)
            return None
        return str(got.get("status"))

    def _watch_journal(self) -> None:
        while not self._stop.wait(1):
            try:
                forget_ended(self.executions, self._describe_execution)
            except Exception:  # the records stay: an ended execution is restarted, harmless
                log.exception("reading the executions' states failed")
            if (self.snapshot_bytes > 0 or self.snapshot_records > 0) and self._journal_grown():
                try:
                    self.snapshot_in_background()
                except Exception:  # the journal still holds everything: keep serving
                    log.exception("moto snapshot failed")

    def _pickle_state(self, ssm: list[dict[str, Any]] | None = None) -> bytes:
        state: dict[str, Any] = {"version": SNAPSHOT_VERSION, "services": {}}
        state["ssm"] = self._dump_ssm() if ssm is None else ssm
        for service in PICKLED_SERVICES:
            backend_dict = get_backend(service)
            state["services"][service] = {
                account: dict(backend_dict[account].items())
                for account in list(backend_dict.keys())
            }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def _write_snapshot(self, data: bytes, segment: int) -> None:
        """The snapshot covers every segment before ``segment``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        _fsync_file(tmp, SNAPSHOT_MAGIC + segment.to_bytes(8, "little") + data)
        os.replace(tmp, self.state_file)
        jr._fsync_dir(self.state_dir)

    def _restore_snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        """Load the snapshot: the first journal segment to replay, and SSM's parameters."""
        if not self.state_file.exists():
            return 0, []
        raw = self.state_file.read_bytes()
        if raw.startswith(SNAPSHOT_MAGIC):
            n = len(SNAPSHOT_MAGIC)
            segment, state = int.from_bytes(raw[n : n + 8], "little"), pickle.loads(raw[n + 8 :])
        else:  # a snapshot from before the journal
            segment, state = 0, pickle.loads(raw)
        for service, accounts in state["services"].items():
            backend_dict = get_backend(service)
            for account, regions in accounts.items():
                for region, backend in regions.items():
                    backend_dict[account][region] = backend
        return segment, state.get("ssm", [])

    def _replay(self, first_segment: int) -> tuple[int, int, int]:
        """Replay the segments from ``first_segment`` on: (records, status mismatches, last)."""
        numbers = [n for n in jr.segments(self.journal_dir) if n >= first_segment]
        replayed = mismatched = 0
        for n in numbers:
            path = jr.segment_path(self.journal_dir, n)
            dropped = jr.truncate_torn_tail(path)
            if dropped:
                log.warning("journal %s: dropped a torn tail of %d bytes", path.name, dropped)
            for _, record in jr.read(path):
                replayed += 1
                if not replay_record(self.app, record):
                    mismatched += 1
        if mismatched:
            log.warning("%d of %d replayed requests answered differently", mismatched, replayed)
        return replayed, mismatched, numbers[-1] if numbers else 0

    def _dump_ssm(self) -> list[dict[str, Any]]:
        if self.app is None:
            return []
        names: list[str] = []
        token: str | None = None
        while True:
            page = _json_call(
                self.app,
                "ssm",
                "AmazonSSM.DescribeParameters",
                {"MaxResults": 50, **({"NextToken": token} if token else {})},
            )
            names += [p["Name"] for p in page.get("Parameters", [])]
            token = page.get("NextToken")
            if not token:
                break
        params = []
        for i in range(0, len(names), 10):
            got = _json_call(
                self.app,
                "ssm",
                "AmazonSSM.GetParameters",
                {"Names": names[i : i + 10], "WithDecryption": True},
            )
            for p in got.get("Parameters", []):
                params.append({"Name": p["Name"], "Value": p["Value"], "Type": p["Type"]})
        return params


class MotoProcess:
    """The same server in a child process, so moto gets a core of its own.

    Same interface as MotoServer. The child snapshots and exits on SIGTERM, and
    exits when its stdin closes (the parent died); its journal has every
    acknowledged write either way.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        snapshot_bytes: int = DEFAULT_SNAPSHOT_BYTES,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host, self.port, self.snapshot_bytes = host, port, snapshot_bytes
        self._proc: Any = None
        self.url = ""
        self.recovery: dict[str, Any] = {}

    def start(self) -> str:
        import subprocess

        self.state_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.state_dir / "moto.log", "ab")  # noqa: SIM115 - owned by the child
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",  # not -m: pickled classes of this module must not live in __main__
                "from samlocal.moto_server import main; main()",
                "--state-dir",
                str(self.state_dir),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--snapshot-bytes",
                str(self.snapshot_bytes),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logf,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        logf.close()
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("ready "):
            self._proc.kill()
            raise RuntimeError(f"moto server did not start (see {self.state_dir / 'moto.log'})")
        _, self.url, *rest = line.split(" ", 2)
        self.recovery = json.loads(rest[0]) if rest else {}
        return self.url

    def snapshot(self) -> None:
        import signal

        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)

    def stop(self) -> None:
        import signal
        import subprocess

        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


def main() -> None:
    """python -c 'from samlocal.moto_server import main; main()' --state-dir DIR [--port N]

    (run by the stack: MotoProcess)
    """
    import argparse
    import signal

    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--snapshot-bytes", type=int, default=DEFAULT_SNAPSHOT_BYTES)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = MotoServer(
        Path(args.state_dir), port=args.port, host=args.host, snapshot_bytes=args.snapshot_bytes
    )
    url = server.start()
    done = threading.Event()
    parent_gone = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    # Ctrl-C in a terminal reaches the whole process group: the stack stops this server
    # last (SIGTERM), after its own last calls, so SIGINT is not for this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=server.snapshot).start())

    def watch_parent() -> None:
        # Raw reads (no buffered-reader lock to trip over at interpreter shutdown).
        while os.read(0, 1024):
            pass
        parent_gone.set()  # EOF: the parent is gone
        done.set()

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"ready {url} {json.dumps(server.recovery)}", flush=True)
    while not done.wait(0.2):
        pass
    log.info("stopping (%s)", "the parent is gone" if parent_gone.is_set() else "signalled")
    # A dead parent: the journal has every acknowledged write; exit at once. A clean stop
    # gives a snapshot STOP_SNAPSHOT_S, so that the next start has less to replay.
    server.stop(snapshot=not parent_gone.is_set(), snapshot_timeout_s=STOP_SNAPSHOT_S)
    # Everything is on disk: skip the interpreter's teardown (freeing moto's objects one
    # by one took seconds of a Ctrl-C with a few thousand items).
    logging.shutdown()
    os._exit(0)
