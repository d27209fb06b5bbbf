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


def detection_contact_sheet(coco: Path, records: list[dict], out: Path, per_backend: int = 4,
                            score_threshold: float = 0.3, tile: tuple[int, int] = (320, 240)) -> Path | None:
    """Two rows of COCO photos with the boxes the node published drawn on them: frames answered by
    the edge, then frames answered on the robot (spread over the run), each boxes above
    `score_threshold`, with the backend and the number of boxes underneath."""
    import json

    from robot_compress.runtime.detection import Detection, draw_detections

    files = {i["id"]: i["file_name"] for i in json.loads((coco / "instances.json").read_text())["images"]}
    truth = {_key(r["stamp"]): r for r in records if r.get("kind") == "truth" and "image_id" in r}
    rows = []
    for backend in ("edge", "local"):
        answered = [r for r in records if r.get("kind") == "result" and r.get("backend") == backend
                    and _key(r["stamp"]) in truth]
        tiles = []
        for result in answered[::max(1, len(answered) // per_backend)][:per_backend]:
            frame = truth[_key(result["stamp"])]
            photo = cv2.imread(str(coco / "images" / files[frame["image_id"]]))
            if photo is None:
                continue
            found = [Detection(*(v / frame["scale"] for v in d["box"]), d["score"], d["class_id"], d["label"])
                     for d in result["detections"] if d["score"] > score_threshold]
            tiles.append(_tile(draw_detections(photo, found), f"{backend}: {len(found)} boxes, "
                               f"{result['latency_ms']:.0f} ms", backend, tile))
        rows.append(tiles)
    return _write_sheet(rows, per_backend, out)


def sim_detection_contact_sheet(snapshots: Path, records: list[dict], out: Path, per_backend: int = 4,
                                score_threshold: float = 0.3, tile: tuple[int, int] = (320, 240)) -> Path | None:
    """Two rows of the simulated camera's snapshots (sim_world drew the ground truth on them: thin boxes,
    yellow names) with the boxes the node published above `score_threshold` drawn over them: frames
    answered by the edge, then frames answered on the robot, preferring frames with a board in view,
    spread over the run."""
    from robot_compress.runtime.detection import Detection, draw_detections

    results = {_key(r["stamp"]): r for r in records if r.get("kind") == "result" and r.get("detections") is not None}
    truth = {_key(r["stamp"]): r for r in records if r.get("kind") == "truth" and "stamp" in r}
    shots = []
    for path in sorted(snapshots.glob("*_*.png")):
        key = tuple(int(v) for v in path.stem.split("_"))
        if key in results:
            shots.append((path, results[key], len(truth.get(key, {}).get("boxes", []))))
    rows = []
    for backend in ("edge", "local"):
        mine = [s for s in shots if s[1]["backend"] == backend]
        with_boards = [s for s in mine if s[2]]
        chosen = with_boards[::max(1, len(with_boards) // per_backend)][:per_backend]
        chosen += [s for s in mine if not s[2]][:per_backend - len(chosen)]
        tiles = []
        for path, result, boxes in sorted(chosen, key=lambda s: s[0].name):
            image = cv2.imread(str(path))
            if image is None:
                continue
            found = [Detection(*d["box"], d["score"], d["class_id"], d["label"])
                     for d in result["detections"] if d["score"] > score_threshold]
            tiles.append(_tile(draw_detections(image, found), f"{backend}: {len(found)} boxes (truth {boxes}), "
                               f"{result['latency_ms']:.0f} ms", backend, tile))
        rows.append(tiles)
    return _write_sheet(rows, per_backend, out)


def _tile(image: np.ndarray, caption: str, backend: str, tile: tuple[int, int]) -> np.ndarray:
    """The annotated frame at tile size over a caption band coloured by backend."""
    image = cv2.resize(image, tile, interpolation=cv2.INTER_AREA)
    band = np.full((22, tile[0], 3), 30, np.uint8)
    cv2.putText(band, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (80, 220, 80) if backend == "edge" else (60, 200, 230), 1, cv2.LINE_AA)
    return np.vstack([image, band])


def _write_sheet(rows: list[list[np.ndarray]], per_backend: int, out: Path) -> Path | None:
    """One row per backend (short rows padded with black tiles); None when no backend has a tile."""
    rows = [tiles + [np.zeros_like(tiles[0])] * (per_backend - len(tiles)) for tiles in rows if tiles]
    if not rows:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.vstack([np.hstack(tiles) for tiles in rows]))
    return out
