"""A compression recipe: typed dataclasses loaded from YAML and validated once, before any training.

Every problem (unknown key, wrong type, impossible ratio, missing file, unknown model or stage)
raises RecipeError naming the field, so a bad recipe fails in a second, not after an hour.
Relative paths are relative to the working directory (the repository root in the docs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CIFAR10_MEAN = (0.485, 0.456, 0.406)
CIFAR10_STD = (0.229, 0.224, 0.225)
TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
                           "mobilenet_v3_large", "convnext_tiny", "efficientnet_b0", "regnet_y_400mf")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the field."""


# ---------------------------------------------------------------- models and data

@dataclass(frozen=True)
class ModelSource:
    """Where a network comes from, for the teacher and for an optional separate student.
    kind: cifar_resnet (arch + akamaster checkpoint), torchvision (name, pretrained) or file
    (a whole model saved with torch.save, or TorchScript)."""

    kind: Literal["cifar_resnet", "torchvision", "file"]
    arch: str = ""
    checkpoint: str | None = None
    pretrained: bool = False
    path: str = ""
    num_classes: int = 10

    def validate(self, where: str) -> None:
        from robot_compress.compress.cifar_resnet import DEPTHS

        if self.num_classes < 2:
            raise RecipeError(f"{where}.num_classes must be >= 2, got {self.num_classes}")
        if self.kind == "cifar_resnet":
            if self.arch not in DEPTHS:
                raise RecipeError(f"{where}.arch: unknown CIFAR ResNet {self.arch!r}; choose one of {sorted(DEPTHS)}")
            if self.checkpoint is not None:
                _existing_file(self.checkpoint, f"{where}.checkpoint")
        elif self.kind == "torchvision":
            if self.arch not in TORCHVISION_CLASSIFIERS:
                raise RecipeError(f"{where}.arch: unknown torchvision classifier {self.arch!r}; choose one of "
                                  f"{list(TORCHVISION_CLASSIFIERS)}")
        else:
            _existing_file(self.path, f"{where}.path")


@dataclass(frozen=True)
class DataConfig:
    """Training images (npz, CIFAR-10 python batches dir or ImageFolder), a seeded validation split
    taken off them, and a separate evaluation set for the reported accuracies."""

    train: str
    eval: str
    val_size: int = 5000
    train_limit: int | None = None
    eval_limit: int | None = None
    batch_size: int = 128
    input_size: tuple[int, int] = (32, 32)
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    augment: bool = True

    def validate(self, where: str) -> None:
        for key in ("train", "eval"):
            path = Path(getattr(self, key))
            if not path.exists():
                raise RecipeError(f"{where}.{key}: {path} does not exist (an .npz file, a CIFAR-10 "
                                  f"batches directory or an ImageFolder tree)")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.val_size, f"{where}.val_size")
        for key in ("train_limit", "eval_limit"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"{where}.{key}")
        if self.train_limit is not None and self.val_size >= self.train_limit:
            raise RecipeError(f"{where}.val_size ({self.val_size}) must be smaller than train_limit "
                              f"({self.train_limit})")
        if min(self.input_size) < 1 or min(self.std) <= 0:
            raise RecipeError(f"{where}: input_size and std must be positive")


@dataclass(frozen=True)
class MetricsConfig:
    """How artefacts are measured (latency: ONNX Runtime CPU, batch 1)."""

    latency_threads: tuple[int, ...] = (1, 2)
    latency_warmup: int = 20
    latency_runs: int = 200

    def validate(self, where: str) -> None:
        if not self.latency_threads or min(self.latency_threads) < 1:
            raise RecipeError(f"{where}.latency_threads must be a non-empty list of positive integers")
        _positive(self.latency_runs, f"{where}.latency_runs")


# ---------------------------------------------------------------- stages

@dataclass(frozen=True)
class TrainConfig:
    """Shared by every stage that trains: SGD with Nesterov momentum and a cosine schedule."""

    epochs: int = 0
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    temperature: float = 4.0
    alpha: float = 0.9
    feature_weight: float = 0.0
    # bf16 autocast: about 1.8x faster training on CPUs with AMX (Sapphire Rapids) and on GPUs;
    # master weights stay float32, so the exported model is unchanged in kind.
    precision: Literal["fp32", "bf16"] = "fp32"

    def validate(self, where: str) -> None:
        if self.epochs < 0:
            raise RecipeError(f"{where}.epochs must be >= 0, got {self.epochs}")
        _positive(self.lr, f"{where}.lr")
        _positive(self.temperature, f"{where}.temperature")
        _unit(self.alpha, f"{where}.alpha", closed=True)
        if self.weight_decay < 0 or self.feature_weight < 0 or not 0 <= self.momentum < 1:
            raise RecipeError(f"{where}: weight_decay and feature_weight must be >= 0, momentum in [0, 1)")


@dataclass(frozen=True)
class PruneStructured(TrainConfig):
    """Channel pruning with torch-pruning's dependency graph to a parameter or MAC reduction,
    in `steps` rounds with `epochs` of (distilled) fine-tuning after each round."""

    ratio: float = 0.5
    target: Literal["params", "macs"] = "params"
    importance: Literal["l1", "l2", "bn_scale"] = "l2"
    scope: Literal["global", "uniform"] = "uniform"
    steps: int = 1
    max_layer_ratio: float = 0.9
    round_to: int | None = None  # keep channel counts multiples of this (CPU kernels favour 8)
    # what `ratio` is a fraction of: this stage's input, or the teacher (after prune_depth, say)
    relative_to: Literal["input", "teacher"] = "input"

    def validate(self, where: str) -> None:
        super().validate(where)
        _unit(self.ratio, f"{where}.ratio")
        if self.round_to is not None:
            _positive(self.round_to, f"{where}.round_to")
        _unit(self.max_layer_ratio, f"{where}.max_layer_ratio")
        _positive(self.steps, f"{where}.steps")


@dataclass(frozen=True)
class PruneDepth:
    """Remove `ratio` of the removable residual blocks, the one that changes the output least
    first (fewer layers: what makes a small model fast at batch 1 on a CPU)."""

    ratio: float = 0.5
    calibration_images: int = 512

    def validate(self, where: str) -> None:
        _unit(self.ratio, f"{where}.ratio")
        _positive(self.calibration_images, f"{where}.calibration_images")


@dataclass(frozen=True)
class PruneUnstructured(TrainConfig):
    """Global magnitude pruning of conv/linear weights to a sparsity, optional masked fine-tuning,
    then made permanent (zeros in dense tensors: only the compressed file shrinks)."""

    sparsity: float = 0.5

    def validate(self, where: str) -> None:
        super().validate(where)
        _unit(self.sparsity, f"{where}.sparsity")


@dataclass(frozen=True)
class Distill(TrainConfig):
    """Hinton KD under the recipe's teacher; alpha 0 is plain fine-tuning (the ablation)."""

    epochs: int = 10

    def validate(self, where: str) -> None:
        super().validate(where)
        _positive(self.epochs, f"{where}.epochs")


@dataclass(frozen=True)
class LowRank:
    """SVD factorisation of conv (k x k -> k x k to rank r, then 1x1) and linear layers."""

    rank_ratio: float | None = None
    energy: float | None = None
    min_params: int = 2048

    def validate(self, where: str) -> None:
        if (self.rank_ratio is None) == (self.energy is None):
            raise RecipeError(f"{where}: give exactly one of rank_ratio or energy")
        for key in ("rank_ratio", "energy"):
            if getattr(self, key) is not None:
                _unit(getattr(self, key), f"{where}.{key}")


@dataclass(frozen=True)
class WeightShare:
    """Deep Compression k-means: each layer's weights take one of 2**bits shared values."""

    bits: int = 4
    iterations: int = 30

    def validate(self, where: str) -> None:
        if not 1 <= self.bits <= 8:
            raise RecipeError(f"{where}.bits must be in 1..8, got {self.bits}")
        _positive(self.iterations, f"{where}.iterations")


@dataclass(frozen=True)
class ExportOnnx:
    """ONNX opset 17 with a dynamic batch, checked against PyTorch on real images."""

    check_images: int = 64
    max_abs_diff: float = 1e-3  # for logits within +-1, scaled by the largest |logit| above (logit_tolerance)

    def validate(self, where: str) -> None:
        _positive(self.check_images, f"{where}.check_images")
        _positive(self.max_abs_diff, f"{where}.max_abs_diff")


@dataclass(frozen=True)
class QuantizeInt8:
    """ONNX Runtime INT8: static QDQ (per-channel weights, calibrated on training images), or
    dynamic for MatMul/Gemm only (dynamic quantization slows convolutions down)."""

    mode: Literal["static", "dynamic"] = "static"
    per_channel: bool = True
    calibration_images: int = 512
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = 99.99  # with calibrate_method percentile: the activation range kept
    # 7-bit weights: x86 CPUs with AVX2 but no VNNI multiply uint8 x int8 pairs into saturating int16,
    # so full 8-bit weights give different (worse) answers there than on VNNI or ARM CPUs.
    reduce_range: bool = True

    def validate(self, where: str) -> None:
        _positive(self.calibration_images, f"{where}.calibration_images")
        if not 50 < self.percentile <= 100:
            raise RecipeError(f"{where}.percentile must be in (50, 100], got {self.percentile}")


@dataclass(frozen=True)
class AlignChannels:
    """Round pruned channel counts up to a multiple with zero filters (the last stage, on the final
    ONNX file): the same answers, faster kernels on CPUs that work in 8- or 16-channel blocks, more
    bytes. Checked against the file before it on validation images."""

    multiple: int = 8
    max_width: int | None = None  # widen only layers of at most this many channels (None: all)
    check_images: int = 64
    max_abs_diff: float = 1e-3  # as in ExportOnnx: scaled by the largest |logit| above 1

    def validate(self, where: str) -> None:
        if not 2 <= self.multiple <= 64:
            raise RecipeError(f"{where}.multiple must be in 2..64 channels, got {self.multiple}")
        if self.max_width is not None:
            _positive(self.max_width, f"{where}.max_width")
        _positive(self.check_images, f"{where}.check_images")
        _positive(self.max_abs_diff, f"{where}.max_abs_diff")


STAGE_TYPES: dict[str, type] = {
    "prune_structured": PruneStructured,
    "prune_depth": PruneDepth,
    "prune_unstructured": PruneUnstructured,
    "distill": Distill,
    "low_rank": LowRank,
    "weight_share": WeightShare,
    "export_onnx": ExportOnnx,
    "quantize_int8": QuantizeInt8,
    "align_channels": AlignChannels,
}
ONNX_STAGES = ("export_onnx", "quantize_int8", "align_channels")


@dataclass(frozen=True)
class Stage:
    name: str
    params: Any

    @property
    def produces_onnx(self) -> bool:
        return self.name in ONNX_STAGES


@dataclass(frozen=True)
class Recipe:
    name: str
    teacher: ModelSource
    data: DataConfig
    stages: tuple[Stage, ...]
    seed: int = 0
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # the network the stages start from; None: a copy of the teacher (prune the teacher itself)
    student: ModelSource | None = None
    source: dict[str, Any] = field(default_factory=dict)  # the parsed YAML, for the manifest

    @property
    def digest(self) -> str:
        """sha256 of the recipe's content (key order and formatting do not matter)."""
        return hashlib.sha256(json.dumps(self.source, sort_keys=True).encode()).hexdigest()


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path} is not valid YAML: {exc}") from exc
    return parse_recipe(data, where=str(path))


def parse_recipe(data: Any, where: str = "recipe") -> Recipe:
    top = _expect_mapping(data, where)
    allowed = {"name", "seed", "teacher", "student", "data", "stages", "metrics"}
    _no_unknown(top, allowed, where)
    for key in ("name", "teacher", "data", "stages"):
        if key not in top:
            raise RecipeError(f"{where}: missing required key '{key}'")
    name = _check(top["name"], str, f"{where}.name")
    if not name or "/" in name:
        raise RecipeError(f"{where}.name must be a non-empty name without '/', got {name!r}")
    stages_data = _check(top["stages"], list, f"{where}.stages")
    if not stages_data:
        raise RecipeError(f"{where}.stages must list at least one stage")
    stages = tuple(_stage(item, f"{where}.stages[{i}]") for i, item in enumerate(stages_data))
    _check_order(stages, where)
    if not stages[-1].produces_onnx:
        stages += (Stage("export_onnx", ExportOnnx()),)
    return Recipe(
        name=name,
        teacher=_build(ModelSource, top["teacher"], f"{where}.teacher"),
        student=_build(ModelSource, top["student"], f"{where}.student") if "student" in top else None,
        data=_build(DataConfig, top["data"], f"{where}.data"),
        stages=stages,
        seed=_check(top.get("seed", 0), int, f"{where}.seed"),
        metrics=_build(MetricsConfig, top.get("metrics", {}), f"{where}.metrics"),
        source=json.loads(json.dumps(top)),
    )


def _stage(item: Any, where: str) -> Stage:
    item = _expect_mapping(item, where)
    if "stage" not in item:
        raise RecipeError(f"{where}: missing key 'stage' (one of {list(STAGE_TYPES)})")
    name = item["stage"]
    if name not in STAGE_TYPES:
        raise RecipeError(f"{where}: unknown stage {name!r}; choose one of {list(STAGE_TYPES)}")
    params = {k: v for k, v in item.items() if k != "stage"}
    return Stage(name, _build(STAGE_TYPES[name], params, f"{where} ({name})"))


def _check_order(stages: tuple[Stage, ...], where: str) -> None:
    """Torch stages first, then export_onnx, then quantize_int8 (it works on the ONNX file), and
    align_channels last (it widens the final file)."""
    exported = False
    for i, stage in enumerate(stages):
        if stage.name in ("quantize_int8", "align_channels") and not exported:
            raise RecipeError(f"{where}.stages[{i}]: {stage.name} needs an export_onnx stage before it")
        if stage.name == "align_channels" and i != len(stages) - 1:
            raise RecipeError(f"{where}.stages[{i}]: align_channels must be the last stage (it widens the "
                              f"final ONNX file; quantizing zero filters would give them zero scales)")
        if not stage.produces_onnx and exported:
            raise RecipeError(f"{where}.stages[{i}]: {stage.name} works on the PyTorch model and must come "
                              f"before export_onnx")
        if stage.name == "export_onnx":
            if exported:
                raise RecipeError(f"{where}.stages[{i}]: export_onnx appears twice")
            exported = True


# ---------------------------------------------------------------- typed loading

def _build(cls: type, data: Any, where: str) -> Any:
    data = _expect_mapping(data, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown(data, set(fields), where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _check(data[name], hints[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: missing required key '{name}'")
    obj = cls(**kwargs)
    obj.validate(where)
    return obj


def _check(value: Any, hint: Any, where: str) -> Any:
    """`value` as type `hint` (int, float, bool, str, Literal, X | None, list/tuple[...])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(value, inner[0], where)
    if origin is Literal:
        if value not in args:
            raise RecipeError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where} must be a list, got {type(value).__name__} {value!r:.60}")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise RecipeError(f"{where} must be a list of {len(args)} values, got {list(value)!r:.60}")
        item_type = args[0] if args else Any
        items = [_check(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
        raise RecipeError(f"{where} must be {hint.__name__}, got {type(value).__name__} {value!r:.60}")
    return value


def _expect_mapping(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a mapping, got {type(data).__name__}")
    return data


def _no_unknown(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _positive(value: float, where: str) -> None:
    if value <= 0:
        raise RecipeError(f"{where} must be > 0, got {value}")


def _unit(value: float, where: str, closed: bool = False) -> None:
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1) (a fraction: 0.5 removes half)"
        raise RecipeError(f"{where} must be in {interval}, got {value}")


def _existing_file(path: str, where: str) -> None:
    if not path or not Path(path).is_file():
        raise RecipeError(f"{where}: file {path!r} does not exist")


def reference() -> str:
    """Every recipe key with its default and choices, generated from the dataclasses above (so it
    cannot go stale): the epilog of `robot-compress compress --help`."""
    def key(f: dataclasses.Field, hint: Any) -> str:
        choices = "|".join(map(str, typing.get_args(hint))) if typing.get_origin(hint) is Literal else ""
        if f.default is not dataclasses.MISSING:
            return f"{f.name}={f.default!r}" + (f" ({choices})" if choices else "")
        if f.default_factory is not dataclasses.MISSING:
            return f"{f.name}={f.default_factory()!r}"
        return f"{f.name} ({choices or getattr(hint, '__name__', hint)}, required)"

    def keys(cls: type, indent: str) -> str:
        hints = typing.get_type_hints(cls)
        return textwrap.fill(", ".join(key(f, hints[f.name]) for f in dataclasses.fields(cls)), 100,
                             initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)

    lines = ["recipe keys (YAML), with defaults:", "  teacher:", keys(ModelSource, "      "),
             "  student: optional, the teacher's keys: the network the stages start from (default: the teacher)",
             "  data:", keys(DataConfig, "      "), "  metrics:", keys(MetricsConfig, "      "),
             "  name: required; seed: 0",
             "  stages: a list of `stage: NAME` items with that stage's keys: torch stages, then export_onnx,",
             "          then quantize_int8, then align_channels (export_onnx is added at the end when missing)"]
    for name, cls in STAGE_TYPES.items():
        lines += [textwrap.fill(f"{name}: {' '.join((cls.__doc__ or '').split())}", 100, initial_indent="  ",
                                subsequent_indent="      "), keys(cls, "      ")]
    return "\n".join(lines)
