"""Load an edge server from a second client so that it answers RESOURCE_EXHAUSTED.

`python -m robot_compress.faults.flood --url 127.0.0.1:8001 --model-dir models/M --threads 8
--duration-s 5`: each thread sends inference requests back to back, for at most `duration_s`
(the loop ends by itself), or until SIGTERM. Prints one JSON line of counts at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="edge server HOST:PORT (loopback or a test namespace)")
    parser.add_argument("--model-dir", required=True, type=Path, help="model directory (its manifest)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args(argv)

    import numpy as np

    from robot_compress.runtime.backend import BackendError
    from robot_compress.runtime.edge_client import EdgeBackend
    from robot_compress.runtime.model_contract import ModelDir

    manifest = ModelDir.load(args.model_dir).manifest
    batch = np.zeros((1, *manifest.input.shape), np.float32)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    end = time.monotonic() + args.duration_s

    def hammer(edge: EdgeBackend) -> None:
        while not stop.is_set() and time.monotonic() < end:
            try:
                edge.infer(batch, timeout_s=1.0)
                outcome = "ok"
            except BackendError as exc:
                outcome = exc.kind.value
            with lock:
                counts[outcome] += 1

    with EdgeBackend(args.url, manifest) as edge:
        threads = [threading.Thread(target=hammer, args=(edge,)) for _ in range(args.threads)]
        for t in threads:
            t.start()
        print(json.dumps({"started": args.threads}), flush=True)
        for t in threads:
            t.join()
    print(json.dumps(dict(counts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
