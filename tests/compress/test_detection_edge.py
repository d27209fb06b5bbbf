"""A detection model directory served by the real edge server: uint8 frames in, the same
detections out as the local backend, over gRPC on loopback."""

from __future__ import annotations

import shutil

import cv2
import numpy as np

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.runtime.detection import detect
from robot_compress.runtime.edge_client import EdgeBackend
from robot_compress.runtime.local_backend import LocalBackend


def test_edge_and_local_backends_give_the_same_detections(detector_dir, shared_data, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(detector_dir, repository / detector_dir.name)
    images = [cv2.imread(str(p)) for p in sorted((shared_data / "coco" / "val_dev" / "images").iterdir())[:3]]
    local = LocalBackend(detector_dir)
    server = EdgeServerProcess(repository, tmp_path / "server.log").start()
    try:
        with EdgeBackend(server.url, local.manifest, default_timeout_s=10.0) as edge:
            from_edge = detect(edge, images, score_threshold=0.0)
    finally:
        server.stop()
    from_local = detect(local, images, score_threshold=0.0)
    assert sum(map(len, from_edge)) > 10
    for edge_found, local_found in zip(from_edge, from_local, strict=True):
        assert [d.class_id for d in edge_found] == [d.class_id for d in local_found]
        np.testing.assert_allclose([[d.x1, d.y1, d.x2, d.y2, d.score] for d in edge_found],
                                   [[d.x1, d.y1, d.x2, d.y2, d.score] for d in local_found], atol=1e-3)
    spec = local.manifest
    assert np.dtype(spec.input.dtype).itemsize * np.prod(spec.input.shape) == 320 * 320 * 3  # bytes sent per frame
    assert 4 * np.prod(spec.output.shape) == 2400  # bytes received per frame
