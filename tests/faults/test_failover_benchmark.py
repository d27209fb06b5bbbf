"""benchmarks/failover.py refuses a misspelt node parameter before it starts minutes of runs."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_an_unknown_node_parameter_is_refused_up_front():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "failover.py"), "--param", "deadline_msec=60"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "unknown perception_node parameter(s) ['deadline_msec']" in done.stderr and "deadline_ms" in done.stderr


def test_an_unknown_edge_kind_is_refused_up_front():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "failover.py"), "--edge", "tritonserver"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--edge: invalid choice: 'tritonserver'" in done.stderr, done.stderr
