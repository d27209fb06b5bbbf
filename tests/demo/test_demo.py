"""`robot-compress demo` as CI runs it: non-interactive, real processes on loopback, JSON checked."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from tests.conftest import REPO


def _listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def test_demo_fails_over_and_back_without_losing_a_frame(tmp_path, ros_domain_id, shared_data):
    before = _listening_ports()
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "robot_compress.cli", "demo", "--duration", "20", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "demo summary" in proc.stdout and "backend=" in proc.stdout  # plain log lines, not a live screen
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    assert metrics["frames_published"] >= 250  # 15 Hz for 20 s
    assert metrics["lost"] == 0 and metrics["duplicated"] == 0 and metrics["out_of_order"] == 0
    assert metrics["backends"].get("edge", 0) > 0 and metrics["backends"].get("local", 0) > 0
    transitions = summary["transitions"]
    assert any(t["previous"] == "edge" and t["state"] == "local" and t["reason"] for t in transitions)
    assert any(t["state"] == "edge" and t["reason"].startswith("recovered") for t in transitions)
    assert [c["action"] for c in summary["link_changes"]][0] == "proxy:blackhole"
    assert (out / "timeline.png").stat().st_size > 10_000
    assert _listening_ports() <= before, "the demo left a process listening"


def test_demo_reports_a_missing_source(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robot_compress.cli", "demo", "--source", str(tmp_path / "none.npz")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--source" in proc.stderr and "does not exist" in proc.stderr
