"""`robot-compress convert-detector`: a YOLOX ONNX export -> a detection model directory.

The network is rebuilt in torch from the file's weights (so any input size works), then
exported with uint8 NHWC input, decode and NMS inside the graph. Two checks must pass before
anything is written: the torch network reproduces the source file's raw outputs, and the
exported graph's detections equal a numpy decode + NMS of the torch raw head on real images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_WEIGHTS = Path("../shared/data/weights/yolox_nano-e8af0749.onnx")
DEFAULT_CHECK_IMAGES = Path("../shared/data/coco/train/images")
SIZES = (320, 416, 640)
SOURCE_SIZE = 416  # the shipped export's fixed input size
BOX_TOLERANCE_PX = 0.05
SCORE_TOLERANCE = 1e-3
# --int8-weights -> (torch fake quantization's qmax, quantize_detector keyword arguments, manifest words)
INT8_WEIGHTS = {
    "int8-7bit": (64, {}, "int8 per-channel, 7-bit range"),
    "int8": (127, {"reduce_range": False}, "int8 per-channel, full range [-127, 127]"),
    "uint8": (127, {"reduce_range": False, "weight_type": "QUInt8"},
              "uint8 per-channel, symmetric around 127 (full 8-bit steps, u8u8 kernels)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, required=True, choices=SIZES, help="square input side in pixels")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help=f"YOLOX-nano ONNX export to take the weights from (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write (models/<name>)")
    parser.add_argument("--name", help="model name (default: the --out directory's name)")
    parser.add_argument("--check-images", type=Path, default=DEFAULT_CHECK_IMAGES,
                        help="folder of real images for the export checks (default: coco/train images)")
    parser.add_argument("--check-count", type=int, default=8, help="how many of those images to check on")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="default threshold a client applies before showing a box (manifest only)")
    parser.add_argument("--nms-score-threshold", type=float, default=0.001,
                        help="candidate floor baked into the graph (low, so COCO mAP sees the full curve)")
    parser.add_argument("--iou-threshold", type=float, default=0.65, help="NMS IoU threshold baked into the graph")
    parser.add_argument("--max-det", type=int, default=100, help="fixed number of output rows per image")
    parser.add_argument("--int8", action="store_true",
                        help="static INT8 (QDQ) network body; decode, NMS and the box predictors stay float32")
    parser.add_argument("--calibration-images", type=Path, default=DEFAULT_CHECK_IMAGES,
                        help="training images to calibrate INT8 activations on (default: coco/train images; "
                             "never the evaluation split)")
    parser.add_argument("--calibration-count", type=int, default=64, help="how many calibration images")
    parser.add_argument("--bias-correction", action="store_true",
                        help="with --int8: correct each quantized convolution's bias for its weights' int8 "
                             "rounding (mean input measured on the --qat-count training images) before quantizing")
    parser.add_argument("--qat-epochs", type=int, default=0,
                        help="with --int8: epochs of quantization-aware fine-tuning (fake quantization where the "
                             "INT8 graph quantizes, distilled from the FP32 network) before quantizing; 0: none")
    parser.add_argument("--qat-lr", type=float, default=1e-4, help="SGD (momentum 0.9) learning rate of that fine-tuning")
    parser.add_argument("--int8-weights", choices=list(INT8_WEIGHTS), default="int8-7bit",
                        help="with --int8: how weights are stored. int8-7bit (default): int8 in [-64, 64], safe for the u8s8 "
                             "kernels of CPUs without VNNI, whose int16 pair sums can saturate with full-range "
                             "weights; int8: int8 in [-127, 127], half the rounding step (u8s8 kernels); uint8: "
                             "the same steps as int8, stored around 127 so ONNX Runtime runs its u8u8 kernels "
                             "(no saturation on any CPU)")
    parser.add_argument("--float-head", action="store_true",
                        help="with --int8: keep the whole detection head (stems, class and box branches) float32; "
                             "only the backbone's later stages and the neck are INT8")
    parser.add_argument("--adaround-steps", type=int, default=0,
                        help="with --int8: learn each quantized convolution's weight rounding (AdaRound) on the "
                             "--calibration-count images, this many Adam steps per layer, then correct its bias; "
                             "0: round to nearest")
    parser.add_argument("--qat-count", type=int, default=128,
                        help="training images for that fine-tuning: the first N of --calibration-images in name "
                             "order (the calibration images are among them)")


def check_images(folder: Path, count: int, size: int) -> list:
    """`count` letterboxed BGR uint8 images from `folder`, in name order."""
    import cv2

    from robot_compress.runtime.detection import letterbox

    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count] \
        if folder.is_dir() else []
    if not paths:
        raise ValueError(f"no .jpg/.png images in {folder} for the export check")
    return [letterbox(cv2.imread(str(p)), size)[0] for p in paths]


def compare_with_reference(model, onnx_path: Path, images: list, size: int, settings) -> tuple[float, float, int]:
    """(max box diff in pixels, max score diff, detections compared) between the exported graph and a
    numpy decode + NMS of the torch raw head, image by image."""
    import numpy as np
    import torch

    from robot_compress.runtime.detection import decode_raw, nms
    from robot_compress.runtime.local_backend import make_session

    session = make_session(onnx_path)
    box_diff = score_diff = 0.0
    compared = 0
    for image in images:
        graph = session.run(None, {"images": image[None]})[0][0]
        with torch.no_grad():
            raw = model(torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32)))[0].numpy()
        reference = nms(*decode_raw(raw, size), settings.score_threshold, settings.iou_threshold, settings.max_det)
        # Compare the confident rows: far down the list, near-equal scores may swap places.
        keep = reference[:, 4] > 0.05
        if (graph[:, 4] > 0.05).sum() != keep.sum():
            raise ValueError(f"exported graph keeps {(graph[:, 4] > 0.05).sum()} boxes above 0.05, "
                             f"the numpy reference {keep.sum()}")
        box_diff = max(box_diff, float(np.abs(graph[keep, :4] - reference[keep, :4]).max(initial=0.0)))
        score_diff = max(score_diff, float(np.abs(graph[keep, 4:] - reference[keep, 4:]).max(initial=0.0)))
        compared += int(keep.sum())
    return box_diff, score_diff, compared


def quantize(fp32_path: Path, int8_path: Path, check: list, args: argparse.Namespace) -> tuple[Path, dict]:
    """INT8 QDQ of the exported graph, and how far its top scores move on the check images."""
    import numpy as np

    from robot_compress.compress.detection.quantize import (
        CALIBRATION_PERCENTILE,
        FLOAT_HEAD,
        FLOAT_PREFIXES,
        quantize_detector,
    )
    from robot_compress.runtime.local_backend import make_session

    calibration = np.stack(check_images(args.calibration_images, args.calibration_count, args.size))
    start = time.perf_counter()
    qmax, weight_options, weight_words = INT8_WEIGHTS[args.int8_weights]
    float_prefixes = FLOAT_PREFIXES + ((FLOAT_HEAD,) if args.float_head else ())
    quantize_detector(fp32_path, int8_path, calibration, float_prefixes=float_prefixes, **weight_options)
    seconds = time.perf_counter() - start
    batch = np.stack(check)
    fp32 = make_session(fp32_path).run(None, {"images": batch})[0]
    int8 = make_session(int8_path).run(None, {"images": batch})[0]
    top_diff = float(np.abs(fp32[:, :10, 4] - int8[:, :10, 4]).mean())
    print(f"INT8 QDQ calibrated on {len(calibration)} images of {args.calibration_images} in {seconds:.0f} s; "
          f"mean |top-10 score change| on {len(batch)} check images: {top_diff:.3f}")
    how = {"format": "QDQ static", "weights": weight_words, "activations": "uint8 per-tensor",
           "calibration": f"{CALIBRATION_PERCENTILE}th percentile on {len(calibration)} letterboxed images from "
                          f"{args.calibration_images}",
           "float32": ["decode, NMS, top-k", "head sigmoid/concat", "class/box/objectness predictor convs",
                       *float_prefixes[3:]]}
    return int8_path, {"how": how, "metrics": {"int8_top10_score_mean_abs_change": top_diff}}


def fine_tune_for_int8(model, args: argparse.Namespace):
    """Bias correction and/or quantization-aware fine-tuning (`compress/detection/qat.py`): a float
    network that the INT8 quantization of the next step rounds less far from `model`'s answers."""
    import torch

    from robot_compress.compress.detection.data import load_image_folder
    from robot_compress.compress.detection.qat import qat_finetune

    torch.set_num_threads(1)
    train = load_image_folder(args.calibration_images, args.size, args.qat_count)
    start = time.perf_counter()
    tuned, history = qat_finetune(model, train, args.size, args.qat_epochs, lr=args.qat_lr,
                                  calibration=args.calibration_count, bias_correction=args.bias_correction,
                                  weight_qmax=INT8_WEIGHTS[args.int8_weights][0],
                                  rounding_iterations=args.adaround_steps, float_head=args.float_head)
    print(f"{'learnt rounding, ' if args.adaround_steps else ''}"
          f"{'bias correction' if args.bias_correction or args.adaround_steps else 'no bias correction'}, "
          f"quantization-aware "
          f"fine-tuning {args.qat_epochs} epochs, on {len(train)} images of {args.calibration_images} in "
          f"{time.perf_counter() - start:.0f} s"
          + (f"; distillation loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}" if history else ""))
    return tuned, history


def run(args: argparse.Namespace) -> int:
    import platform
    import tempfile

    import numpy as np
    import onnxruntime
    import torch

    from robot_compress.compress.detection.export import NmsSettings, export_detector
    from robot_compress.compress.detection.yolox import yolox_nano_from_onnx
    from robot_compress.compress.onnx_export import OPSET
    from robot_compress.runtime.cpu_info import cpu_description
    from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS, COCO80_NAMES, DetectionSpec
    from robot_compress.runtime.local_backend import make_session
    from robot_compress.runtime.model_contract import (
        Manifest,
        Preprocessing,
        TensorSpec,
        sha256_of,
        write_model_dir,
    )

    for name in ("score_threshold", "nms_score_threshold", "iou_threshold"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            print(f"error: --{name.replace('_', '-')} must be between 0 and 1, got {getattr(args, name)}",
                  file=sys.stderr)
            return 2
    if args.max_det < 1:
        print(f"error: --max-det must be >= 1, got {args.max_det}", file=sys.stderr)
        return 2
    if args.int8 and "val_dev" in args.calibration_images.parts:
        print(f"error: --calibration-images {args.calibration_images} is the evaluation split; calibrate on "
              f"training images (coco/train)", file=sys.stderr)
        return 2
    if args.qat_epochs < 0 or args.qat_count < 1 or not args.qat_lr > 0:
        print("error: --qat-epochs must be >= 0, --qat-count >= 1 and --qat-lr > 0", file=sys.stderr)
        return 2
    if args.adaround_steps < 0:
        print(f"error: --adaround-steps must be >= 0, got {args.adaround_steps}", file=sys.stderr)
        return 2
    if (args.qat_epochs or args.bias_correction or args.adaround_steps or args.float_head
            or args.int8_weights != "int8-7bit") and not args.int8:
        print("error: --qat-epochs, --bias-correction, --adaround-steps, --float-head and --int8-weights shape the "
              "INT8 graph; add --int8", file=sys.stderr)
        return 2
    if not args.weights.is_file():
        print(f"error: weights file {args.weights} does not exist", file=sys.stderr)
        return 2
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    try:
        model = yolox_nano_from_onnx(args.weights)
        source_images = check_images(args.check_images, args.check_count, SOURCE_SIZE)
        images = check_images(args.check_images, args.check_count, args.size)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = make_session(args.weights)
    source_input = source.get_inputs()[0].name
    batch = np.stack(source_images).transpose(0, 3, 1, 2).astype(np.float32)
    expected = np.concatenate([source.run(None, {source_input: x[None]})[0] for x in batch])
    with torch.no_grad():
        raw_diff = float(np.abs(model(torch.from_numpy(batch)).numpy() - expected).max())
    print(f"torch vs {args.weights.name} raw head at {SOURCE_SIZE}, {len(batch)} images: max |diff| {raw_diff:.2e}")
    if raw_diff > 1e-3:
        print(f"error: the torch YOLOX does not reproduce {args.weights} (max |diff| {raw_diff:.2e} > 1e-3)",
              file=sys.stderr)
        return 1

    prepared = False
    if args.qat_epochs or args.bias_correction or args.adaround_steps:
        model, _ = fine_tune_for_int8(model, args)
        prepared = True
    settings = NmsSettings(args.nms_score_threshold, args.iou_threshold, args.max_det)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_tmp = export_detector(model, Path(tmp) / "model.onnx", args.size, settings)
        try:
            box_diff, score_diff, compared = compare_with_reference(model, onnx_tmp, images, args.size, settings)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"in-graph decode + NMS vs numpy reference at {args.size}, {len(images)} images, {compared} boxes: "
              f"max box |diff| {box_diff:.2e} px, max score |diff| {score_diff:.2e}")
        if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE:
            print(f"error: exported detections differ from the numpy reference (boxes {box_diff:.2e} px, "
                  f"scores {score_diff:.2e})", file=sys.stderr)
            return 1
        quantization = None
        if args.int8:
            try:
                onnx_tmp, quantization = quantize(onnx_tmp, Path(tmp) / "model_int8.onnx", images, args)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        name = args.name or args.out.name
        manifest = Manifest(
            name=name,
            labels=list(COCO80_NAMES),
            input=TensorSpec(name="images", dtype="uint8", shape=(args.size, args.size, 3)),
            output=TensorSpec(name="detections", dtype="float32", shape=(args.max_det, 6)),
            preprocessing=Preprocessing(input_size=(args.size, args.size), mean=(0.0, 0.0, 0.0),
                                        std=(1.0, 1.0, 1.0), channel_order="BGR", layout="NHWC", scale=1.0,
                                        interpolation="linear"),
            task="detection",
            detection=DetectionSpec(score_threshold=args.score_threshold,
                                    nms_score_threshold=args.nms_score_threshold,
                                    iou_threshold=args.iou_threshold, max_detections=args.max_det,
                                    category_ids=list(COCO80_CATEGORY_IDS)),
            source={"model": "yolox_nano", "weights": args.weights.name, "weights_sha256": sha256_of(args.weights),
                    "origin": "Megvii YOLOX official ONNX export (via Bigisland1729/object-detection-models)",
                    "published_map50_95": {"value": 25.8, "dataset": "COCO val2017", "input_size": 416}},
            license="Apache-2.0",
            metrics={"torch_vs_source_max_abs_diff": raw_diff, "graph_vs_numpy_box_max_abs_diff_px": box_diff,
                     "graph_vs_numpy_score_max_abs_diff": score_diff},
            created={"command": "robot-compress convert-detector " + " ".join(sys.argv[2:])
                     if sys.argv[1:2] == ["convert-detector"] else "robot-compress convert-detector",
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_description(),
                     "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET,
                     "python": platform.python_version(),
                     "how": "torch YOLOX-nano rebuilt from the weights file, exported with uint8 NHWC BGR input; "
                            "cast, decode and NMS inside the graph"},
        )
        if quantization:
            if prepared:
                steps = []
                if args.adaround_steps:
                    steps.append(f"learnt weight rounding (AdaRound, {args.adaround_steps} steps per layer) and bias "
                                 f"correction on the first {args.calibration_count} images")
                elif args.bias_correction:
                    steps.append(f"bias correction of the weights' int8 rounding on the first {args.qat_count} images")
                if args.qat_epochs:
                    steps.append(f"quantization-aware fine-tuning {args.qat_epochs} epochs (SGD lr {args.qat_lr:g}, "
                                 f"distilled from the FP32 network) on the first {args.qat_count} images")
                quantization["how"]["before_quantizing"] = f"{', then '.join(steps)} of {args.calibration_images}"
            manifest.created["quantization"] = quantization["how"]
            manifest.metrics.update(quantization["metrics"])
        model_dir = write_model_dir(args.out, manifest, onnx_tmp)
    size_kb = model_dir.onnx_path.stat().st_size / 1024
    print(f"wrote {model_dir.root} ({args.size}x{args.size}, {size_kb:.0f} KiB, sha256 {manifest.onnx_sha256[:12]}); "
          f"wire input {args.size * args.size * 3} bytes/frame uint8, output {args.max_det * 6 * 4} bytes")
    return 0
