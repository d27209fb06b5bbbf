"""The model contract: one model directory, readable by this package and by Triton unchanged.

    <repository>/<name>/config.pbtxt        Triton model configuration (written from the manifest)
    <repository>/<name>/<version>/model.onnx
    <repository>/<name>/manifest.json       labels, preprocessing, tensor specs, sha256, source, metrics

The manifest is the source of truth; config.pbtxt is derived from it so a real Triton server can
serve the same directory. Everything read from disk is validated here, once, with errors that
name the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, field_validator, model_validator

from robot_compress.runtime.detection_contract import DetectionSpec, check_detection_manifest
from robot_compress.runtime.errors import ImageError, ManifestError, ModelError
from robot_compress.runtime.schema import Schema, setting, validate, validate_json

MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
FORMAT_VERSION = 1

# The largest input side a manifest may ask for: a model input of 4096x4096 float32 is already
# 200 MB per frame; a bigger one is a typo or an attack, not a robot's camera model.
MAX_INPUT_SIDE = 4096
MAX_DIM = 1 << 20  # any one tensor dimension
PLATFORM = "onnxruntime_onnx"
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU")
MAX_INSTANCES = 64  # instance_group count: each instance is an ONNX Runtime session and threads
# numpy dtype name -> Triton / KServe v2 names, for the dtypes a classifier uses.
TRITON_DTYPES = {"float32": ("TYPE_FP32", "FP32"), "float16": ("TYPE_FP16", "FP16"), "int64": ("TYPE_INT64", "INT64"),
                 "uint8": ("TYPE_UINT8", "UINT8")}


class TensorSpec(Schema):
    """A model input or output, without the batch dimension."""

    name: str = setting(description="tensor name in the ONNX graph and config.pbtxt")
    dtype: Literal["float32", "float16", "int64", "uint8"] = setting(description="numpy dtype name")
    shape: tuple[int, ...] = setting(description="dimensions without the batch dimension", low=1, high=MAX_DIM)

    @field_validator("shape")
    @classmethod
    def _not_empty(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            raise ValueError("must be a list of positive integers (without the batch dimension), got []")
        return shape

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


class Preprocessing(Schema):
    """How a uint8 camera image becomes the model's input tensor (see runtime/preprocess.py)."""

    input_size: tuple[int, int] = setting(description="(height, width) the image is resized to",
                                          low=1, high=MAX_INPUT_SIDE)
    mean: tuple[float, float, float] = setting(description="per-channel mean, after scale", low=-1e6, high=1e6)
    std: tuple[float, float, float] = setting(description="per-channel std, after scale", low=0, high=1e6,
                                              low_open=True)
    channel_order: Literal["RGB", "BGR"] = setting("RGB", "channel order the model expects")
    layout: Literal["NCHW", "NHWC"] = setting("NCHW", "tensor layout the model expects")
    scale: float = setting(1.0 / 255.0, "applied to the uint8 pixels before mean/std", 0, 1e6, low_open=True)
    interpolation: Literal["area", "linear", "nearest", "cubic"] = setting("area", "OpenCV resize interpolation")

    def tensor_shape(self, channels: int = 3) -> tuple[int, int, int]:
        """The input tensor's shape (without the batch dimension) this preprocessing produces."""
        height, width = self.input_size
        return (channels, height, width) if self.layout == "NCHW" else (height, width, channels)


class Manifest(Schema):
    """robot_compress's own description of a model directory (manifest.json). Mutable, so a
    writer can fill in the sha256; assignments are validated too."""

    model_config = ConfigDict(frozen=False, validate_assignment=True)

    # first, so a manifest from a newer robot_compress names the version before any other field
    format_version: int = setting(FORMAT_VERSION, "manifest format; newer than this package's is refused",
                                  1, FORMAT_VERSION)
    name: str = setting(description="model name (the directory's name in a repository)")
    labels: list[str] = setting(description="class names, in output order")
    input: TensorSpec = setting(description="the input tensor")
    output: TensorSpec = setting(description="the output tensor (one score per label)")
    preprocessing: Preprocessing = setting(description="camera image -> input tensor")
    onnx_sha256: str = setting("", "sha256 of <version>/model.onnx")
    version: int = setting(1, "model version: the <version> directory", 1, 2**31 - 1)
    task: Literal["classification", "detection"] = setting("classification", "what the model does")
    source: dict[str, Any] = setting(default_factory=dict, description="where the weights come from")
    license: str = setting("", "licence of the weights")
    recipe: dict[str, Any] | None = setting(None, "the compression recipe that made the model")
    metrics: dict[str, Any] = setting(default_factory=dict, description="measured accuracy and latency")
    created: dict[str, Any] = setting(default_factory=dict, description="when, how and on what it was made")
    detection: DetectionSpec | None = setting(None, "task detection only: input, thresholds, output meaning")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        if not labels:
            raise ValueError("must be a non-empty list of strings")
        return labels

    @field_validator("format_version", mode="wrap")
    @classmethod
    def _understood(cls, value: Any, handler: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value > FORMAT_VERSION:
            raise ValueError(f"{value} is newer than this robot_compress understands ({FORMAT_VERSION}); "
                             f"upgrade robot_compress")
        return handler(value)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.task == "detection":
            check_detection_manifest(self)
        elif self.output.shape != (len(self.labels),):
            raise ValueError(f"output shape {list(self.output.shape)} does not match the {len(self.labels)} labels")
        expected = self.preprocessing.tensor_shape(self.input.shape[0 if self.preprocessing.layout == "NCHW" else -1])
        if self.input.shape != expected:
            raise ValueError(f"input shape {list(self.input.shape)} does not match preprocessing input_size "
                             f"{list(self.preprocessing.input_size)} in layout {self.preprocessing.layout} "
                             f"(expected {list(expected)})")
        return self

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if self.detection is None:
            del data["detection"]  # a classifier's manifest stays as it was
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = MANIFEST_FILE) -> Manifest:
        """Validate a parsed manifest.json; every problem names its field."""
        return validate(cls, data, where, ManifestError)

    @classmethod
    def from_text(cls, text: str | bytes, where: str = MANIFEST_FILE) -> Manifest:
        """Parse and validate manifest.json's text (nesting depth is capped by the parser)."""
        return validate_json(cls, text, where, ManifestError)


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
        manifest = Manifest.from_text(manifest_path.read_bytes(), where=str(manifest_path))
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
    """config.pbtxt must describe the same model as the manifest: Triton serving the directory
    would otherwise feed it tensors the ONNX file does not take."""
    from tritonclient.grpc import model_config_pb2 as mc

    if config.name and config.name != manifest.name:
        raise ManifestError(f"{where}: name '{config.name}' differs from manifest name '{manifest.name}'")
    # A Python-backend twin (robot-compress triton-repository) runs the same ONNX file from its model.py.
    python_twin = config.backend == "python" and not config.platform and any(where.parent.glob("*/model.py"))
    if not python_twin and (config.platform not in ("", PLATFORM) or config.backend not in ("", "onnxruntime")):
        raise ManifestError(f"{where}: platform '{config.platform}' / backend '{config.backend}' is not "
                            f"'{PLATFORM}'; the model is an ONNX file")
    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    if inputs != [manifest.input.name] or outputs != [manifest.output.name]:
        raise ManifestError(f"{where}: inputs {inputs} / outputs {outputs} differ from manifest "
                            f"({manifest.input.name!r} -> {manifest.output.name!r})")
    for kind, tensor, spec in (("input", config.input[0], manifest.input), ("output", config.output[0], manifest.output)):
        if tuple(tensor.dims) != spec.shape:
            raise ManifestError(f"{where}: {kind} '{spec.name}' dims {list(tensor.dims)} differ from manifest "
                                f"{kind}.shape {list(spec.shape)}")
        data_type = mc.DataType.Name(tensor.data_type)
        if data_type != TRITON_DTYPES[spec.dtype][0]:
            raise ManifestError(f"{where}: {kind} '{spec.name}' data_type {data_type} differs from manifest "
                                f"{kind}.dtype {spec.dtype} ({TRITON_DTYPES[spec.dtype][0]})")
    for i, group in enumerate(config.instance_group):
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind not in INSTANCE_KINDS:
            raise ManifestError(f"{where}: instance_group[{i}].kind {kind} is not one of {list(INSTANCE_KINDS)} "
                                f"(robot_compress runs the ONNX file with ONNX Runtime on the CPU)")
        if not 0 <= group.count <= MAX_INSTANCES:
            raise ManifestError(f"{where}: instance_group[{i}].count {group.count} is out of range "
                                f"[0, {MAX_INSTANCES}]")


ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(uint8)": "uint8"}


def check_session(model: ModelDir, session: Any) -> None:
    """The ONNX file, as ONNX Runtime loaded it, must take and give what the manifest says: a
    mismatch is a clear error at load, not an ONNX Runtime traceback at the first request."""
    where = model.onnx_path
    for kind, spec, tensors in (("input", model.manifest.input, session.get_inputs()),
                                ("output", model.manifest.output, session.get_outputs())):
        if len(tensors) != 1:
            raise ModelError(f"{where} has {len(tensors)} {kind}s {[t.name for t in tensors]}; the manifest "
                             f"describes one, '{spec.name}'")
        (tensor,) = tensors
        if tensor.name != spec.name:
            raise ModelError(f"{where}: {kind} is named '{tensor.name}', manifest {kind}.name is '{spec.name}'")
        dtype = ONNX_DTYPES.get(tensor.type, tensor.type)
        if dtype != spec.dtype:
            raise ModelError(f"{where}: {kind} '{tensor.name}' is {dtype}, manifest {kind}.dtype is {spec.dtype}")
        dims = list(tensor.shape)[1:]  # a named (symbolic) dimension matches any size
        if len(dims) != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(dims, spec.shape, strict=False)):
            raise ModelError(f"{where}: {kind} '{tensor.name}' has shape {list(tensor.shape)} (batch first), "
                             f"manifest {kind}.shape is {list(spec.shape)}")


def build_config(manifest: Manifest, max_batch_size: int = 32, max_queue_delay_us: int = 500,
                 max_queue_size: int = 64, instances: int = 1) -> Any:
    """The Triton model configuration for a manifest, with dynamic batching and a bounded queue."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=manifest.name, platform=PLATFORM, max_batch_size=max_batch_size)
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
