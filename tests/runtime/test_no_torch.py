"""The robot side (runtime/ and ros/) must import and run without torch installed."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, SMALL_MODEL

# Makes `import torch` fail as if torch were not installed, then imports every robot-side module
# and classifies one image.
SCRIPT = f"""
import importlib, importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "torch_pruning"):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by test)")
        return None

sys.meta_path.insert(0, NoTorch())
import robot_compress.runtime, robot_compress.ros
imported = []
for package in (robot_compress.runtime, robot_compress.ros):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
import numpy as np
from robot_compress.runtime.local_backend import LocalBackend
print(LocalBackend({str(SMALL_MODEL)!r}).classify(np.zeros((1, 32, 32, 3), np.uint8))[0].label)
assert not [m for m in sys.modules if m.split(".")[0] == "torch"]
print("imported", len(imported), "modules without torch")
"""


def test_robot_side_imports_and_classifies_without_torch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "without torch" in proc.stdout
