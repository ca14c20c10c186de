"""The reduced demo (`flywheel demo --quick`) runs the whole loop and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from e2e_support import REPO  # noqa: I001

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # "under 5 minutes" is asserted


def test_quick_demo_completes_with_a_report(tmp_path):
    out = tmp_path / "report"
    # When the reduced demo runs as a user would start it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflywheel.cli",
            "--data-dir",
            str(tmp_path / "demo-data"),
            "demo",
            "--quick",
            "--out",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # SIGTERM, not subprocess.run's SIGKILL: the demo then stops its local stack, which
        # would otherwise keep running (and using the cores) for the rest of the suite
        proc.terminate()
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"the quick demo took over 300 s: {stderr[-2000:]}")
    assert proc.returncode == 0, stderr[-2000:]
    # Then it went through two rounds and wrote the report, plots included
    report = json.loads((out / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert report["rounds"][-1]["human_labels"] > report["rounds"][0]["human_labels"]
    assert report["targets"]["human_share"] <= 0.20
    assert report["runtime_s"] < 300
    for name in ("report.md", "coverage.png", "confusion.png", "training.png"):
        assert (out / name).stat().st_size > 0
    assert "auto-labeled" in stdout
    # and, when auto-labeling missed its target, says why in the champion's certificate's words
    certificate = report["rounds"][-1]["certificate"]
    assert certificate.startswith("auto-labels ") and "random labels" in certificate
    why = f"why: the champion {certificate}"
    assert (why in stdout) == (not report["targets"]["coverage_met"]), stdout[-2000:]
