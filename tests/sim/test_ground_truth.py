"""Ground truth of a picture board: the plane-to-image homography against a hand-worked answer, and
against MuJoCo's own rendering of the same board (texture orientation, camera intrinsics, occlusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robot_compress.sim.boards import Board, LabelledBox, Picture
from robot_compress.sim.drive import DiffDrive, command_problem
from robot_compress.sim.ground_truth import PinholeCamera, board_boxes

WIDTH, HEIGHT, HFOV = 320, 240, 62.0


def looking_along_x(position=(0.0, 0.0, 0.25)) -> PinholeCamera:
    """A camera at `position` looking along +x, image right = -y, image up = +z (MuJoCo's column order)."""
    rotation = np.column_stack([[0, -1, 0], [0, 0, 1], [-1, 0, 0]]).astype(float)
    fovy = math.degrees(2 * math.atan(math.tan(math.radians(HFOV) / 2) * HEIGHT / WIDTH))
    return PinholeCamera(np.asarray(position, float), rotation, WIDTH, HEIGHT, fovy)


def picture(boxes, size=(300, 400)) -> Picture:
    return Picture("synthetic", np.zeros((*size, 3), np.uint8), boxes)


def test_board_facing_the_camera_projects_to_the_worked_answer():
    distance, board_width = 2.0, 0.8  # picture 400x300 px -> board 0.8 m x 0.6 m
    board = Board("b", picture([LabelledBox(0.25, 0.5, 0.75, 1.0, 1, "person")]), (distance, 0.0, 0.25), math.pi,
                  board_width)
    camera = looking_along_x()
    focal = (WIDTH / 2) / math.tan(math.radians(HFOV) / 2)
    [box] = board_boxes(board, camera)
    # u 0.25..0.75 is 0.4 m wide about the centre; v 0.5..1 is the lower half: 0.3 m below the centre.
    assert box.x0 == pytest.approx(WIDTH / 2 - focal * 0.2 / distance, abs=1e-3)
    assert box.x1 == pytest.approx(WIDTH / 2 + focal * 0.2 / distance, abs=1e-3)
    assert box.y0 == pytest.approx(HEIGHT / 2, abs=1e-3)
    assert box.y1 == pytest.approx(HEIGHT / 2 + focal * 0.3 / distance, abs=1e-3)
    assert (box.label, box.category_id, box.visible) == ("person", 1, 1.0)


def test_boxes_are_clipped_to_the_image_and_dropped_behind_the_camera():
    near = Board("b", picture([LabelledBox(0.0, 0.0, 1.0, 1.0, 1, "tv")]), (0.3, 0.0, 0.25), math.pi, 0.8)
    [box] = board_boxes(near, looking_along_x())
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, WIDTH, HEIGHT)
    behind = Board("b", picture([LabelledBox(0.0, 0.0, 1.0, 1.0, 1, "tv")]), (-2.0, 0.0, 0.25), 0.0, 0.8)
    assert board_boxes(behind, looking_along_x()) == []


def test_occlusion_mask_trims_and_drops_boxes():
    board = Board("b", picture([LabelledBox(0.25, 0.5, 0.75, 1.0, 1, "person")]), (2.0, 0.0, 0.25), math.pi, 0.8)
    camera = looking_along_x()
    [full] = board_boxes(board, camera)
    mask = np.ones((HEIGHT, WIDTH), bool)
    mask[:, : round((full.x0 + full.x1) / 2)] = False  # the left half of the box hidden
    [trimmed] = board_boxes(board, camera, mask)
    assert trimmed.x0 == pytest.approx((full.x0 + full.x1) / 2, abs=1.5)
    assert trimmed.x1 == pytest.approx(full.x1, abs=1.5)
    assert trimmed.visible == pytest.approx(0.5, abs=0.05)
    mask[:, : round(full.x1 - 0.2 * (full.x1 - full.x0))] = False  # 80 % hidden: below min_visible
    assert board_boxes(board, camera, mask, min_visible=0.3) == []


def test_diff_drive_and_command_limits():
    drive = DiffDrive(wheel_radius=0.033, wheel_separation=0.288)
    left, right = drive.wheel_speeds(0.1, 0.5)
    assert (left + right) / 2 * 0.033 == pytest.approx(0.1)
    assert (right - left) * 0.033 / 0.288 == pytest.approx(0.5)
    assert command_problem(0.2, -1.0) is None  # reversing and turning right are fine
    assert "nan" in command_problem(float("nan"), 0.0)
    assert "angular.z" in command_problem(0.0, float("inf"))
    assert "beyond" in command_problem(5.0, 0.0)
