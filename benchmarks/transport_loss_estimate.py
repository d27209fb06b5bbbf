"""How well the stamp-based transport-loss estimate counts lost frames, by loss rate, on simulated cameras.

    .venv/bin/python benchmarks/transport_loss_estimate.py [--frames 900 --rate-hz 30 --trials 20 --jitter-ms 2]

Each trial stamps --frames frames at --rate-hz with +-jitter, loses each but the first independently
with the given probability, and feeds the survivors to runtime/transport_loss.py's estimator (no
sequence numbers, so from stamps alone). Per loss rate: the estimate over the frames truly missing
between the first and the last survivor (median and worst trial; gaps over the estimator's 2 s count
as pauses, not loss, so long runs of loss lower it), and the measured period over the true one.
Prints a table and writes --out (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.runtime.transport_loss import TransportLossEstimator  # noqa: E402


def trial(rng: np.random.Generator, frames: int, rate_hz: float, jitter_s: float, loss: float) -> tuple[float, float]:
    """(estimated / truly missing, measured period / true period) for one simulated camera."""
    stamps = 1000.0 + np.arange(frames) / rate_hz + rng.uniform(-jitter_s, jitter_s, frames)
    kept = np.concatenate([[0], 1 + np.flatnonzero(rng.random(frames - 1) >= loss)])
    estimator = TransportLossEstimator()
    for stamp in stamps[kept]:
        estimator.observe(float(stamp))
    snap = estimator.snapshot()
    truly_missing = int(kept[-1] + 1 - len(kept))
    return (snap.missing / truly_missing if truly_missing else 1.0), (snap.period_s or 0.0) * rate_hz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=900, help="frames the camera publishes per trial")
    parser.add_argument("--rate-hz", type=float, default=30.0)
    parser.add_argument("--jitter-ms", type=float, default=2.0, help="uniform +- jitter of each stamp")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--losses", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "transport_loss_estimate.json")
    args = parser.parse_args(argv)
    if args.frames < 2 or args.trials < 1 or not all(0.0 <= x < 1.0 for x in args.losses):
        parser.error("need --frames >= 2, --trials >= 1 and every loss in [0, 1)")

    rng = np.random.default_rng(args.seed)
    rows = []
    print(f"{args.frames} frames at {args.rate_hz:g} Hz, +-{args.jitter_ms:g} ms jitter, {args.trials} trials per loss")
    print(f"{'loss':>6} {'estimate/true median':>21} {'worst':>6} {'period/true median':>19} {'worst':>6}")
    for loss in args.losses:
        results = [trial(rng, args.frames, args.rate_hz, args.jitter_ms / 1000.0, loss) for _ in range(args.trials)]
        ratios, periods = [r for r, _ in results], [p for _, p in results]
        worst_period = max(periods, key=lambda p: abs(p - 1.0))
        row = {"loss": loss, "estimate_ratio_median": round(statistics.median(ratios), 3),
               "estimate_ratio_min": round(min(ratios), 3), "period_ratio_median": round(statistics.median(periods), 3),
               "period_ratio_worst": round(worst_period, 3)}
        rows.append(row)
        print(f"{loss:>6.2f} {row['estimate_ratio_median']:>21.2f} {row['estimate_ratio_min']:>6.2f} "
              f"{row['period_ratio_median']:>19.2f} {row['period_ratio_worst']:>6.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
