"""A contact sheet of the simulated camera's annotated frames with what the robot answered for each."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _key(stamp: dict) -> tuple[int, int]:
    return int(stamp["sec"]), int(stamp["nanosec"])


def contact_sheet(snapshots: Path, records: list[dict], out: Path, columns: int = 4, limit: int = 12) -> Path | None:
    """Tile up to `limit` snapshots (named <sec>_<nanosec>.png, ground truth drawn by sim_world), each with
    the node's answer for that frame underneath: green when it matches the truth, red when not."""
    files = sorted(snapshots.glob("*_*.png"))
    if not files:
        return None
    step = max(1, len(files) // limit)
    results = {_key(r["stamp"]): r for r in records if r.get("kind") == "result" and "stamp" in r}
    truth = {_key(r["stamp"]): r for r in records if r.get("kind") == "truth" and "stamp" in r}
    tiles = []
    for path in files[::step][:limit]:
        image = cv2.imread(str(path))
        if image is None:
            continue
        sec, nanosec = (int(v) for v in path.stem.split("_"))
        result, expected = results.get((sec, nanosec), {}), truth.get((sec, nanosec), {})
        answer = result.get("label", "no answer")
        ok = "label" in result and result.get("class_id") == expected.get("class_id")
        band = np.full((22, image.shape[1], 3), 30, np.uint8)
        cv2.putText(band, f"robot: {answer} ({result.get('backend', '-')})", (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (80, 220, 80) if ok else (60, 60, 230), 1, cv2.LINE_AA)
        tiles.append(np.vstack([image, band]))
    if not tiles:
        return None
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack(rows))
    return out
