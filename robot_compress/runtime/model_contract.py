"""The model contract: one model directory, readable by this package and by Triton unchanged.

    <repository>/<name>/config.pbtxt        Triton model configuration (written from the manifest)
    <repository>/<name>/<version>/model.onnx
    <repository>/<name>/manifest.json       labels, preprocessing, tensor specs, sha256, source, metrics

The manifest is the source of truth; config.pbtxt is derived from it so a real Triton server can
serve the same directory. Everything read from disk is validated here, once, with errors that
name the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_compress.runtime.detection_contract import (
    TASKS,
    DetectionSpec,
    check_detection_manifest,
    read_detection,
)
from robot_compress.runtime.errors import ImageError, ManifestError, ModelError

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
FORMAT_VERSION = 1

CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")
INTERPOLATIONS = ("area", "linear", "nearest", "cubic")
# numpy dtype name -> Triton / KServe v2 names, for the dtypes a classifier uses.
TRITON_DTYPES = {"float32": ("TYPE_FP32", "FP32"), "float16": ("TYPE_FP16", "FP16"), "int64": ("TYPE_INT64", "INT64"),
                 "uint8": ("TYPE_UINT8", "UINT8")}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output, without the batch dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def v2_datatype(self) -> str:
        """The Open Inference Protocol v2 datatype string ("FP32", ...)."""
        return TRITON_DTYPES[self.dtype][1]

    def check_batch(self, batch: object) -> None:
        """ImageError unless `batch` is a non-empty (N, *shape) array of this dtype: a caller's bug,
        named before any backend (local or edge) sees it."""
        if not isinstance(batch, np.ndarray) or batch.dtype != np.dtype(self.dtype) \
                or batch.shape[1:] != self.shape or len(batch) == 0:
            raise ImageError(f"input batch must be {self.dtype} of shape (N, {', '.join(map(str, self.shape))}), "
                             f"got {getattr(batch, 'dtype', type(batch).__name__)} {getattr(batch, 'shape', '')}")


@dataclass(frozen=True)
class Preprocessing:
    """How a uint8 camera image becomes the model's input tensor (see runtime/preprocess.py)."""

    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0  # applied to the uint8 pixels before mean/std
    interpolation: str = "area"


@dataclass
class Manifest:
    """robot_compress's own description of a model directory (manifest.json)."""

    name: str
    labels: list[str]
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    onnx_sha256: str = ""
    version: int = 1
    task: str = "classification"
    source: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    recipe: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    created: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    detection: DetectionSpec | None = None  # task "detection" only (runtime/detection_contract.py)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if self.detection is None:
            del data["detection"]  # a classifier's manifest stays as it was
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_FILE) -> Manifest:
        """Validate a parsed manifest.json; every problem names its field."""
        r = _Reader(data, where)
        labels = r.get("labels", list)
        if not labels or not all(isinstance(x, str) for x in labels):
            raise ManifestError(f"{where}: field 'labels' must be a non-empty list of strings")
        manifest = cls(
            name=r.get("name", str),
            labels=labels,
            input=_tensor_spec(r.sub("input")),
            output=_tensor_spec(r.sub("output")),
            preprocessing=_preprocessing(r.sub("preprocessing")),
            onnx_sha256=r.get("onnx_sha256", str),
            version=r.get("version", int, default=1),
            task=r.choice("task", TASKS, default="classification"),
            source=r.get("source", dict, default={}),
            license=r.get("license", str, default=""),
            recipe=r.get("recipe", (dict, type(None)), default=None),
            metrics=r.get("metrics", dict, default={}),
            created=r.get("created", dict, default={}),
            format_version=r.get("format_version", int, default=FORMAT_VERSION),
        )
        if manifest.format_version > FORMAT_VERSION:
            raise ManifestError(f"{where}: format_version {manifest.format_version} is newer than this "
                                f"robot_compress understands ({FORMAT_VERSION}); upgrade robot_compress")
        if manifest.version < 1:
            raise ManifestError(f"{where}: field 'version' must be >= 1, got {manifest.version}")
        if manifest.task == "detection":
            manifest.detection = read_detection(r.sub("detection"), labels)
            check_detection_manifest(manifest, where)
        elif manifest.output.shape != (len(labels),):
            raise ManifestError(f"{where}: output shape {list(manifest.output.shape)} does not match "
                                f"the {len(labels)} labels")
        return manifest


class _Reader:
    """Typed field access on a JSON object, raising ManifestError that names the field path."""

    _MISSING = object()

    def __init__(self, data: Any, where: str, prefix: str = ""):
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: {prefix.rstrip('.') or 'top level'} must be an object, "
                                f"got {type(data).__name__}")
        self.data, self.where, self.prefix = data, where, prefix

    def get(self, key: str, types: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is self._MISSING:
                raise ManifestError(f"{self.where}: missing field '{self.prefix}{key}'")
            return default
        value = self.data[key]
        wanted = types if isinstance(types, tuple) else (types,)
        # bool is an int in Python; a manifest that says `true` for a number is still wrong.
        if isinstance(value, bool) and bool not in wanted or not isinstance(value, wanted):
            names = " or ".join(t.__name__ for t in wanted)
            raise ManifestError(f"{self.where}: field '{self.prefix}{key}' must be {names}, "
                                f"got {type(value).__name__} {value!r:.60}")
        return value

    def numbers(self, key: str, count: int, default: Any = _MISSING) -> tuple[float, ...]:
        value = self.get(key, list, default=default)
        if len(value) != count or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ManifestError(f"{self.where}: field '{self.prefix}{key}' must be a list of {count} numbers, "
                                f"got {value!r:.60}")
        return tuple(float(v) for v in value)

    def choice(self, key: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(key, str, default=default)
        if value not in choices:
            raise ManifestError(f"{self.where}: field '{self.prefix}{key}' must be one of {list(choices)}, "
                                f"got {value!r}")
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, dict), self.where, f"{self.prefix}{key}.")


def _tensor_spec(r: _Reader) -> TensorSpec:
    dims = r.get("shape", list)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ManifestError(f"{r.where}: field '{r.prefix}shape' must be a list of positive integers "
                            f"(without the batch dimension), got {dims!r}")
    return TensorSpec(name=r.get("name", str), dtype=r.choice("dtype", tuple(TRITON_DTYPES)), shape=tuple(dims))


def _preprocessing(r: _Reader) -> Preprocessing:
    height, width = r.numbers("input_size", 2)
    if height < 1 or width < 1 or height != int(height) or width != int(width):
        raise ManifestError(f"{r.where}: field '{r.prefix}input_size' must be two positive integers")
    std = r.numbers("std", 3)
    if min(std) <= 0:
        raise ManifestError(f"{r.where}: field '{r.prefix}std' must be positive, got {list(std)}")
    scale = r.get("scale", (int, float), default=1.0 / 255.0)
    return Preprocessing(
        input_size=(int(height), int(width)),
        mean=r.numbers("mean", 3),
        std=std,
        channel_order=r.choice("channel_order", CHANNEL_ORDERS, default="RGB"),
        layout=r.choice("layout", LAYOUTS, default="NCHW"),
        scale=float(scale),
        interpolation=r.choice("interpolation", INTERPOLATIONS, default="area"),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelDir:
    """A validated model directory. Use `ModelDir.load` to read one and `write_model_dir` to make one."""

    root: Path
    manifest: Manifest
    config: Any  # tritonclient's model_config_pb2.ModelConfig

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def onnx_path(self) -> Path:
        return self.root / str(self.manifest.version) / ONNX_FILE

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)

    @classmethod
    def load(cls, path: str | Path, verify_hash: bool = True) -> ModelDir:
        """Read and check manifest.json, config.pbtxt and the ONNX file's sha256."""
        root = Path(path)
        if not root.is_dir():
            raise ModelError(f"model directory {root} does not exist (expected <repository>/<name>/ "
                             f"with {MANIFEST_FILE}, {CONFIG_FILE} and <version>/{ONNX_FILE})")
        manifest_path = root / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ManifestError(f"{manifest_path} is missing")
        try:
            data = json.loads(manifest_path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{manifest_path} is not valid JSON: {exc}") from exc
        manifest = Manifest.from_json(data, where=str(manifest_path))
        config = read_config(root / CONFIG_FILE)
        _check_config_matches(config, manifest, root / CONFIG_FILE)
        model = cls(root=root, manifest=manifest, config=config)
        if not model.onnx_path.is_file():
            raise ModelError(f"{model.onnx_path} is missing (manifest.json says version {manifest.version})")
        if verify_hash:
            actual = sha256_of(model.onnx_path)
            if actual != manifest.onnx_sha256:
                raise ModelError(f"sha256 mismatch for {model.onnx_path}: manifest says "
                                 f"{manifest.onnx_sha256 or '(empty)'}, file is {actual}; the file was "
                                 f"changed or corrupted after the manifest was written")
        return model


def read_config(path: Path) -> Any:
    """Parse a Triton config.pbtxt with Triton's own protobuf schema (shipped by tritonclient)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    if not path.is_file():
        raise ManifestError(f"{path} is missing")
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not a valid Triton model configuration: {exc}") from exc


def _check_config_matches(config: Any, manifest: Manifest, where: Path) -> None:
    if config.name and config.name != manifest.name:
        raise ManifestError(f"{where}: name '{config.name}' differs from manifest name '{manifest.name}'")
    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    if inputs != [manifest.input.name] or outputs != [manifest.output.name]:
        raise ManifestError(f"{where}: inputs {inputs} / outputs {outputs} differ from manifest "
                            f"({manifest.input.name!r} -> {manifest.output.name!r})")


def build_config(manifest: Manifest, max_batch_size: int = 32, max_queue_delay_us: int = 500,
                 max_queue_size: int = 64, instances: int = 1) -> Any:
    """The Triton model configuration for a manifest, with dynamic batching and a bounded queue."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=manifest.name, platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    for spec, tensors in ((manifest.input, config.input), (manifest.output, config.output)):
        tensor = tensors.add()
        tensor.name = spec.name
        tensor.data_type = mc.DataType.Value(TRITON_DTYPES[spec.dtype][0])
        tensor.dims.extend(spec.shape)
    if max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
        config.dynamic_batching.default_queue_policy.max_queue_size = max_queue_size
    group = config.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = instances
    return config


def write_model_dir(root: str | Path, manifest: Manifest, onnx_file: str | Path, **config_options: Any) -> ModelDir:
    """Copy an ONNX file into the contract's layout, fill in its sha256, write manifest and config.

    `config_options` go to `build_config` (max_batch_size, max_queue_delay_us, max_queue_size, ...).
    """
    from google.protobuf import text_format

    root = Path(root)
    version_dir = root / str(manifest.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / ONNX_FILE
    if Path(onnx_file).resolve() != target.resolve():
        shutil.copyfile(onnx_file, target)
    manifest.onnx_sha256 = sha256_of(target)
    config = build_config(manifest, **config_options)
    (root / CONFIG_FILE).write_text(text_format.MessageToString(config))
    write_manifest(root, manifest)
    return ModelDir.load(root)


def write_manifest(root: str | Path, manifest: Manifest) -> None:
    """(Re)write a model directory's manifest.json alone (its config.pbtxt stays as it is)."""
    (Path(root) / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


def list_models(repository: str | Path) -> list[Path]:
    """Model directories (those with a manifest.json) directly under a model repository."""
    repo = Path(repository)
    if not repo.is_dir():
        raise ModelError(f"model repository {repo} does not exist")
    return sorted(p for p in repo.iterdir() if (p / MANIFEST_FILE).is_file())
