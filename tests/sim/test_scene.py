"""The MuJoCo scene rendered headless: the TurtleBot3 world and robot load, a board's rendered pixels sit
where its ground-truth box says, a board in front trims the box behind it, and bad assets fail clearly."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from robot_compress.sim.assets import DEFAULT_ASSETS, AssetError
from robot_compress.sim.boards import Board, LabelledBox, Picture
from robot_compress.sim.scene import SceneSpec
from robot_compress.sim.simulation import Simulation

WIDTH, HEIGHT = 320, 240


def quadrant_picture() -> Picture:
    """Red top-left, green top-right, blue bottom-left, white bottom-right; one box per quadrant."""
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[:150, :200] = (255, 0, 0)
    rgb[:150, 200:] = (0, 255, 0)
    rgb[150:, :200] = (0, 0, 255)
    rgb[150:, 200:] = (255, 255, 255)
    boxes = [LabelledBox(0.0, 0.0, 0.5, 0.5, 1, "red"), LabelledBox(0.5, 0.0, 1.0, 0.5, 2, "green"),
             LabelledBox(0.0, 0.5, 0.5, 1.0, 3, "blue"), LabelledBox(0.5, 0.5, 1.0, 1.0, 4, "white")]
    return Picture("quadrants", rgb, boxes)


@pytest.fixture(scope="module")
def assets():
    if not (DEFAULT_ASSETS / "turtlebot3_description").is_dir():
        pytest.fail(f"{DEFAULT_ASSETS} is missing: clone the project with ../shared beside it")
    return DEFAULT_ASSETS


def _simulation(boards, with_world=False) -> Simulation:
    # Robot at the origin facing +x; its camera is about 0.1 m above the floor.
    return Simulation(SceneSpec(WIDTH, HEIGHT, spawn=(0.0, 0.0, 0.0), with_world=with_world), boards)


def test_rendered_board_matches_its_ground_truth(assets):
    board = Board("board_0", quadrant_picture(), (1.5, 0.0, 0.32), math.pi, 0.8)
    with _simulation([board]) as sim:
        sim.advance(0.2)  # settle on the wheels
        frame = sim.render()
    boxes = {b.label: b for b in frame.boxes}
    assert set(boxes) == {"red", "green", "blue", "white"}
    expected = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}
    for label, box in boxes.items():
        # The middle half of each box: its colour dominates (lighting scales it, the hue stays).
        x0, x1 = int(box.x0 + (box.x1 - box.x0) / 4), int(box.x1 - (box.x1 - box.x0) / 4)
        y0, y1 = int(box.y0 + (box.y1 - box.y0) / 4), int(box.y1 - (box.y1 - box.y0) / 4)
        mean = frame.rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
        lit = np.array(expected[label]) > 0
        assert mean[lit].min() > 100 and (lit.all() or mean[~lit].max() < 0.5 * mean[lit].min()), (label, mean)
    # The quadrants meet where the homography says (boxes are trimmed to whole visible pixels).
    assert boxes["red"].x1 == pytest.approx(boxes["green"].x0, abs=1.5)
    assert boxes["red"].y1 == pytest.approx(boxes["blue"].y0, abs=1.5)
    assert boxes["red"].x1 == pytest.approx(WIDTH / 2, abs=3)  # the board is centred on the camera's axis


def test_board_in_front_trims_the_box_behind(assets):
    back = Board("board_0", quadrant_picture(), (2.0, 0.0, 0.32), math.pi, 0.8)
    plain = Picture("plain", np.full((200, 100, 3), 128, np.uint8), [])
    front = Board("board_1", plain, (1.0, 0.25, 0.41), math.pi, 0.4)  # floor to 0.81 m, on the image's left
    with _simulation([back]) as sim:
        sim.advance(0.2)
        alone = {b.label: b for b in sim.render().boxes}
    with _simulation([back, front]) as sim:
        sim.advance(0.2)
        hidden = {b.label: b for b in sim.render().boxes}
    assert "green" in hidden and hidden["green"].x1 == pytest.approx(alone["green"].x1, abs=1.5)
    trimmed_or_dropped = [label for label in ("red", "blue")
                          if label not in hidden or hidden[label].x0 > alone[label].x0 + 5]
    assert trimmed_or_dropped == ["red", "blue"], (alone, hidden)


def test_turtlebot3_world_loads_and_the_robot_drives(assets):
    with Simulation(SceneSpec(WIDTH, HEIGHT, spawn=(0.0, -2.0, 0.0)), boards=[]) as sim:
        frame = sim.render()
        assert frame.rgb.shape == (HEIGHT, WIDTH, 3) and frame.rgb.std() > 10  # not a blank image
        sim.set_command(0.2, 0.0)
        sim.advance(2.0)
        pose = sim.pose()
    assert pose.x == pytest.approx(0.4, abs=0.08) and abs(pose.y + 2.0) < 0.05 and abs(pose.yaw) < 0.1
    assert pose.linear == pytest.approx(0.2, abs=0.03)


def test_missing_and_corrupt_assets_fail_with_the_file_named(tmp_path, assets):
    with pytest.raises(AssetError, match="turtlebot3_waffle_pi.urdf is missing"):
        Simulation(SceneSpec(WIDTH, HEIGHT, assets=tmp_path), boards=[])
    copy = tmp_path / "tb3"
    shutil.copytree(assets, copy)
    (copy / "turtlebot3_world/model.sdf").chmod(0o644)
    (copy / "turtlebot3_world/model.sdf").write_text("<sdf><model")
    with pytest.raises(AssetError, match="model.sdf"):
        Simulation(SceneSpec(WIDTH, HEIGHT, assets=copy), boards=[])


def test_cifar_view_one_board_fills_the_view_and_changes_picture(assets, cifar_test_dev):
    from robot_compress.sim.boards import load_cifar_pictures
    from robot_compress.sim.scene import board_filling_view

    pictures = load_cifar_pictures(DEFAULT_ASSETS.parents[1] / "data" / "cifar10" / "test_dev.npz", 2)
    spec = SceneSpec(WIDTH, HEIGHT, spawn=(0.0, 0.0, 0.0))
    board = board_filling_view(pictures[0], spec)
    with Simulation(spec, [board]) as sim:
        first = sim.render()
        sim.set_picture("board_0", pictures[1])
        second = sim.render()
        seg_rows = []
        sim.renderer.enable_segmentation_rendering()
        sim.renderer.update_scene(sim.data, camera=sim.camera_id)
        seg_rows = (sim.renderer.render()[:, :, 0] == sim.board_geoms["board_0"]).any(axis=1)
        sim.renderer.disable_segmentation_rendering()
    assert (first.class_id, first.label) == (pictures[0].class_id, pictures[0].label)
    assert (second.class_id, second.label) == (pictures[1].class_id, pictures[1].label)
    assert 0.8 <= seg_rows.mean() <= 0.9  # the board fills about 85 % of the image height
    # What the camera shows is the picture: its downscaled view correlates with the CIFAR image.
    import cv2

    for frame, picture in ((first, pictures[0]), (second, pictures[1])):
        ys = np.nonzero(seg_rows)[0]
        side = ys[-1] - ys[0] + 1
        x0 = (WIDTH - side) // 2
        view = cv2.resize(frame.rgb[ys[0]:ys[-1] + 1, x0:x0 + side], (32, 32), interpolation=cv2.INTER_AREA)
        corr = np.corrcoef(view.astype(float).ravel(), picture.rgb.astype(float).ravel())[0, 1]
        assert corr > 0.8, corr
