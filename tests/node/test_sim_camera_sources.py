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
