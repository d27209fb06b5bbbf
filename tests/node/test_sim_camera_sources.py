"""sim_camera's frame sources: CIFAR-10 npz, image folder, video; and the INTER_NEAREST upscale
that the node's INTER_AREA downscale undoes exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from robot_compress.ros.sim_camera import labelled_frames
from robot_compress.runtime.datasets import load_cifar10_npz
from robot_compress.runtime.model_contract import ModelDir
from robot_compress.runtime.preprocess import preprocess
from tests.conftest import SMALL_MODEL


def test_npz_frames_carry_their_labels_and_stop_at_the_limit(shared_data):
    path = shared_data / "cifar10" / "test_dev.npz"
    data = load_cifar10_npz(path, limit=3)
    frames = list(labelled_frames(str(path), limit=3, loop=False))
    assert [f[0] for f in frames] == [0, 1, 2]
    assert [f[2] for f in frames] == data.labels.tolist()
    assert [f[3] for f in frames] == [data.label_names[y] for y in data.labels]
    assert np.array_equal(frames[1][1], data.images[1])


def test_loop_starts_the_source_again(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.full((8, 8, 3), 7 if name == "cat" else 9, np.uint8))
    frames = list(labelled_frames(str(tmp_path), limit=5, loop=True))
    assert [(f[2], f[3]) for f in frames] == [(0, "cat"), (1, "dog"), (0, "cat"), (1, "dog"), (0, "cat")]


def test_video_frames_have_no_label(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(4):
        writer.write(np.full((24, 32, 3), 60 * i, np.uint8))
    writer.release()
    frames = list(labelled_frames(str(path), limit=0, loop=False))
    assert len(frames) == 4 and {(f[2], f[3]) for f in frames} == {(-1, "")}
    assert frames[0][1].shape == (24, 32, 3)


def test_missing_video_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot open video"):
        list(labelled_frames(str(tmp_path / "none.mp4"), limit=0, loop=False))


def test_nearest_upscale_then_area_downscale_gives_the_dataset_pixels(cifar_test_dev):
    spec = ModelDir.load(SMALL_MODEL).manifest.preprocessing
    image = cifar_test_dev.images[0]
    camera = cv2.resize(image, (640, 480), interpolation=cv2.INTER_NEAREST)
    assert np.allclose(preprocess(camera, "rgb8", spec), preprocess(image, "rgb8", spec), atol=1e-6)


def test_coco_folder_frames_carry_image_ids_and_loop(shared_data):
    import json

    from robot_compress.ros.sim_camera import coco_frames, is_coco_folder

    folder = shared_data / "coco" / "val_dev"
    entries = json.loads((folder / "instances.json").read_text())["images"]
    assert is_coco_folder(str(folder)) and not is_coco_folder(str(shared_data / "cifar10"))
    frames = list(coco_frames(str(folder), limit=len(entries) + 2, loop=True))
    assert [f[2] for f in frames] == [e["id"] for e in entries] + [entries[0]["id"], entries[1]["id"]]
    assert frames[0][1].shape == (entries[0]["height"], entries[0]["width"], 3)


def test_fit_into_keeps_the_aspect_ratio_top_left():
    """A portrait 480x640 photo in a 640x480 frame: scaled by 0.75, the rest black; boxes scale alike."""
    from robot_compress.ros.sim_camera import fit_into

    photo = np.full((640, 480, 3), 200, np.uint8)
    frame, scale = fit_into(photo, 640, 480)
    assert frame.shape == (480, 640, 3) and scale == 0.75
    assert (frame[:, :360] == 200).all() and (frame[:, 360:] == 0).all()
    same, one = fit_into(np.full((480, 640, 3), 5, np.uint8), 640, 480)
    assert one == 1.0 and (same == 5).all()
