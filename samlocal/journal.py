"""An append-only, fsync'ed journal with group commit (the local moto server's write-ahead log).

Records are pickled dicts framed as ``<length u32><crc32 u32><payload>`` in numbered
segment files (``journal/000000000001.log``, ...). ``append`` only queues a record
(the caller holds the moto server's mutation lock, so the journal's order is the order
the mutations were applied in); one flusher thread writes everything queued since its
last pass with a single write and one ``fsync``, so concurrent requests share a sync
(group commit); ``wait_durable`` returns once a record is on disk.

A crash can leave a torn record at the end of the last segment: ``read`` stops at the
first frame that is short or fails its checksum, and ``truncate_torn_tail`` cuts it off
before new records are appended behind it. Segments are append-only, and an earlier
segment is complete before a later one is opened, so everything before a durable
record is durable too (the journal is a prefix of what happened).
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
SUFFIX = ".log"


class JournalError(Exception):
    """The journal could not be written: nothing more can be acknowledged."""


def encode(record: dict[str, Any]) -> bytes:
    payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:012d}{SUFFIX}"


def segments(directory: Path) -> list[int]:
    """The segment numbers present, in order."""
    if not directory.is_dir():
        return []
    return sorted(int(p.stem) for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())


def read(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(end offset, record) for each whole record of a segment, stopping at a torn tail."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start, end = offset + _HEADER.size, offset + _HEADER.size + length
        if end > len(data) or zlib.crc32(data[start:end]) != crc:
            return
        yield end, pickle.loads(data[start:end])
        offset = end


def valid_length(path: Path) -> int:
    end = 0
    for offset, _ in read(path):
        end = offset
    return end


def truncate_torn_tail(path: Path) -> int:
    """Cut a segment after its last whole record; the number of bytes dropped."""
    size, keep = path.stat().st_size, valid_length(path)
    if keep < size:
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Appends to the newest segment of ``directory``; see the module docstring."""

    def __init__(self, directory: Path, segment: int, *, fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.segment = segment
        self._file = open(segment_path(self.dir, segment), "ab")  # noqa: SIM115
        _fsync_dir(self.dir)
        self._cond = threading.Condition()
        self._pending: list[bytes] = []
        self._appended = 0  # sequence number of the last queued record
        self._durable = 0  # ... and of the last one on disk
        self._error: BaseException | None = None
        self._closing = False
        self.bytes_written = 0  # since this object was created
        self.records = 0  # queued since this object was created
        self.syncs = 0
        self._flusher = threading.Thread(target=self._flush_loop, name="journal", daemon=True)
        self._flusher.start()

    # -- writing ---------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> int:
        """Queue a record; its sequence number, for ``wait_durable``."""
        data = encode(record)
        with self._cond:
            if self._error is not None:
                raise JournalError(f"the journal cannot be written: {self._error!r}")
            self._pending.append(data)
            self._appended += 1
            self.records += 1
            self._cond.notify_all()
            return self._appended

    def wait_durable(self, seq: int) -> None:
        with self._cond:
            while self._durable < seq and self._error is None:
                self._cond.wait()
            if self._durable < seq:
                raise JournalError(f"the journal cannot be written: {self._error!r}")

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
                upto = self._appended
                f = self._file
            try:
                data = b"".join(batch)
                f.write(data)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            except BaseException as exc:  # disk full, I/O error: stop acknowledging
                log.exception("journal write failed")
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self.bytes_written += len(data)
                self.syncs += 1
                self._durable = upto
                self._cond.notify_all()

    def flush(self) -> None:
        """Wait until everything queued so far is on disk."""
        with self._cond:
            seq = self._appended
        self.wait_durable(seq)

    def rotate(self) -> int:
        """Make everything queued durable and continue in a new segment; its number.

        The caller holds the mutation lock, so nothing is appended meanwhile.
        """
        self.flush()
        with self._cond:
            self._file.close()
            self.segment += 1
            self._file = open(segment_path(self.dir, self.segment), "ab")  # noqa: SIM115
        _fsync_dir(self.dir)
        return self.segment

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._flusher.join(timeout=30)
        self._file.close()

    def drop_segments_before(self, segment: int) -> None:
        """Delete the segments a snapshot now covers."""
        for n in segments(self.dir):
            if n < segment:
                segment_path(self.dir, n).unlink(missing_ok=True)
