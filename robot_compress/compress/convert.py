"""`robot-compress convert`: a pretrained CIFAR ResNet checkpoint -> a model directory (FP32 ONNX).

This is how the shipped models/cifar10_resnet20 and the edge model were made; the command line
that made a model is recorded in its manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CIFAR10_MEAN = (0.485, 0.456, 0.406)  # the normalisation the akamaster checkpoints were trained with
CIFAR10_STD = (0.229, 0.224, 0.225)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", required=True, help="resnet20, resnet32, resnet44 or resnet56")
    parser.add_argument("--checkpoint", required=True, type=Path, help="akamaster-format .th checkpoint")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write (models/<name>)")
    parser.add_argument("--name", help="model name (default: the --out directory's name)")
    parser.add_argument("--eval-data", type=Path, help="labelled images to measure top-1 on (e.g. "
                        "../shared/data/cifar10/test_dev.npz); stored in the manifest's metrics")
    parser.add_argument("--published-accuracy", type=float, help="published top-1 of these weights, recorded "
                        "in the manifest's source")


def run(args: argparse.Namespace) -> int:
    import platform

    import numpy as np
    import onnxruntime
    import torch

    from robot_compress.compress.cifar_resnet import WEIGHTS_LICENSE, cifar_resnet, load_checkpoint
    from robot_compress.compress.logit_tolerance import mismatch
    from robot_compress.compress.onnx_export import OPSET, export_onnx, max_abs_diff
    from robot_compress.runtime.datasets import CIFAR10_LABELS, load_labelled_images
    from robot_compress.runtime.evaluate import top1_accuracy
    from robot_compress.runtime.local_backend import LocalBackend
    from robot_compress.runtime.model_contract import Manifest, Preprocessing, TensorSpec, write_model_dir
    from robot_compress.runtime.preprocess import preprocess_batch

    try:
        model = cifar_resnet(args.arch)
        extra = load_checkpoint(model, args.checkpoint)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.name or args.out.name
    spec = Preprocessing(input_size=(32, 32), mean=CIFAR10_MEAN, std=CIFAR10_STD)
    manifest = Manifest(
        name=name,
        labels=list(CIFAR10_LABELS),
        input=TensorSpec(name="input", dtype="float32", shape=(3, 32, 32)),
        output=TensorSpec(name="logits", dtype="float32", shape=(10,)),
        preprocessing=spec,
        source={"model": f"cifar10_{args.arch}", "checkpoint": args.checkpoint.name,
                "origin": "https://github.com/akamaster/pytorch_resnet_cifar10",
                "published_top1": args.published_accuracy, "checkpoint_best_prec1": extra.get("best_prec1")},
        license=WEIGHTS_LICENSE,
        created={"command": "robot-compress convert " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["convert"]
                 else "robot-compress convert", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET,
                 "python": platform.python_version()},
    )
    onnx_tmp = args.out / "export" / "model.onnx"
    export_onnx(model, onnx_tmp, (3, 32, 32))
    eval_data = load_labelled_images(args.eval_data, split="test") if args.eval_data else None
    if eval_data is not None:
        check_inputs = preprocess_batch(eval_data.images[:64], "rgb8", spec)
    else:
        check_inputs = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    diff, expected = max_abs_diff(model, onnx_tmp, check_inputs)
    print(f"ONNX vs PyTorch max |diff| on {len(check_inputs)} inputs: {diff:.2e}")
    if problem := mismatch(diff, 1e-3, expected):
        print(f"error: exported ONNX differs from PyTorch {problem}", file=sys.stderr)
        return 1
    manifest.metrics["export_max_abs_diff"] = diff
    model_dir = write_model_dir(args.out, manifest, onnx_tmp)
    onnx_tmp.unlink()
    onnx_tmp.parent.rmdir()
    if eval_data is not None:
        accuracy = top1_accuracy(LocalBackend(model_dir), eval_data, spec, progress=True)
        manifest.metrics["top1"] = accuracy
        manifest.metrics["top1_eval_data"] = f"{args.eval_data.name} ({len(eval_data)} images)"
        print(f"top-1 on {args.eval_data.name}: {accuracy:.2%}")
        model_dir = write_model_dir(args.out, manifest, model_dir.onnx_path)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {model_dir.root} ({params / 1e6:.2f}M parameters, sha256 {manifest.onnx_sha256[:12]})")
    return 0
