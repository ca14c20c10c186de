"""`flywheel up` as a child process that a test can kill -9, tree and all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dataflywheel.stack_client import StackClient
from samlocal.stack import StackError

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: children of children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class UpProcess:
    """`flywheel up --port-base 0 --no-schedules` on a data directory."""

    def __init__(self, data_dir: Path, parameters: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.parameters = parameters or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-up.log"

    def start(self, timeout: float = 180) -> StackClient:
        args = [sys.executable, "-m", "dataflywheel.cli", "--data-dir", str(self.data_dir), "up"]
        args += ["--port-base", "0", "--no-schedules", "--status-every", "3600"]
        for k, v in self.parameters.items():
            args += ["--parameter", f"{k}={v}"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Its own process group, as a shell gives a foreground job: Ctrl-C is
                # sent to the group (``interrupt``), never to the tests.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flywheel up exited with {self.proc.returncode}: {self.log}")
            try:
                client = StackClient(self.data_dir)
                if client.info["pid"] == self.proc.pid:
                    return client
            except (StackError, ValueError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"flywheel up did not come up in {timeout} s: {self.log}")

    def kill_tree(self) -> list[int]:
        """SIGKILL `flywheel up` and every process below it at once; the pids killed."""
        assert self.proc is not None
        # Stop the tree first so nothing forks or reacts while the list is taken.
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        pids = sorted({*pids, *descendants(self.proc.pid)})
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 30
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc = None
        return pids

    def interrupt(self, timeout: float = 60) -> float:
        """Ctrl-C as a terminal sends it (SIGINT to the whole foreground process group);
        the seconds until every process of the tree has exited."""
        assert self.proc is not None
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=timeout)
        while any(alive(p) for p in pids) and time.monotonic() - started < timeout:
            time.sleep(0.1)
        self.proc = None
        return time.monotonic() - started

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.kill_tree()
        self.proc = None
