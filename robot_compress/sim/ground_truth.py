"""Per-frame ground truth: board boxes through the plane-to-image homography, then occlusion.

Pixel coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel and (W, H) the
bottom-right corner of the image, as in COCO boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robot_compress.sim.boards import Board

UNIT_SQUARE = np.float32([[0, 0], [1, 0], [1, 1], [0, 1]])
MIN_DEPTH = 0.05  # metres in front of the camera; nearer points do not project meaningfully


@dataclass(frozen=True)
class PinholeCamera:
    """A camera at `position` whose rotation matrix `rotation` has columns (right, up, backward), MuJoCo's."""
    position: np.ndarray
    rotation: np.ndarray
    width: int
    height: int
    fovy_deg: float

    @property
    def focal(self) -> float:
        return (self.height / 2) / np.tan(np.radians(self.fovy_deg) / 2)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Nx2 pixel coordinates, N depths) of world points."""
        local = (np.asarray(points, dtype=float) - self.position) @ self.rotation
        depth = -local[:, 2]
        safe = np.where(depth > 1e-9, depth, 1e-9)
        u = self.width / 2 + self.focal * local[:, 0] / safe
        v = self.height / 2 - self.focal * local[:, 1] / safe
        return np.stack([u, v], axis=1), depth


@dataclass(frozen=True)
class TruthBox:
    board: str
    image_id: str
    category_id: int
    label: str
    x0: float
    y0: float
    x1: float
    y1: float
    visible: float  # fraction of the box's projected area that the segmentation pass shows unhidden

    def as_dict(self) -> dict:
        return {"board": self.board, "image_id": self.image_id, "category_id": self.category_id, "label": self.label,
                "bbox": [round(self.x0, 2), round(self.y0, 2), round(self.x1, 2), round(self.y1, 2)],
                "visible": round(self.visible, 3)}


def board_homography(board: Board, camera: PinholeCamera) -> np.ndarray | None:
    """3x3 map from board coordinates (u, v in 0..1) to pixels; None when the board is not wholly in front."""
    pixels, depth = camera.project(board.corners())
    if (depth < MIN_DEPTH).any():
        return None
    return cv2.getPerspectiveTransform(UNIT_SQUARE, pixels.astype(np.float32))


def board_boxes(board: Board, camera: PinholeCamera, visible_mask: np.ndarray | None = None,
                min_visible: float = 0.3, min_side_px: float = 3.0) -> list[TruthBox]:
    """The board's boxes in this camera's image: projected, clipped to the image, and where `visible_mask`
    (HxW bool: pixels showing this board) is given, dropped when less than `min_visible` of the box shows
    and otherwise trimmed to the part that shows."""
    homography = board_homography(board, camera)
    if homography is None:
        return []
    out = []
    for box in board.picture.boxes:
        quad = np.float32([[box.u0, box.v0], [box.u1, box.v0], [box.u1, box.v1], [box.u0, box.v1]])
        projected = cv2.perspectiveTransform(quad[None], homography)[0]
        x0, y0 = np.clip(projected.min(axis=0), 0, [camera.width, camera.height])
        x1, y1 = np.clip(projected.max(axis=0), 0, [camera.width, camera.height])
        if x1 - x0 < min_side_px or y1 - y0 < min_side_px:
            continue
        visible = 1.0
        if visible_mask is not None:
            trimmed = _visible_part(projected, visible_mask)
            if trimmed is None:
                continue
            visible, (x0, y0, x1, y1) = trimmed
            if visible < min_visible or x1 - x0 < min_side_px or y1 - y0 < min_side_px:
                continue
        out.append(TruthBox(board.name, board.picture.image_id, box.category_id, box.label,
                            float(x0), float(y0), float(x1), float(y1), float(visible)))
    return out


def _visible_part(quad: np.ndarray, visible_mask: np.ndarray) -> tuple[float, tuple[float, ...]] | None:
    """(fraction of the quad's in-image pixels that are visible, bounding box of those pixels)."""
    height, width = visible_mask.shape
    inside = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(inside, np.round(quad * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
    area = int(inside.sum())
    if area == 0:
        return None
    shown = inside.astype(bool) & visible_mask
    count = int(shown.sum())
    if count == 0:
        return None
    ys, xs = np.nonzero(shown)
    return count / area, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
