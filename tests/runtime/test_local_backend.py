"""The local ONNX Runtime backend on the real shipped model and real CIFAR-10 images."""

from __future__ import annotations

import numpy as np
import pytest

from robot_compress.runtime.errors import ImageError, ModelError
from robot_compress.runtime.evaluate import top1_accuracy
from robot_compress.runtime.local_backend import LocalBackend
from tests.conftest import SMALL_MODEL


@pytest.fixture(scope="module")
def backend():
    return LocalBackend(SMALL_MODEL)


def test_classifies_real_images_like_its_manifest_says(backend, cifar_test_dev):
    subset = cifar_test_dev.subset(np.arange(500))
    accuracy = top1_accuracy(backend, subset, backend.manifest.preprocessing)
    assert accuracy == pytest.approx(backend.manifest.metrics["top1"], abs=0.03)


def test_classify_returns_sorted_top_k_with_probabilities(backend, cifar_test_dev):
    (prediction,) = backend.classify(cifar_test_dev.images[:1], "rgb8", k=5)
    scores = [s for _, s in prediction.top_k]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1.0 + 1e-6
    assert prediction.label == prediction.top_k[0][0] == backend.manifest.labels[prediction.class_id]


def test_batch_and_single_agree(backend, cifar_test_dev):
    batch = backend.classify(cifar_test_dev.images[:8], "rgb8")
    single = [backend.classify(img[None], "rgb8")[0] for img in cifar_test_dev.images[:8]]
    assert [p.class_id for p in batch] == [p.class_id for p in single]


def test_wrong_input_tensor_is_rejected(backend):
    with pytest.raises(ImageError, match=r"shape \(N, 3, 32, 32\)"):
        backend.infer(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ImageError, match="float32"):
        backend.infer(np.zeros((1, 3, 32, 32), np.float64))


def test_refuses_a_model_whose_file_was_changed(model_copy):
    path = model_copy / "1" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        LocalBackend(model_copy)


def test_not_an_onnx_file_gives_a_clear_error(model_copy):
    """A file whose hash matches its manifest but is not ONNX (e.g. a bad export) is named."""
    import json

    from robot_compress.runtime.model_contract import sha256_of

    path = model_copy / "1" / "model.onnx"
    path.write_bytes(b"this is not an onnx model")
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["onnx_sha256"] = sha256_of(path)
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="could not be loaded by ONNX Runtime"):
        LocalBackend(model_copy)
