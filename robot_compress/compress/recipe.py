"""A compression recipe: schema models (runtime/schema.py) loaded from YAML and validated once,
before any training.

Every problem (unknown key, wrong type, impossible ratio, missing file, unknown model or stage)
raises RecipeError naming the file, the field path and what it accepts, so a bad recipe fails in
a second, not after an hour. Relative paths are relative to the working directory (the
repository root in the docs).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from robot_compress.runtime.schema import Schema, choices, default_of, field_range, setting, validate

CIFAR10_MEAN = (0.485, 0.456, 0.406)
CIFAR10_STD = (0.229, 0.224, 0.225)
YOLOX_DETECTORS = ("yolox_nano",)
DETECTION_STAGES = ("prune_structured", "distill", "export_onnx", "quantize_int8")
TORCHVISION_CLASSIFIERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small",
                           "mobilenet_v3_large", "convnext_tiny", "efficientnet_b0", "regnet_y_400mf")
POSITIVE = {"low": 0, "low_open": True}
FRACTION = {"low": 0, "high": 1, "low_open": True, "high_open": True}  # 0.5 removes half


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the file and the field."""


# ---------------------------------------------------------------- models and data

class ModelSource(Schema):
    """Where a network comes from, for the teacher and for an optional separate student.
    kind: cifar_resnet (arch + akamaster checkpoint), torchvision (name, pretrained), file
    (a whole model saved with torch.save, or TorchScript) or yolox (a detector: arch yolox_nano,
    checkpoint the YOLOX ONNX export whose weights it is rebuilt from)."""

    model_config = ConfigDict(validate_default=True)  # an arch or path left out is named too

    kind: Literal["cifar_resnet", "torchvision", "file", "yolox"] = setting(
        description="where the network comes from")
    arch: str = setting("", "cifar_resnet: resnet20..resnet1202; torchvision: a classifier name; yolox: yolox_nano")
    checkpoint: str | None = setting(None, "cifar_resnet: weights file (None: random init); yolox: the ONNX export")
    pretrained: bool = setting(False, "torchvision: ImageNet weights")
    path: str = setting("", "file: the saved model")
    num_classes: int = setting(10, "classes of the classifier", 2)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str, info: ValidationInfo) -> str:
        from robot_compress.compress.cifar_resnet import DEPTHS

        kind = info.data.get("kind")
        if kind == "cifar_resnet" and arch not in DEPTHS:
            raise ValueError(f"unknown CIFAR ResNet {arch!r}; choose one of {sorted(DEPTHS)}")
        if kind == "torchvision" and arch not in TORCHVISION_CLASSIFIERS:
            raise ValueError(f"unknown torchvision classifier {arch!r}; choose one of {list(TORCHVISION_CLASSIFIERS)}")
        if kind == "yolox" and arch not in YOLOX_DETECTORS:
            raise ValueError(f"unknown YOLOX detector {arch!r}; choose one of {list(YOLOX_DETECTORS)}")
        return arch

    @field_validator("checkpoint", "path")
    @classmethod
    def _existing_file(cls, path: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        needed = kind == "file" if info.field_name == "path" else kind in ("cifar_resnet", "yolox")
        if kind == "yolox" and info.field_name == "checkpoint" and path is None:
            raise ValueError("yolox needs the ONNX export to rebuild the detector from, e.g. "
                             "../shared/data/weights/yolox_nano-e8af0749.onnx")
        if needed and path is not None and (not path or not Path(path).is_file()):
            raise ValueError(f"file {path!r} does not exist")
        return path

    @property
    def task(self) -> str:
        return "detection" if self.kind == "yolox" else "classification"


class DataConfig(Schema):
    """Training images (npz, CIFAR-10 python batches dir or ImageFolder), a seeded validation split
    taken off them, and a separate evaluation set for the reported accuracies."""

    train: str = setting(description="training images: .npz, CIFAR-10 batches directory or ImageFolder; a COCO "
                                     "folder (images/ + instances.json) for a detector")
    eval: str = setting(description="evaluation images, same forms (a detector: a COCO folder, scored with mAP)")
    val_size: int = setting(5000, "training images held out for validation", **POSITIVE)
    train_limit: int | None = setting(None, "use at most this many training images", **POSITIVE)
    eval_limit: int | None = setting(None, "use at most this many evaluation images", **POSITIVE)
    batch_size: int = setting(128, "training batch size", **POSITIVE)
    input_size: tuple[int, int] = setting((32, 32), "(height, width) of the model input", 1, 4096)
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = setting(CIFAR10_STD, "per-channel std", **POSITIVE)
    augment: bool = setting(True, "random crop and flip while training")

    @field_validator("train", "eval")
    @classmethod
    def _exists(cls, path: str) -> str:
        if not Path(path).exists():
            raise ValueError(f"{path} does not exist (an .npz file, a CIFAR-10 batches directory or an "
                             f"ImageFolder tree)")
        return path

    @model_validator(mode="after")
    def _validation_fits(self) -> DataConfig:
        if self.train_limit is not None and self.val_size >= self.train_limit:
            raise ValueError(f"val_size ({self.val_size}) must be smaller than train_limit ({self.train_limit})")
        return self


class MetricsConfig(Schema):
    """How artefacts are measured (latency: ONNX Runtime CPU, batch 1)."""

    latency_threads: tuple[int, ...] = setting((1, 2), "ONNX Runtime thread counts to time", 1, 1024)
    latency_warmup: int = setting(20, "untimed runs first", 0)
    latency_runs: int = setting(200, "timed runs", **POSITIVE)

    @field_validator("latency_threads")
    @classmethod
    def _not_empty(cls, threads: tuple[int, ...]) -> tuple[int, ...]:
        if not threads:
            raise ValueError("must be a non-empty list of positive integers")
        return threads


# ---------------------------------------------------------------- stages

class StageConfig(Schema):
    """A stage's parameters; `stage` names it (the tag of the recipe's `stages` items)."""

    stage: str

    @property
    def name(self) -> str:
        return self.stage

    @property
    def produces_onnx(self) -> bool:
        return self.stage in ONNX_STAGES


class TrainConfig(Schema):
    """Shared by every stage that trains: SGD with Nesterov momentum (or AdamW) and a cosine schedule."""

    epochs: int = setting(0, "training epochs", 0)
    optimizer: Literal["sgd", "adamw"] = setting(
        "sgd", "sgd (Nesterov momentum) or adamw (per-weight step sizes: faster on a pruned detector, whose "
        "layers' gradient scales differ by orders of magnitude)")
    lr: float = setting(0.01, "learning rate", **POSITIVE)
    weight_decay: float = setting(5e-4, "weight decay (decoupled for adamw)", 0)
    momentum: float = setting(0.9, "SGD momentum (sgd only)", 0, 1, high_open=True)
    temperature: float = setting(4.0, "distillation temperature", **POSITIVE)
    alpha: float = setting(0.9, "weight of the distillation loss (0: plain fine-tuning)", 0, 1)
    feature_weight: float = setting(0.0, "weight of the feature-matching loss", 0)
    # bf16 autocast: about 1.8x faster training on CPUs with AMX (Sapphire Rapids) and on GPUs;
    # master weights stay float32, so the exported model is unchanged in kind.
    precision: Literal["fp32", "bf16"] = setting("fp32", "training precision (bf16: autocast)")
    batchnorm: Literal["train", "frozen"] = setting(
        "train", "batch norms during training: train (batch statistics, running averages updated) or frozen "
        "(the running statistics the stage starts with; only their scale and shift train; pair it with adamw: "
        "a channel with a tiny running variance makes SGD's steps on its weights huge)")


class PruneStructured(StageConfig, TrainConfig):
    """Channel pruning with torch-pruning's dependency graph to a parameter or MAC reduction,
    in `steps` rounds with `epochs` of (distilled) fine-tuning after each round."""

    stage: Literal["prune_structured"] = "prune_structured"
    ratio: float = setting(0.5, "fraction of parameters (or MACs) to remove", **FRACTION)
    target: Literal["params", "macs"] = setting("params", "what ratio counts")
    importance: Literal["l1", "l2", "bn_scale", "activation", "contribution"] = setting(
        "l2", "channel importance: weight magnitude (l1, l2), batch-norm scale, or, detectors only, from "
        "activations on training images: mean |activation| of the channel, or contribution (its std x the "
        "folded weights that read it: what removing it changes once batch-norm statistics are re-estimated)")
    scope: Literal["global", "uniform"] = setting("uniform", "one ratio per layer or one ranking overall")
    steps: int = setting(1, "pruning rounds", **POSITIVE)
    max_layer_ratio: float = setting(0.9, "at most this fraction of one layer's channels", **FRACTION)
    round_to: int | None = setting(None, "keep channel counts multiples of this (CPU kernels favour 8)", **POSITIVE)
    relative_to: Literal["input", "teacher"] = setting(
        "input", "what ratio is a fraction of: this stage's input, or the teacher (after prune_depth, say)")
    part_ratios: dict[str, float] = setting(
        {}, "fixed channel ratios for named parts: {module name: ratio in [0, 1)}, a module as named by "
        "torch (backbone.backbone.dark2, head.stems.0) and everything inside it; the rest gets the channel "
        "ratio that makes the whole cut reach ratio")

    @field_validator("part_ratios")
    @classmethod
    def _part_ratios_in_range(cls, part_ratios: dict[str, float]) -> dict[str, float]:
        wrong = {name: value for name, value in part_ratios.items() if not 0 <= value < 1}
        if wrong:
            raise ValueError(f"channel ratios must be in [0, 1), got {wrong}")
        return part_ratios


class PruneDepth(StageConfig):
    """Remove `ratio` of the removable residual blocks, the one that changes the output least
    first (fewer layers: what makes a small model fast at batch 1 on a CPU)."""

    stage: Literal["prune_depth"] = "prune_depth"
    ratio: float = setting(0.5, "fraction of removable blocks to remove", **FRACTION)
    calibration_images: int = setting(512, "images that rank the blocks", **POSITIVE)


class PruneUnstructured(StageConfig, TrainConfig):
    """Global magnitude pruning of conv/linear weights to a sparsity, optional masked fine-tuning,
    then made permanent (zeros in dense tensors: only the compressed file shrinks)."""

    stage: Literal["prune_unstructured"] = "prune_unstructured"
    sparsity: float = setting(0.5, "fraction of weights set to zero", **FRACTION)


class Distill(StageConfig, TrainConfig):
    """Hinton KD under the recipe's teacher; alpha 0 is plain fine-tuning (the ablation)."""

    stage: Literal["distill"] = "distill"
    epochs: int = setting(10, "training epochs", **POSITIVE)


class LowRank(StageConfig):
    """SVD factorisation of conv (k x k -> k x k to rank r, then 1x1) and linear layers."""

    stage: Literal["low_rank"] = "low_rank"
    rank_ratio: float | None = setting(None, "rank kept, as a fraction of the full rank", **FRACTION)
    energy: float | None = setting(None, "rank kept: the smallest with this fraction of the energy", **FRACTION)
    min_params: int = setting(2048, "layers with fewer weights are left alone", 0)

    @model_validator(mode="after")
    def _one_target(self) -> LowRank:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("give exactly one of rank_ratio or energy")
        return self


class WeightShare(StageConfig):
    """Deep Compression k-means: each layer's weights take one of 2**bits shared values."""

    stage: Literal["weight_share"] = "weight_share"
    bits: int = setting(4, "2**bits shared values per layer", 1, 8)
    iterations: int = setting(30, "k-means iterations", **POSITIVE)


class ExportOnnx(StageConfig):
    """ONNX opset 17 with a dynamic batch, checked against PyTorch on real images."""

    stage: Literal["export_onnx"] = "export_onnx"
    check_images: int = setting(64, "images compared with PyTorch", **POSITIVE)
    max_abs_diff: float = setting(1e-3, "largest logit difference for logits within +-1, scaled by the "
                                  "largest |logit| above (logit_tolerance)", **POSITIVE)


class QuantizeInt8(StageConfig):
    """ONNX Runtime INT8: static QDQ (per-channel weights, calibrated on training images), or
    dynamic for MatMul/Gemm only (dynamic quantization slows convolutions down)."""

    stage: Literal["quantize_int8"] = "quantize_int8"
    mode: Literal["static", "dynamic"] = setting("static", "static QDQ or dynamic MatMul/Gemm")
    per_channel: bool = setting(True, "per-channel weight scales")
    calibration_images: int = setting(512, "training images for the activation ranges", **POSITIVE)
    calibrate_method: Literal["minmax", "entropy", "percentile"] = setting("minmax", "activation range method")
    percentile: float = setting(99.99, "with calibrate_method percentile: the activation range kept", 50, 100,
                                low_open=True)
    # 7-bit weights: x86 CPUs with AVX2 but no VNNI multiply uint8 x int8 pairs into saturating int16,
    # so full 8-bit weights give different (worse) answers there than on VNNI or ARM CPUs.
    reduce_range: bool = setting(True, "7-bit weights (the same answers on AVX2 CPUs without VNNI)")


class AlignChannels(StageConfig):
    """Round pruned channel counts up to a multiple with zero filters (the last stage, on the final
    ONNX file): the same answers, faster kernels on CPUs that work in 8- or 16-channel blocks, more
    bytes. Checked against the file before it on validation images."""

    stage: Literal["align_channels"] = "align_channels"
    multiple: int = setting(8, "channel counts rounded up to a multiple of this", 2, 64)
    max_width: int | None = setting(None, "widen only layers of at most this many channels (None: all)", **POSITIVE)
    check_images: int = setting(64, "images compared with the file before", **POSITIVE)
    max_abs_diff: float = setting(1e-3, "as in export_onnx: scaled by the largest |logit| above 1", **POSITIVE)


STAGE_TYPES: dict[str, type[StageConfig]] = {
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
AnyStage = Annotated[Union[tuple(STAGE_TYPES.values())], Field(discriminator="stage")]  # noqa: UP007


def _check_detection_labels(where: str, alpha: float, data) -> None:
    """A detector stage with a label loss needs fully labelled images among the training ones."""
    from robot_compress.compress.detection.data import FULL_LABEL_STATUSES, coco_entries, usable_for_labels

    if not (Path(data.train) / "instances.json").is_file():
        return  # the folder check names it
    entries = coco_entries(data.train)[:data.train_limit]
    if not any(usable_for_labels(e.get("label_status")) for e in entries):
        found = sorted({str(e.get("label_status")) for e in entries})
        raise ValueError(f"{where}: {alpha} mixes in the YOLOX label loss, but data.train ({data.train}) has no "
                         f"fully labelled image (label_status {list(FULL_LABEL_STATUSES)}; found {found}); "
                         f"set alpha: 1.0 for label-free distillation")


class Recipe(Schema):
    name: str = setting(description="the recipe's name (no '/')")
    seed: int = setting(0, "seeds data split, initialisation and training")
    teacher: ModelSource = setting(description="the network to compress (and to learn from)")
    # the network the stages start from; None: a copy of the teacher (prune the teacher itself)
    student: ModelSource | None = setting(None, "the network the stages start from (default: the teacher)")
    data: DataConfig = setting(description="training and evaluation images")
    stages: tuple[AnyStage, ...] = setting(description="the stages, in order")
    metrics: MetricsConfig = setting(default_factory=MetricsConfig, description="how artefacts are measured")
    _source: dict[str, Any] = PrivateAttr(default_factory=dict)  # the parsed YAML, for the manifest

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not name or "/" in name:
            raise ValueError(f"must be a non-empty name without '/', got {name!r}")
        return name

    @field_validator("stages")
    @classmethod
    def _ordered(cls, stages: tuple[StageConfig, ...]) -> tuple[StageConfig, ...]:
        """Torch stages first, then export_onnx, then quantize_int8 (it works on the ONNX file), and
        align_channels last (it widens the final file); export_onnx is added when missing."""
        if not stages:
            raise ValueError("must list at least one stage")
        exported = False
        for i, stage in enumerate(stages):
            if stage.name in ("quantize_int8", "align_channels") and not exported:
                raise ValueError(f"item [{i}]: {stage.name} needs an export_onnx stage before it")
            if stage.name == "align_channels" and i != len(stages) - 1:
                raise ValueError(f"item [{i}]: align_channels must be the last stage (it widens the final "
                                 f"ONNX file; quantizing zero filters would give them zero scales)")
            if not stage.produces_onnx and exported:
                raise ValueError(f"item [{i}]: {stage.name} works on the PyTorch model and must come before "
                                 f"export_onnx")
            if stage.name == "export_onnx":
                if exported:
                    raise ValueError(f"item [{i}]: export_onnx appears twice")
                exported = True
        return stages if stages[-1].produces_onnx else (*stages, ExportOnnx())

    @model_validator(mode="after")
    def _fits_the_task(self) -> Recipe:
        """A detector gets only the stages that know its graph, label-free distillation, COCO data."""
        if self.teacher.task != "detection":
            return self
        if self.student is not None:
            raise ValueError("student: a detector is compressed from its teacher (prune_structured); a separate "
                             "student network is not supported for detection")
        for i, stage in enumerate(self.stages):
            where = f"stages[{i}] ({stage.name})"
            if stage.name not in DETECTION_STAGES:
                raise ValueError(f"{where}: not available for a detector; choose from {list(DETECTION_STAGES)}")
            if getattr(stage, "epochs", 0) and stage.temperature != TrainConfig().temperature:
                raise ValueError(f"{where}: a detector's distillation has no temperature (it matches sigmoid "
                                 f"outputs); leave temperature unset")
            if getattr(stage, "epochs", 0) and stage.alpha < 1.0:
                _check_detection_labels(f"{where}.alpha", stage.alpha, self.data)
            if stage.name == "quantize_int8" and stage.mode != "static":
                raise ValueError(f"{where}: a detector is quantized static (QDQ) only; set mode: static")
        height, width = self.data.input_size
        if height != width or height % 32:
            raise ValueError(f"data.input_size: a detector needs a square size that is a multiple of 32, got "
                             f"{[height, width]}")
        if "val_dev" in Path(self.data.train).parts:
            raise ValueError(f"data.train: {self.data.train} is the evaluation split; train on coco/train")
        for key in ("train", "eval"):
            folder = Path(getattr(self.data, key))
            if not (folder / "instances.json").is_file() or not (folder / "images").is_dir():
                raise ValueError(f"data.{key}: a detector needs a COCO folder (images/ and instances.json), "
                                 f"got {folder}")
        return self

    @property
    def task(self) -> str:
        """classification or detection, from the teacher's kind."""
        return self.teacher.task

    @property
    def source(self) -> dict[str, Any]:
        return self._source

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
    recipe = validate(Recipe, data, where, RecipeError)
    recipe._source = json.loads(json.dumps(data))
    return recipe


def reference() -> str:
    """Every recipe key with its default and choices, generated from the schema above (so it
    cannot go stale): the epilog of `robot-compress compress --help`."""
    def key(name: str, info: Any) -> str:
        accepted = "|".join(map(str, choices(info)))
        if not info.is_required():
            limits = field_range(info)
            return f"{name}={default_of(info)!r}" + (f" ({accepted})" if accepted else "") + (
                f" in {limits}" if limits else "")
        return f"{name} ({accepted or getattr(info.annotation, '__name__', info.annotation)}, required)"

    def keys(cls: type[Schema], indent: str) -> str:
        text = ", ".join(key(name, info) for name, info in cls.model_fields.items() if name != "stage")
        return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)

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
