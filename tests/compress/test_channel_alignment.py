"""Channel alignment for real: torch models with pruned-looking widths, exported, quantized with
ONNX Runtime, widened, and run again; plus the `align-channels` command on a model directory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from robot_compress.compress.channel_alignment import AlignmentMismatch, align_channels, align_file
from robot_compress.compress.onnx_export import export_onnx
from robot_compress.compress.recipe import QuantizeInt8
from robot_compress.compress.stages import Artefact, runner
from robot_compress.runtime.cpu_info import int8_dot_products
from robot_compress.runtime.local_backend import make_session
from robot_compress.runtime.model_contract import (
    Manifest,
    ModelDir,
    Preprocessing,
    TensorSpec,
    write_model_dir,
)

SHAPE = (3, 16, 16)


class OddWidths(nn.Module):
    """A residual stage at 10 channels, a stride-2 stage at 21, a classifier: widths pruning leaves."""

    def __init__(self, depthwise: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.block = nn.Conv2d(10, 10, 3, padding=1, groups=10 if depthwise else 1)
        self.down = nn.Conv2d(10, 21, 3, stride=2, padding=1)
        self.fc = nn.Linear(21, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.block(x))
        x = torch.relu(self.down(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def conv_widths(model: onnx.ModelProto) -> list[int]:
    """Output channels of each Conv, from its (possibly dequantized) weight initializer."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    widths = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = node.input[1]
            if weight not in initializers:
                weight = producer[weight].input[0]
            widths.append(initializers[weight].shape[0])
    return widths


def answers(path, x: np.ndarray) -> np.ndarray:
    session = make_session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture
def inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((16, *SHAPE)).astype(np.float32)


@pytest.fixture
def float_file(tmp_path):
    torch.manual_seed(0)
    return export_onnx(OddWidths().eval(), tmp_path / "odd.onnx", SHAPE)


def test_float_graph_is_widened_and_answers_the_same(float_file, inputs, tmp_path):
    result = align_channels(onnx.load(float_file), 8)
    assert result.widths == {10: 16, 21: 24}
    assert conv_widths(result.model) == [16, 16, 24]
    onnx.save(result.model, tmp_path / "aligned.onnx")
    np.testing.assert_allclose(answers(tmp_path / "aligned.onnx", inputs), answers(float_file, inputs), atol=1e-4)


def test_int8_graph_is_widened_with_identical_answers(context, float_file, inputs, tmp_path):
    int8 = runner("quantize_int8")(QuantizeInt8(calibration_images=32), Artefact(OddWidths(), onnx=float_file),
                                   context).onnx
    report = align_file(int8, tmp_path / "aligned.onnx", 16, inputs, bound=1e-6)
    assert report.widths == {10: 16, 21: 32}
    assert report.max_abs_diff == 0.0  # the graphs, unfused: zero filters add exact zeros on every CPU
    assert report.bytes_after > report.bytes_before  # the zero filters are stored
    aligned = onnx.load(tmp_path / "aligned.onnx")
    assert conv_widths(aligned) == [16, 16, 32]
    assert {n.op_type for n in aligned.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv", "Add"}


def test_fused_int8_kernels_of_this_cpu_are_reported(context, float_file, inputs, tmp_path):
    """How this CPU's fused INT8 kernels treat the two widths depends on the kernels, so this test
    says per kind what ONNX Runtime does. Its AVX2 u8s8 convolution (AMD EPYC Zen 3) and its
    AVX-512 VNNI one (AMD EPYC Zen 4) compute the same integers as the unfused graph at any width:
    no difference at all. On an Intel Xeon with AMX it picks AMX kernels, which have been seen to
    answer differently at the padded right border of a convolution
    whose channel count leaves a partial block (10 in, 21 out); the report then says how far each
    file is from its own graph's answers instead of hiding it."""
    int8 = runner("quantize_int8")(QuantizeInt8(calibration_images=32), Artefact(OddWidths(), onnx=float_file),
                                   context).onnx
    report = align_file(int8, tmp_path / "aligned.onnx", 16, inputs, bound=1e-6)
    if "amx_int8" not in int8_dot_products():
        assert report.deployed_diff == report.departure_before == report.departure_after == 0.0
        assert report.same_on_this_cpu() and "fused" not in report.summary()
    elif not report.same_on_this_cpu():
        assert report.deployed_diff > 0 and "original departs from its own graph's answers" in report.summary()
    assert {"max_abs_diff", "deployed_max_abs_diff", "departure_before", "departure_after"} <= set(report.as_record())


def test_quantized_biases_carry_no_zero_points(context, float_file, inputs):
    """drop_zero_bias_points: an int32 bias's zero point is implied, so the file stores none."""
    int8 = runner("quantize_int8")(QuantizeInt8(calibration_images=32), Artefact(OddWidths(), onnx=float_file),
                                   context).onnx
    model = onnx.load(int8)
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    bias_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int32]
    assert len(bias_dq) == 4 and all(len(n.input) == 2 for n in bias_dq)
    assert np.abs(answers(int8, inputs) - answers(float_file, inputs)).max() < 0.5


def test_grouped_convolution_keeps_its_width(tmp_path):
    """The residual stream feeds a depthwise convolution, which this module does not widen: that
    group keeps 10 channels while the stride-2 stage, which feeds only the classifier, is widened."""
    torch.manual_seed(0)
    path = export_onnx(OddWidths(depthwise=True).eval(), tmp_path / "dw.onnx", SHAPE)
    result = align_channels(onnx.load(path), 8)
    assert result.widths == {21: 24}
    assert conv_widths(result.model) == [10, 10, 24]


class ConstantOffset(nn.Module):
    """A per-channel constant added to a conv's output: it has the conv's width and no filters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, padding=1)
        self.offset = nn.Parameter(torch.randn(1, 10, 1, 1))
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x) + self.offset)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_per_channel_constant_keeps_its_width(tmp_path, inputs):
    path = export_onnx(ConstantOffset().eval(), tmp_path / "offset.onnx", SHAPE)
    result = align_channels(onnx.load(path), 8)
    assert result.widths == {} and conv_widths(result.model) == [10]


def test_max_width_leaves_wider_layers_alone(float_file):
    result = align_channels(onnx.load(float_file), 8, max_width=16)
    assert result.widths == {10: 16} and conv_widths(result.model) == [16, 16, 21]


def test_aligned_widths_are_left_alone(float_file):
    assert align_channels(onnx.load(float_file), 1).widths == {}
    with pytest.raises(ValueError, match="at least 1"):
        align_channels(onnx.load(float_file), 0)


def test_a_widened_file_that_answers_differently_is_refused(float_file, inputs, tmp_path):
    """The bound is real: an impossible one (negative) makes align_file refuse the rewrite."""
    with pytest.raises(AlignmentMismatch, match="differs from"):
        align_file(float_file, tmp_path / "aligned.onnx", 8, inputs, bound=-1.0)


def model_directory(root, onnx_file) -> ModelDir:
    manifest = Manifest(name=root.name, labels=[f"c{i}" for i in range(10)],
                        input=TensorSpec(name="input", dtype="float32", shape=SHAPE), output=TensorSpec(name="logits", dtype="float32", shape=(10,)),
                        preprocessing=Preprocessing(input_size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
                        metrics={"top1": 0.5, "bytes": onnx_file.stat().st_size},
                        created={"command": "robot-compress compress recipe.yaml --out " + str(root)})
    return write_model_dir(root, manifest, onnx_file)


def align_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_compress.cli", "align-channels", *args],
                          capture_output=True, text=True, timeout=300)


def test_align_command_rewrites_a_model_directory_and_records_it(float_file, inputs, tmp_path):
    model = model_directory(tmp_path / "odd_model", float_file)
    before = answers(model.onnx_path, inputs)
    (model.root / "report.md").write_text("# odd_model\n\n| artefact | top-1 |\n")
    done = align_command(str(model.root), "--multiple", "8", "--latency-runs", "20")
    assert done.returncode == 0, done.stderr
    assert "10->16, 21->24" in done.stdout
    rewritten = ModelDir.load(model.root)  # the sha256 in the manifest matches the new file
    record = rewritten.manifest.created["post_processing"][-1]
    assert record["command"].startswith("robot-compress align-channels") and record["widths"] == {"10": 16, "21": 24}
    assert rewritten.manifest.metrics["bytes"] == rewritten.onnx_path.stat().st_size == record["bytes_after"]
    assert rewritten.manifest.metrics["top1"] == 0.5 and rewritten.manifest.created["command"].startswith(
        "robot-compress compress")
    assert set(record["latency_ms_after"]) == {"1t", "2t"}
    np.testing.assert_allclose(answers(rewritten.onnx_path, inputs), before, atol=1e-4)
    report = (model.root / "report.md").read_text()
    assert report.startswith("# odd_model") and "## Post-processing" in report and "10->16, 21->24" in report
    again = align_command(str(model.root), "--latency-runs", "20")
    assert again.returncode == 0 and "nothing written" in again.stdout
    assert len(json.loads((model.root / "manifest.json").read_text())["created"]["post_processing"]) == 1


def test_align_command_auto_times_the_candidates_and_keeps_one(float_file, inputs, tmp_path):
    """Which candidate wins depends on this machine's timing; that every candidate was timed, and
    that the choice is recorded (or nothing written), does not."""
    model = model_directory(tmp_path / "odd_model", float_file)
    before = answers(model.onnx_path, inputs)
    done = align_command(str(model.root), "--auto", "--latency-runs", "20")
    assert done.returncode == 0, done.stderr
    assert "as it is:" in done.stdout and "--multiple 8 --max-width 10 -> {'10': 16}" in done.stdout
    assert "--multiple 16 --max-width 21 -> {'10': 16, '21': 32}" in done.stdout  # 'all' gives the same: not timed twice
    post = ModelDir.load(model.root).manifest.created.get("post_processing")
    if post:
        assert len(post[0]["auto_trials"]) == 4 and {t["multiple"] for t in post[0]["auto_trials"]} == {None, 8, 16}
    else:  # no trial was 5% faster, or the second measurement did not confirm it
        assert "nothing written" in done.stdout
    np.testing.assert_allclose(answers(model.onnx_path, inputs), before, atol=1e-4)


def test_align_command_names_bad_input(tmp_path):
    missing = align_command(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = align_command(str(tmp_path), "--multiple", "1")
    assert bad.returncode == 2 and "align-channels: field 'multiple' must be in [2, 64], got 1" in bad.stderr


def test_auto_choice_rule():
    """A smaller file within 3% of the fastest wins; nothing under a 5% gain over the file as it is."""
    from robot_compress.compress.align_command import choose_layout

    as_is = {"multiple": None, "max_width": None, "bytes": 100, "p50_ms": 1.0}
    small = {"multiple": 8, "max_width": 20, "bytes": 120, "p50_ms": 0.90}
    big = {"multiple": 8, "max_width": None, "bytes": 140, "p50_ms": 0.89}
    assert choose_layout([as_is, small, big]) == (8, 20)
    assert choose_layout([as_is, {**small, "p50_ms": 0.97}]) is None
    assert choose_layout([{**as_is, "p50_ms": 0.8}, small, big]) is None
