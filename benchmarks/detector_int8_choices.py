"""INT8 choices for the 320 robot detector, scored on held-out coco/train images (never val_dev).

    .venv/bin/python benchmarks/detector_int8_choices.py --variants shipped minmax p99.9 --qat-epochs 4

Selection images: the coco/train images whose labels are official and complete (`label_status`
official_full, 182). Calibration and fine-tuning images: the first 128 coco/train images in name
order (none of them official_full; the script checks). For each variant: mAP50-95 / mAP50 with
ONNX Runtime's fused INT8 kernels and unfused (the graph as its ONNX definition says), beside the
FP32 network's. With --bias-correction and/or --qat-epochs, the bias-corrected or the
quantization-aware fine-tuned network (`compress/detection/qat.py`) is scored too, as FP32 and as
INT8 with the shipped quantization settings, with the fake-quantized network's distillation loss
against the FP32 network on the selection images along the way. Variants named bc* and ada* are
made from a prepared float network (bias correction, or learnt rounding `compress/detection/
adaround.py` then bias correction), for 7-bit int8 weights or full 8-bit ones (*_w8: int8, u8s8
kernels; *_u8: the same steps stored as uint8, u8u8 kernels); --models scores model directories
already made (`convert-detector` outputs) on the same images; --time-rounds times every scored graph in
turns. "Agreement": each variant's mAP
(fused kernels) against the FP32 network's boxes scored >= 0.3 on the same images taken as the
truth, a finer measure of how closely it reproduces FP32 than mAP on 182 labelled images. Prints a
table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from robot_compress.compress.detection.coco_eval import coco_map
from robot_compress.compress.detection.quantize import FLOAT_HEAD, FLOAT_PREFIXES
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.detection import letterbox, to_detections
from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS, COCO80_NAMES
from robot_compress.runtime.local_backend import make_session

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared/data/coco/train"
WEIGHTS = REPO.parent / "shared/data/weights/yolox_nano-e8af0749.onnx"
SIZE = 320
TRAIN_COUNT = 128
CALIBRATION_COUNT = 64
DARK4 = "/model/backbone/backbone/dark4/"
ROUNDING_ITERATIONS = 300
W8 = {"reduce_range": False}  # full 8-bit weights, int8 [-127, 127] (u8s8 kernels)
U8 = {"reduce_range": False, "weight_type": "QUInt8"}  # the same steps as uint8 around 127 (u8u8 kernels)
HEAD_PARTS = ("stems", "cls_convs", "reg_convs")  # a head level's convolutions before its predictors
VARIANTS = {  # name -> quantize_detector keyword arguments; "prepare": the float network quantized
    "shipped": {},
    "minmax": {"method": "MinMax"},
    "minmax_128": {"method": "MinMax", "count": 128},
    "p99.999": {"percentile": 99.999},
    "p99.9": {"percentile": 99.9},
    "asymmetric": {"symmetric_ranges": False},
    "dark4_float": {"float_prefixes": FLOAT_PREFIXES + (DARK4,)},
    # prepared: bias correction (7-bit or 8-bit weights, matching the quantization)
    "bc": {"prepare": ("bias", 64)},
    "bc_w8": {"prepare": ("bias", 127), **W8},
    "bc_u8": {"prepare": ("bias", 127), **U8},
    "bc_head_float": {"prepare": ("bias", 64), "float_prefixes": FLOAT_PREFIXES + (FLOAT_HEAD,)},
    # the same, with the bias correction leaving the float head alone (convert-detector --float-head)
    "float_head": {"prepare": ("bias", 64, "float_head"), "float_prefixes": FLOAT_PREFIXES + (FLOAT_HEAD,)},
    # which head level's quantization costs accuracy: one level's stem and branches float, the others int8
    "head_s8_float": {"float_prefixes": FLOAT_PREFIXES + tuple(f"{FLOAT_HEAD}{part}.0/" for part in HEAD_PARTS)},
    "head_s16_s32_float": {"float_prefixes": FLOAT_PREFIXES + tuple(f"{FLOAT_HEAD}{part}.{level}/"
                                                                      for part in HEAD_PARTS for level in (1, 2))},
    "head_float": {"float_prefixes": FLOAT_PREFIXES + (FLOAT_HEAD,)},
    "bc_dark5_float": {"prepare": ("bias", 64), "float_prefixes": FLOAT_PREFIXES + ("/model/backbone/backbone/dark5/",)},
    "ada": {"prepare": ("adaround", 64)},
    "ada_w8": {"prepare": ("adaround", 127), **W8},
    "ada_u8": {"prepare": ("adaround", 127), **U8},
    "w8": dict(W8),
    "u8": dict(U8),
}
PLAIN = [name for name, options in VARIANTS.items()
         if "prepare" not in options and name not in ("w8", "u8") and not name.startswith("head_")]


def split() -> tuple[list[dict], list[Path]]:
    """(selection entries, training image paths); ValueError if they overlap."""
    entries = json.loads((TRAIN / "instances.json").read_text())["images"]
    selection = [e for e in entries if e.get("label_status") == "official_full"]
    training = sorted(p for p in (TRAIN / "images").iterdir() if p.suffix.lower() == ".jpg")[:TRAIN_COUNT]
    if {e["file_name"] for e in selection} & {p.name for p in training}:
        raise ValueError("selection and training images overlap")
    return selection, training


AGREEMENT_SCORE = 0.3  # FP32 boxes above this (the robot's display threshold) are the agreement's truth


def detections(onnx_path: Path, selection: list[dict], images: list[np.ndarray], fused: bool = True) -> dict:
    session = make_session(onnx_path, threads=2, fused=fused)
    found = {}
    for entry, image in zip(selection, images, strict=True):
        tensor, box = letterbox(image, SIZE)
        found[entry["id"]] = to_detections(session.run(None, {"images": tensor[None]})[0][0], box,
                                           list(COCO80_NAMES), 0.0)
    return found


def score(onnx_path: Path, selection: list[dict], images: list[np.ndarray], fused: bool = True) -> tuple[float, float]:
    return coco_map(TRAIN / "instances.json", detections(onnx_path, selection, images, fused),
                    list(COCO80_CATEGORY_IDS))


def agreement(reference: dict, found: dict, selection: list[dict]) -> tuple[float, float]:
    """(mAP50-95, mAP50) of `found` against the FP32 network's confident boxes taken as the truth: how
    closely INT8 reproduces FP32, without the label noise and with more boxes than the labels give."""
    ids = list(COCO80_CATEGORY_IDS)
    truth = {"images": [{"id": e["id"], "width": e["width"], "height": e["height"]} for e in selection],
             "categories": [{"id": i} for i in ids], "annotations": []}
    for image_id, boxes in reference.items():
        for d in boxes:
            if d.score >= AGREEMENT_SCORE:
                w, h = d.x2 - d.x1, d.y2 - d.y1
                truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                                             "category_id": ids[d.class_id], "bbox": [d.x1, d.y1, w, h],
                                             "area": w * h})
    return coco_map(truth, found, ids)


def prepare(teacher, key: tuple, path: Path, settings) -> tuple[Path, float]:
    """The float network a prepared variant quantizes, exported, and the seconds it took."""
    from robot_compress.compress.detection.data import load_image_folder
    from robot_compress.compress.detection.export import export_detector
    from robot_compress.compress.detection.qat import qat_finetune

    kind, qmax, *flags = key
    train = load_image_folder(TRAIN / "images", SIZE, TRAIN_COUNT)
    start = time.perf_counter()
    if kind == "bias":
        tuned, _ = qat_finetune(teacher, train, SIZE, 0, calibration=CALIBRATION_COUNT, weight_qmax=qmax,
                                float_head="float_head" in flags)
    elif kind == "adaround":
        tuned, _ = qat_finetune(teacher, train, SIZE, 0, calibration=CALIBRATION_COUNT, weight_qmax=qmax,
                                rounding_iterations=ROUNDING_ITERATIONS)
    else:
        raise ValueError(f"unknown preparation {kind}")
    return export_detector(tuned, path, SIZE, settings), time.perf_counter() - start


def time_graphs(rows: list[dict], graphs: list[Path], image: np.ndarray, rounds: int) -> None:
    """Every row's graph timed in turns on one letterboxed image (1 thread, batch 1), so that the
    machine's load falls on all of them alike; adds ms_p50 and ms_min to each row."""
    from robot_compress.compress.metrics import interleaved_samples_ms

    sessions = [make_session(path, threads=1) for path in graphs]
    calls = [lambda x, s=session: s.run(None, {s.get_inputs()[0].name: x}) for session in sessions]
    samples = interleaved_samples_ms(calls, feed=[image] * len(calls), rounds=rounds, runs=10, warmup=5)
    for row, times in zip(rows, samples, strict=True):
        row["ms_p50"], row["ms_min"] = float(np.median(times)), float(min(times))


def main() -> int:
    import torch

    from robot_compress.compress.detection.data import load_image_folder
    from robot_compress.compress.detection.export import NmsSettings, export_detector
    from robot_compress.compress.detection.qat import held_out_loss, qat_finetune
    from robot_compress.compress.detection.quantize import quantize_detector
    from robot_compress.compress.detection.yolox import yolox_nano_from_onnx
    from robot_compress.runtime.model_contract import ModelDir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=PLAIN, choices=list(VARIANTS),
                        help=f"quantization choices to make and score (default: {' '.join(PLAIN)})")
    parser.add_argument("--bias-correction", action="store_true",
                        help="also score the bias-corrected network (convert-detector --bias-correction)")
    parser.add_argument("--qat-epochs", type=int, default=0,
                        help="also score QAT (after bias correction if --bias-correction is given)")
    parser.add_argument("--qat-lr", type=float, default=1e-4)
    parser.add_argument("--models", nargs="*", type=Path, default=[],
                        help="also score these 320 model directories (e.g. convert-detector outputs) on the same images")
    parser.add_argument("--time-rounds", type=int, default=0,
                        help="also time every scored graph, taking turns (1 thread, batch 1, this many rounds of 10 runs)")
    parser.add_argument("--out", type=Path, default=REPO / "runs/detector_int8_choices.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    selection, training = split()
    images = [cv2.imread(str(TRAIN / "images" / e["file_name"])) for e in selection]
    calibration = {n: np.stack([letterbox(cv2.imread(str(p)), SIZE)[0] for p in training[:n]])
                   for n in (CALIBRATION_COUNT, TRAIN_COUNT)}
    teacher = yolox_nano_from_onnx(WEIGHTS)
    settings = NmsSettings(0.001, 0.65, 100)
    rows = []

    reference = {}
    graphs: list[Path] = []  # each row's graph, for --time-rounds

    def add(name, onnx_path, int8=True, **extra):
        graphs.append(Path(onnx_path))
        found = detections(onnx_path, selection, images)
        fused = coco_map(TRAIN / "instances.json", found, list(COCO80_CATEGORY_IDS))
        row = {"variant": name, "map50_95": fused[0], "map50": fused[1], **extra}
        if not reference:
            reference.update(found)
        else:
            row["agreement_map50_95"], row["agreement_map50"] = agreement(reference, found, selection)
        if int8:
            row["map50_95_unfused"], row["map50_unfused"] = score(onnx_path, selection, images, fused=False)
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_detector(teacher, Path(tmp) / "fp32.onnx", SIZE, settings)
        add("fp32", fp32, int8=False)
        for model_dir in args.models:
            add(model_dir.name, ModelDir.load(model_dir).onnx_path, created=ModelDir.load(model_dir).manifest.created)
        prepared = {None: (fp32, 0.0)}
        for name in args.variants:
            options = dict(VARIANTS[name])
            count = options.pop("count", CALIBRATION_COUNT)
            key = options.pop("prepare", None)
            start = time.perf_counter()
            if key not in prepared:
                prepared[key] = prepare(teacher, key, Path(tmp) / f"{'_'.join(map(str, key))}_fp32.onnx", settings)
                add(f"{name} float network", prepared[key][0], int8=False)
            source, prepare_seconds = prepared[key]
            int8 = quantize_detector(source, Path(tmp) / f"{name}.onnx", calibration[count], **options)
            add(name, int8, calibration_images=count, seconds=time.perf_counter() - start + prepare_seconds)
        qat_label = f"{'bias correction + ' if args.bias_correction else ''}qat {args.qat_epochs} epochs lr {args.qat_lr:g}"
        runs = ([(0, True, "bias correction")] if args.bias_correction and not args.qat_epochs else []) + \
            ([(args.qat_epochs, args.bias_correction, qat_label)] if args.qat_epochs else [])
        for epochs, bias_correction, label in runs:
            held_out = np.stack([letterbox(image, SIZE)[0] for image in images])
            train = load_image_folder(TRAIN / "images", SIZE, TRAIN_COUNT)
            start = time.perf_counter()
            tuned, history = qat_finetune(teacher, train, SIZE, epochs, lr=args.qat_lr, calibration=CALIBRATION_COUNT,
                                          held_out=held_out, bias_correction=bias_correction)
            seconds = time.perf_counter() - start
            tuned_fp32 = export_detector(tuned, Path(tmp) / f"{label}_fp32.onnx", SIZE, settings)
            add(f"{label}, FP32", tuned_fp32, int8=False,
                distillation_loss_vs_fp32=held_out_loss(tuned, teacher, held_out))
            add(f"{label}, INT8", quantize_detector(tuned_fp32, Path(tmp) / f"{label}.onnx",
                                                    calibration[CALIBRATION_COUNT]),
                seconds=seconds, history=history)
        if args.time_rounds:
            time_graphs(rows, graphs, letterbox(images[0], SIZE)[0][None], args.time_rounds)
    print(f"\n{len(selection)} held-out coco/train images, {cpu_description()}, {time.strftime('%Y-%m-%d')}")
    print(f"{'variant':42s} {'mAP50-95 fused':>15s} {'unfused':>8s} {'mAP50':>6s} {'agreement with FP32':>20s}"
          f" {'ms p50 / min':>15s}")
    for r in rows:
        unfused = f"{r['map50_95_unfused']:.2f}" if "map50_95_unfused" in r else "-"
        agree = f"{r['agreement_map50_95']:.2f}" if "agreement_map50_95" in r else "-"
        ms = f"{r['ms_p50']:.2f} / {r['ms_min']:.2f}" if "ms_p50" in r else "-"
        print(f"{r['variant']:42s} {r['map50_95']:15.2f} {unfused:>8s} {r['map50']:6.2f} {agree:>20s} {ms:>15s}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": cpu_description(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "selection_images": len(selection), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
