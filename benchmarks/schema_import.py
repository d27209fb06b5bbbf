"""What the validation layer (runtime/schema.py, pydantic) costs on the robot: installed bytes and
the time a fresh process takes to import it and load the manifest and node settings.

    .venv/bin/python benchmarks/schema_import.py [--runs 15] [--out runs/schema_import.json]

Each run is a new process (so nothing is cached in memory); figures are medians of `--runs`. The
modules are imported after numpy, yaml and json, which the node imports anyway. Prints a table and
writes JSON. Wheel sizes: `pip download --no-deps pydantic==2.12.5 pydantic-core==2.41.5
annotated-types==0.7.0 typing-inspection==0.4.2 -d /tmp/w && du -b /tmp/w/*`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import subprocess
import sys
from pathlib import Path

from robot_compress.runtime.cpu_info import cpu_description

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")
MODULES = ("robot_compress.runtime.schema", "robot_compress.runtime.model_contract",
           "robot_compress.runtime.perception_config")
PROGRAM = """import numpy, yaml, json, time
import robot_compress.runtime.model_contract, robot_compress.runtime.perception_config
t = time.perf_counter()
robot_compress.runtime.model_contract.ModelDir.load("models/robot_small", verify_hash=False)
robot_compress.runtime.perception_config.load_yaml()
print(time.perf_counter() - t)"""


def installed_bytes(name: str) -> int:
    files = importlib.metadata.distribution(name).files or []
    return sum(f.size or 0 for f in files)


def one_run() -> dict[str, float]:
    """Cumulative import time of each module (python -X importtime, which counts only the process's
    own work and so is steadier than wall time on a busy machine) and the time to validate a model
    directory and the node's settings once imported, all in seconds."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", PROGRAM], capture_output=True, text=True,
                          check=True, cwd=REPO)
    result = {"validate model dir + settings": float(done.stdout)}
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] in MODULES:
            result[f"import {parts[2].rsplit('.', 1)[-1]} (cumulative)"] = int(parts[1]) / 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "schema_import.json")
    args = parser.parse_args()
    sizes = {name: installed_bytes(name) for name in DISTRIBUTIONS}
    runs = [one_run() for _ in range(args.runs)]
    times = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"CPU: {cpu_description()}; Python {sys.version.split()[0]}; median of {args.runs} fresh processes")
    for name, size in sizes.items():
        print(f"  installed {name:<20} {size / 1e6:6.2f} MB")
    print(f"  installed total                {sum(sizes.values()) / 1e6:6.2f} MB")
    for label, value in times.items():
        print(f"  {label:<40} {value * 1000:7.1f} ms")
    print("  (model_contract's import includes schema's, which includes pydantic's)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu_description(), "python": sys.version.split()[0], "runs": args.runs,
                                    "installed_bytes": sizes, "import_s": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
