"""The model contract: reading, writing and every way a model directory can be wrong."""

from __future__ import annotations

import json

import pytest

from robot_compress.runtime.errors import ManifestError, ModelError
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import (
    MAX_INPUT_SIDE,
    ModelDir,
    list_models,
    read_config,
    sha256_of,
    write_model_dir,
)
from tests.conftest import EDGE_MODEL, MODELS, SMALL_MODEL


def _edit_manifest(model_dir, edit):
    path = model_dir / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_shipped_models_load_and_match_their_hash():
    for path in (SMALL_MODEL, EDGE_MODEL):
        model = ModelDir.load(path)
        assert model.onnx_path == path / "1" / "model.onnx"
        assert model.manifest.onnx_sha256 == sha256_of(model.onnx_path)
        assert model.manifest.labels[0] == "airplane" and len(model.manifest.labels) == 10
        assert model.config.platform == "onnxruntime_onnx"
        assert model.max_batch_size > 0
        assert model.manifest.license, "shipped weights must carry their licence"


def test_list_models_finds_every_model_directory():
    names = [p.name for p in list_models(MODELS)]
    assert "cifar10_resnet20" in names and "cifar10_resnet56" in names


def test_write_then_load_round_trips(model_copy, tmp_path):
    original = ModelDir.load(model_copy)
    original.manifest.metrics["note"] = "round trip"
    written = write_model_dir(tmp_path / "copy", original.manifest, original.onnx_path, max_batch_size=8)
    again = ModelDir.load(tmp_path / "copy")
    assert again.manifest == written.manifest
    assert again.manifest.metrics["note"] == "round trip"
    assert again.max_batch_size == 8
    assert read_config(tmp_path / "copy" / "config.pbtxt").dynamic_batching.default_queue_policy.max_queue_size > 0


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        ModelDir.load(tmp_path / "nope")


def test_missing_onnx_file(model_copy):
    (model_copy / "1" / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx is missing"):
        ModelDir.load(model_copy)


def test_corrupt_onnx_file_fails_the_hash(model_copy):
    path = model_copy / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        ModelDir.load(model_copy)


def test_missing_manifest(model_copy):
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ManifestError, match=r"manifest\.json is missing"):
        ModelDir.load(model_copy)


def test_manifest_not_json(model_copy):
    (model_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ModelDir.load(model_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("labels"), "missing field 'labels'"),
        (lambda d: d["preprocessing"].pop("mean"), "missing field 'preprocessing.mean'"),
        (lambda d: d.update(labels="cat"), "field 'labels' must be list, got str"),
        (lambda d: d.update(labels=[]), "non-empty list of strings"),
        (lambda d: d["preprocessing"].update(mean=[0.5, "a", 0.5]), "'preprocessing.mean[1]' must be float, got str"),
        (lambda d: d["preprocessing"].update(std=[0.2, 0.0, 0.2]), "'preprocessing.std' must have every item in (0, "),
        (lambda d: d["preprocessing"].update(input_size=[32]), "'preprocessing.input_size' has too few items"),
        (lambda d: d["preprocessing"].update(layout="CHW"), "'preprocessing.layout' must be one of"),
        (lambda d: d["preprocessing"].update(channel_order="RGBA"), "'preprocessing.channel_order' must be one of"),
        (lambda d: d["input"].update(dtype="float64"), "'input.dtype' must be one of"),
        (lambda d: d["input"].update(shape=[3, -1, 32]), "'input.shape' must have every item in [1, "),
        (lambda d: d["output"].update(shape=[11]), "does not match the 10 labels"),
        (lambda d: d.update(version=True), "field 'version' must be int, got bool"),
        (lambda d: d.update(onnx_sha256=123), "field 'onnx_sha256' must be str"),
        (lambda d: d.update(format_version=99), "newer than this"),
        (lambda d: d.update(input="x"), "field 'input' must be dict"),
    ],
)
def test_bad_manifest_fields_are_named(model_copy, edit, message):
    _edit_manifest(model_copy, edit)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ModelDir.load(model_copy)


def test_hash_mismatch_names_both_hashes(model_copy):
    _edit_manifest(model_copy, lambda d: d.update(onnx_sha256="0" * 64))
    with pytest.raises(ModelError, match="manifest says 0000") as info:
        ModelDir.load(model_copy)
    assert sha256_of(model_copy / "1" / "model.onnx") in str(info.value)


def test_config_must_agree_with_manifest(model_copy):
    config = model_copy / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "input"', 'name: "images"'))
    with pytest.raises(ManifestError, match="differ from manifest"):
        ModelDir.load(model_copy)


def test_corrupt_config(model_copy):
    (model_copy / "config.pbtxt").write_text("max_batch_size: banana")
    with pytest.raises(ManifestError, match="not a valid Triton model configuration"):
        ModelDir.load(model_copy)


# --- the manifest checked against config.pbtxt and the ONNX file, at load -----------------------

def _edit_config(model_dir, old: str, new: str, count: int = 1) -> None:
    path = model_dir / "config.pbtxt"
    text = path.read_text()
    assert text.count(old) >= count, (old, text)
    path.write_text(text.replace(old, new, count))


def test_input_size_above_the_maximum_side_is_refused(model_copy):
    _edit_manifest(model_copy, lambda d: d["preprocessing"].update(input_size=[20000, 20000]))
    with pytest.raises(ManifestError, match=rf"'preprocessing.input_size' must have every item in \[1, "
                                            rf"{MAX_INPUT_SIDE}\], got \[20000, 20000\]"):
        ModelDir.load(model_copy)


def test_input_size_must_match_the_input_shape(model_copy):
    _edit_manifest(model_copy, lambda d: d["preprocessing"].update(input_size=[64, 64]))
    with pytest.raises(ManifestError, match=r"input shape \[3, 32, 32\] does not match preprocessing "
                                            r"input_size \[64, 64\] in layout NCHW \(expected \[3, 64, 64\]\)"):
        ModelDir.load(model_copy)


@pytest.mark.parametrize("key, values", [("mean", [float("nan"), 0.5, 0.5]), ("std", [0.2, float("inf"), 0.2]),
                                         ("std", [0.2, 0.2, float("-inf")])])
def test_mean_and_std_must_be_finite(model_copy, key, values):
    _edit_manifest(model_copy, lambda d: d["preprocessing"].update({key: values}))  # json writes NaN/Infinity
    index = next(i for i, v in enumerate(values) if v != v or abs(v) == float("inf"))
    with pytest.raises(ManifestError, match=rf"'preprocessing.{key}\[{index}\]' must be a finite number"):
        ModelDir.load(model_copy)


def test_deeply_nested_manifest_is_a_clear_error(model_copy):
    (model_copy / "manifest.json").write_text('{"source": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ManifestError, match=r"manifest\.json: not valid JSON: recursion limit exceeded"):
        ModelDir.load(model_copy)


@pytest.mark.parametrize("old, new, message", [
    ("dims: 32\n  dims: 32", "dims: 64\n  dims: 64",
     r"input 'input' dims \[3, 64, 64\] differ from manifest input.shape \[3, 32, 32\]"),
    ("dims: 10", "dims: 11", r"output 'logits' dims \[11\] differ from manifest output.shape \[10\]"),
    ('platform: "onnxruntime_onnx"', 'platform: "tensorrt_plan"', r"platform 'tensorrt_plan' .* is not 'onnxruntime_onnx'"),
    ("kind: KIND_CPU", "kind: KIND_GPU", r"instance_group\[0\].kind KIND_GPU is not one of \['KIND_AUTO', 'KIND_CPU'\]"),
    ("count: 1", "count: 5000", r"instance_group\[0\].count 5000 is out of range \[0, 64\]"),
    ("data_type: TYPE_FP32\n  dims: 10", "data_type: TYPE_FP16\n  dims: 10",
     r"output 'logits' data_type TYPE_FP16 differs from manifest output.dtype float32 \(TYPE_FP32\)"),
])
def test_config_pbtxt_must_describe_the_manifests_model(model_copy, old, new, message):
    _edit_config(model_copy, old, new)
    with pytest.raises(ManifestError, match=r"config\.pbtxt: " + message):
        ModelDir.load(model_copy)


def _rename_output(d):
    d["output"]["name"] = "scores"


def _half_input(d):
    d["input"]["dtype"] = "float16"


def _smaller_input(d):
    d["input"]["shape"] = [3, 16, 16]
    d["preprocessing"]["input_size"] = [16, 16]


@pytest.mark.parametrize("edit, config_edits, message", [
    (_rename_output, [('name: "logits"', 'name: "scores"')], r"output is named 'logits', manifest output.name is 'scores'"),
    (_half_input, [("data_type: TYPE_FP32", "data_type: TYPE_FP16")], r"input 'input' is float32, manifest input.dtype is float16"),
    (_smaller_input, [("dims: 32\n  dims: 32", "dims: 16\n  dims: 16")],
     r"input 'input' has shape \[.*, 3, 32, 32\] \(batch first\), manifest input.shape is \[3, 16, 16\]"),
])
def test_onnx_file_must_match_the_manifest_when_loaded(model_copy, edit, config_edits, message):
    """Manifest and config.pbtxt agree with each other but not with the ONNX file: a clear error when
    ONNX Runtime loads it, naming the field and both values, not a traceback at the first request."""
    _edit_manifest(model_copy, edit)
    for old, new in config_edits:
        _edit_config(model_copy, old, new)
    ModelDir.load(model_copy)  # the files agree with each other
    with pytest.raises(ModelError, match=r"model\.onnx: " + message):
        LocalBackend(model_copy)
