"""What the validation layer (runtime/schema.py, pydantic) costs on the robot: installed bytes and
the time a fresh process takes to import it and load the manifest and node settings.

    .venv/bin/python benchmarks/schema_import.py [--runs 15] [--out runs/schema_import.json]

Each timing is a new `python -c` process (so nothing is cached in memory), the median of `--runs`;
the baseline imports what the node imported anyway (numpy, yaml, json). Prints a table and writes
JSON. Wheel sizes: `pip download --no-deps pydantic==2.12.5 pydantic-core==2.41.5
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

from robot_compress.runtime.cpu_info import cpu_name

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")
SNIPPETS = {
    "baseline (numpy, yaml, json)": "import numpy, yaml, json",
    "+ import pydantic (lazy)": "import numpy, yaml, json, pydantic",
    "+ from pydantic import BaseModel": "import numpy, yaml, json; from pydantic import BaseModel",
    "+ import onnxruntime (for scale)": "import numpy, yaml, json, onnxruntime",
    "+ runtime.schema": "import numpy, yaml, json; import robot_compress.runtime.schema",
    "+ model_contract + perception_config": "import numpy, yaml, json; import robot_compress.runtime.model_contract, "
                                            "robot_compress.runtime.perception_config",
    "+ load a model dir and the settings": "import numpy, yaml, json\n"
                                           "from robot_compress.runtime.model_contract import ModelDir\n"
                                           "from robot_compress.runtime.perception_config import load_yaml\n"
                                           "ModelDir.load('models/robot_small'); load_yaml()",
}


def installed_bytes(name: str) -> int:
    files = importlib.metadata.distribution(name).files or []
    return sum(f.size or 0 for f in files)


def seconds(code: str, runs: int) -> float:
    timer = f"import time; t = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", timer], capture_output=True, text=True,
                                                  check=True, cwd=REPO).stdout) for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "schema_import.json")
    args = parser.parse_args()
    sizes = {name: installed_bytes(name) for name in DISTRIBUTIONS}
    times = {label: seconds(code, args.runs) for label, code in SNIPPETS.items()}
    print(f"CPU: {cpu_name()}; Python {sys.version.split()[0]}; median of {args.runs} fresh processes")
    for name, size in sizes.items():
        print(f"  installed {name:<20} {size / 1e6:6.2f} MB")
    print(f"  installed total                {sum(sizes.values()) / 1e6:6.2f} MB")
    for label, value in times.items():
        print(f"  {label:<40} {value * 1000:7.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu_name(), "python": sys.version.split()[0], "runs": args.runs,
                                    "installed_bytes": sizes, "import_s": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
