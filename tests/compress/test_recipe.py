"""Bad recipes fail at load time with a message naming the field; nothing is trained or written."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from robot_compress.compress.recipe import RecipeError, load_recipe, parse_recipe
from tests.compress.conftest import recipe_dict


@pytest.fixture
def good(synthetic_npz) -> dict:
    return recipe_dict(*synthetic_npz, [{"stage": "prune_structured", "ratio": 0.5},
                                        {"stage": "distill", "epochs": 1}, {"stage": "export_onnx"},
                                        {"stage": "quantize_int8"}])


def test_good_recipe_parses_with_types_and_defaults(good):
    recipe = parse_recipe(good)
    assert [s.name for s in recipe.stages] == ["prune_structured", "distill", "export_onnx", "quantize_int8"]
    assert recipe.stages[0].ratio == 0.5 and recipe.stages[1].alpha == 0.9
    assert recipe.data.input_size == (16, 16)
    assert len(recipe.digest) == 64 and recipe.digest == parse_recipe(copy.deepcopy(good)).digest


def test_export_is_appended_when_missing(good):
    good["stages"] = [{"stage": "low_rank", "rank_ratio": 0.5}]
    assert [s.name for s in parse_recipe(good).stages] == ["low_rank", "export_onnx"]


def edit(recipe: dict, path: str, value) -> dict:
    recipe = copy.deepcopy(recipe)
    *parents, last = path.split(".")
    node = recipe
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return recipe


@pytest.mark.parametrize("path, value, message", [
    ("stages.0.stage", "prune_everything", "'stages[0]': unknown stage 'prune_everything'; choose one of"),
    ("teacher.arch", "resnet57", "field 'teacher.arch': unknown CIFAR ResNet 'resnet57'"),
    ("stages.0.ratio", 1.5, "'stages[0] (prune_structured).ratio' must be in (0, 1), got 1.5"),
    ("stages.0.ratio", 0.0, "ratio' must be in (0, 1), got 0.0"),
    ("stages.1.epochs", "ten", "'stages[1] (distill).epochs' must be int, got str"),
    ("stages.1.alpha", 2.0, "alpha' must be in [0, 1]"),
    ("stages.0.importance", "random", "importance' must be one of ['l1', 'l2', 'bn_scale', 'activation', 'contribution']"),
    ("stages.1.tempreature", 4, "'stages[1] (distill)': unknown key(s) ['tempreature']; allowed:"),
    ("data.train", "/nonexistent/cifar", "'data.train': /nonexistent/cifar does not exist"),
    ("data.batch_size", True, "'data.batch_size' must be int, got bool"),
    ("teacher.checkpoint", "/nonexistent.th", "file '/nonexistent.th' does not exist"),
    ("stages.3.mode", "int4", "mode' must be one of ['static', 'dynamic']"),
    ("stages.3.percentile", 10.0, "percentile' must be in (50, 100]"),
    ("stages.1.precision", "fp16", "precision' must be one of ['fp32', 'bf16']"),
    ("stages.1.optimizer", "adam", "'stages[1] (distill).optimizer' must be one of ['sgd', 'adamw']"),
    ("stages.1.batchnorm", "fixed", "batchnorm' must be one of ['train', 'frozen']"),
    ("stages.0.relative_to", "edge", "relative_to' must be one of ['input', 'teacher']"),
    ("stages.0.part_ratios", {"layer1": 1.0}, "'stages[0] (prune_structured).part_ratios': channel ratios must be in [0, 1), got {'layer1': 1.0}"),
    ("data.std", [0.2, 0.2, 0.0], "'data.std' must have every item in (0, inf)"),
    ("stages.0", {"ratio": 0.5}, "'stages[0]': missing key 'stage'"),
    ("metrics.latency_threads", [], "'metrics.latency_threads' must be a non-empty list"),
])
def test_bad_field_is_named(good, path, value, message):
    with pytest.raises(RecipeError) as error:
        parse_recipe(edit(good, path, value))
    assert message in str(error.value)


def test_quantize_before_export_is_refused(good):
    good["stages"] = [{"stage": "quantize_int8"}, {"stage": "export_onnx"}]
    with pytest.raises(RecipeError, match="quantize_int8 needs an export_onnx stage before it"):
        parse_recipe(good)


def test_align_channels_comes_last_after_export(good):
    good["stages"] = [{"stage": "export_onnx"}, {"stage": "align_channels", "multiple": 16},
                      {"stage": "quantize_int8"}]
    with pytest.raises(RecipeError, match=r"'stages': item \[1\]: align_channels must be the last stage"):
        parse_recipe(good)
    good["stages"] = [{"stage": "align_channels"}]
    with pytest.raises(RecipeError, match="align_channels needs an export_onnx stage before it"):
        parse_recipe(good)
    good["stages"] = [{"stage": "export_onnx"}, {"stage": "quantize_int8"}, {"stage": "align_channels", "multiple": 1}]
    with pytest.raises(RecipeError, match=r"\(align_channels\)\.multiple' must be in \[2, 64\], got 1"):
        parse_recipe(good)
    good["stages"][-1]["multiple"] = 16
    assert [s.name for s in parse_recipe(good).stages][-1] == "align_channels"


def test_torch_stage_after_export_is_refused(good):
    good["stages"] = [{"stage": "export_onnx"}, {"stage": "distill"}]
    with pytest.raises(RecipeError, match="distill works on the PyTorch model and must come before export_onnx"):
        parse_recipe(good)


def test_low_rank_needs_exactly_one_target(good):
    good["stages"] = [{"stage": "low_rank", "rank_ratio": 0.5, "energy": 0.9}]
    with pytest.raises(RecipeError, match="exactly one of rank_ratio or energy"):
        parse_recipe(good)


def test_unknown_torchvision_model(good):
    good["teacher"] = {"kind": "torchvision", "arch": "resnet1000"}
    with pytest.raises(RecipeError, match="unknown torchvision classifier 'resnet1000'"):
        parse_recipe(good)


def test_bad_student_is_named(good):
    good["student"] = {"kind": "cifar_resnet", "arch": "resnet19"}
    with pytest.raises(RecipeError, match=r"'student.arch': unknown CIFAR ResNet 'resnet19'"):
        parse_recipe(good)
    good["student"] = {"kind": "file", "path": "/nonexistent/student.pt"}
    with pytest.raises(RecipeError, match=r"'student.path': file '/nonexistent/student.pt' does not exist"):
        parse_recipe(good)


def test_invalid_yaml_and_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("stages: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_corrupt_checkpoint_fails_before_training(good, tmp_path):
    """Through the CLI: exit status 2, the file named, and no work directory created."""
    checkpoint = tmp_path / "corrupt.th"
    checkpoint.write_bytes(b"\x80\x02 this is not a checkpoint")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(edit(good, "teacher.checkpoint", str(checkpoint))))
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "robot_compress.cli", "compress", str(recipe),
                             "--out", str(tmp_path / "out"), "--work-dir", str(work)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "corrupt.th could not be read" in result.stderr
    assert not work.exists() and not (tmp_path / "out").exists()


def test_prune_depth_ratio_is_checked(good):
    good["stages"][0] = {"stage": "prune_depth", "ratio": 1.0}
    with pytest.raises(RecipeError, match=r"'stages\[0\] \(prune_depth\)\.ratio' must be in \(0, 1\)"):
        parse_recipe(good)


def test_compress_help_lists_every_stage_and_key(capsys):
    """The recipe reference in `compress --help` is generated from the schema: a new stage or key
    shows up there, with its range, without anyone editing docs."""
    from robot_compress.cli import main
    from robot_compress.compress.recipe import STAGE_TYPES, DataConfig, ModelSource

    with pytest.raises(SystemExit) as done:
        main(["compress", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "kind (cifar_resnet|torchvision|file|yolox, required)" in text and "student: optional" in text
    assert "ratio=0.5 in (0, 1)" in text and "multiple=8 in [2, 64]" in text
    for name, cls in [*STAGE_TYPES.items(), ("teacher", ModelSource), ("data", DataConfig)]:
        assert f"  {name}:" in text
        for key in cls.model_fields:
            assert key in text, (name, key)

