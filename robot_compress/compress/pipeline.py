"""Run a recipe's stages on its teacher (or its student) and write a model directory in the model contract.

Work directory layout (runs/<name>/ by default, gitignored):
    run.json                       the run manifest: recipe + sha256, seed, versions, command, timings
    00_teacher/                    model.onnx + metrics.json of the teacher
    00_student/                    the same for the student, when the recipe names one to start from
    NN_<stage>/model.pt            the stage's torch model (whole module: pruning changes shapes)
    NN_<stage>/model.onnx          its ONNX file (measured like the final model)
    NN_<stage>/metrics.json        written last: a stage with metrics.json is done and is reused on
                                   --resume while its settings (and all earlier ones) are unchanged
    NN_<stage>/train_state.pt      per-epoch training state of a stage that is still running
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from robot_compress.compress import distributed
from robot_compress.compress.data import load_splits
from robot_compress.compress.metrics import interleaved_latency_ms, measure
from robot_compress.compress.models import build_model
from robot_compress.compress.recipe import ExportOnnx, MetricsConfig, Recipe, RecipeError
from robot_compress.compress.report import score_text, write_report
from robot_compress.compress.stages import Artefact, Context, runner
from robot_compress.compress.stages.export_onnx import export_checked
from robot_compress.compress.train import device
from robot_compress.runtime.cpu_info import cpu_description
from robot_compress.runtime.model_contract import Manifest, ModelDir, TensorSpec, write_model_dir

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
console = Console(stderr=True)


class RunStateError(RuntimeError):
    """The work directory does not fit the request (a previous run without --resume, another recipe)."""


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch_pruning

    return {"python": platform.python_version(), "torch": torch.__version__, "torch_pruning": torch_pruning.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _open_run(recipe: Recipe, work_dir: Path, resume: bool, command: str) -> dict[str, Any]:
    run_file = work_dir / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text())
        if not resume:
            raise RunStateError(f"{work_dir} holds a previous run (status {previous.get('status')}); pass "
                                f"--resume to continue it, or --fresh to start over")
        if previous.get("recipe_sha256") != recipe.digest:
            console.print("[yellow]the recipe changed since this run started: stages whose settings (or "
                          "earlier stages' settings) changed run again[/]")
        previous.update(recipe=recipe.source, recipe_sha256=recipe.digest, command=command, status="running",
                        resumed=previous.get("resumed", 0) + 1)
        return previous
    work_dir.mkdir(parents=True, exist_ok=True)
    return {"recipe_name": recipe.name, "recipe": recipe.source, "recipe_sha256": recipe.digest,
            "seed": recipe.seed, "command": command, "versions": versions(), "device": str(device()),
            "cpu": cpu_description(), "torch_threads": torch.get_num_threads(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {}, "status": "running"}


def stage_key(recipe: Recipe, index: int) -> str:
    """Identifies what stage `index` computes: teacher, data, seed and every stage's settings up to
    it. A finished stage is reused on --resume only while its key is unchanged."""
    source = recipe.source
    content = {key: source.get(key) for key in ("teacher", "data", "seed")}
    if "student" in source:  # only when present: runs without one keep their keys
        content["student"] = source["student"]
    # the settings as written: a new field with a default in a later version keeps old stages valid
    content["stages"] = [stage.name for stage in recipe.stages[:index]] + source["stages"][:index]
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_pipeline(recipe: Recipe, out: Path, work_dir: Path, resume: bool = False,
                 command: str = "robot-compress compress") -> ModelDir | None:
    """Every stage in order (finished ones are loaded from `work_dir` when resuming), then the
    final ONNX artefact becomes the model directory `out` with report.md and pareto.png.
    Under torchrun (compress/distributed.py) only rank 0 returns the model directory; the others None."""
    _seed(recipe.seed)  # a teacher or student without weights starts the same in every run, resumed ones too
    teacher = build_model(recipe.teacher)  # bad checkpoints fail here, before anything is written
    student = build_model(recipe.student, "student") if recipe.student else None
    try:
        if recipe.task == "detection":
            from robot_compress.compress.detection.task import load_detection_splits, prepare_teacher

            splits = load_detection_splits(recipe.data, recipe.seed)
            prepare_teacher(teacher, splits)
        else:
            splits = load_splits(recipe.data, recipe.seed)
    except (ValueError, FileNotFoundError) as exc:
        raise RecipeError(f"data: {exc}") from exc
    if student is not None:
        _check_student(student, teacher, splits.spec.input_size)
    # under torchrun rank 0 alone reads and writes the work directory and `out` (compress/distributed.py)
    run = distributed.on_main(lambda: _open_run(recipe, work_dir, resume, command))
    run["processes"] = distributed.world_size()
    console.print(f"[bold]{recipe.name}[/]: {len(splits.train)} training, {len(splits.val)} validation, "
                  f"{len(splits.eval)} evaluation images; device {device()}"
                  + (f", {distributed.world_size()} processes" if distributed.active() else ""))
    try:
        rows, files, final = _run_stages(recipe, run, teacher, student, splits, work_dir)
        distributed.on_main(lambda: _retime(rows, files, splits.spec.tensor_shape(), recipe.metrics))
    except KeyboardInterrupt:
        if distributed.is_main():
            run["status"] = "interrupted"
            _write_json(work_dir / RUN_FILE, run)
            console.print(f"[yellow]interrupted; finished stages and the last finished epoch are kept in "
                          f"{work_dir}. Continue with the same command plus --resume[/]")
        raise
    written = []
    distributed.on_main(lambda: written.append(_finish(recipe, run, splits, rows, final, out, work_dir)))
    return written[0] if written else None


def _finish(recipe: Recipe, run: dict, splits, rows, final: Artefact, out: Path, work_dir: Path) -> ModelDir:
    """The finished run's record, the model directory and the reports (rank 0 only)."""
    run["status"] = "finished"
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(work_dir / RUN_FILE, run)
    model_dir = _write_model(recipe, run, splits, rows, final, out)
    if recipe.task == "detection":
        notes = [f"teacher: yolox {recipe.teacher.arch} from {recipe.teacher.checkpoint}",
                 f"COCO mAP50-95 / mAP50 on {recipe.data.eval} ({rows[0][1]['eval_images']} images) with ONNX "
                 f"Runtime through the robot's letterbox; latency is ONNX Runtime CPU at batch 1 (uint8 input, "
                 f"decode and NMS in the graph)",
                 f"training: label-free distillation on {len(splits.train)} images of {recipe.data.train} with "
                 f"mosaic, random affine, flip and HSV augmentation ({len(splits.val)} held out: best epoch, "
                 f"export checks)",
                 "latencies: measured again at the end of the run with the artefacts taking turns",
                 f"recipe sha256 {recipe.digest}; command: {run['command']}"]
        for directory in (work_dir, out):
            write_report(directory, recipe.name, rows, rows[0][1]["map50_95"], notes)
        return model_dir
    notes = [f"teacher: {recipe.teacher.kind} {recipe.teacher.arch or recipe.teacher.path}"
             + (f"; student: {recipe.student.kind} {recipe.student.arch or recipe.student.path}, learning from it"
                if recipe.student else ""),
             f"top-1 on {recipe.data.eval} ({rows[0][1]['eval_images']} images) with ONNX Runtime and the "
             f"manifest's preprocessing; latency is ONNX Runtime CPU at batch 1",
             "latencies: measured again at the end of the run with the artefacts taking turns, so all "
             "see the same machine load (each stage's metrics.json keeps the figure from its own time)",
             "prune_unstructured keeps zeros in dense tensors: only gzip bytes shrink; "
             "weight_share's coded bytes assume b-bit indices + a float32 codebook per layer",
             f"recipe sha256 {recipe.digest}; command: {run['command']}"]
    for directory in (work_dir, out):
        write_report(directory, recipe.name, rows, rows[0][1]["top1"], notes)
    return model_dir


def _check_student(student: nn.Module, teacher: nn.Module, input_size: tuple[int, int]) -> None:
    """Distillation compares logits one to one: the student must answer with the teacher's classes."""
    example = torch.zeros(1, 3, *input_size)
    with torch.no_grad():
        shapes = {name: tuple(model(example).shape) for name, model in (("student", student), ("teacher", teacher))}
    if shapes["student"] != shapes["teacher"]:
        raise RecipeError(f"student: its output has shape {shapes['student']} but the teacher's has "
                          f"{shapes['teacher']}; set student.num_classes to the teacher's class count")


def _start_dir(work_dir: Path, role: str) -> Path:
    """Where a starting network (teacher, student) is exported and measured."""
    return work_dir / f"00_{role}"


def _measured_start(model: nn.Module, role: str, recipe: Recipe, splits, work_dir: Path) -> tuple[str, dict]:
    """The report's row for a starting network (teacher, student): exported and measured once per key."""
    directory = _start_dir(work_dir, role)
    directory.mkdir(exist_ok=True)
    metrics_file = directory / METRICS_FILE
    if not metrics_file.is_file() or json.loads(metrics_file.read_text()).get("stage_key") != stage_key(recipe, 0):
        ctx = Context(recipe, model, splits, directory, recipe.seed)
        diff = _export(model, directory / "model.onnx", ctx, 1e-3)
        metrics = _measure(recipe, model, directory / "model.onnx", splits)
        _write_json(metrics_file, {**metrics, "max_abs_diff": diff, "stage_key": stage_key(recipe, 0)})
    metrics = json.loads(metrics_file.read_text())
    console.print(f"{role} {score_text(metrics)}, {metrics['params']:,} parameters")
    return role, metrics


def _run_stages(recipe: Recipe, run: dict, teacher: nn.Module, student: nn.Module | None, splits, work_dir: Path):
    ctx = Context(recipe, teacher, splits, _start_dir(work_dir, "teacher"), recipe.seed)
    rows = distributed.on_main(lambda: _measured_starts(recipe, run, teacher, student, splits, work_dir))
    files = [_start_dir(work_dir, role) / "model.onnx" for role, _ in rows]  # one per row, in row order
    artefact = Artefact(copy.deepcopy(student if student is not None else teacher))
    for index, stage in enumerate(recipe.stages, start=1):
        stage_dir = work_dir / f"{index:02d}_{stage.name}"
        label = f"{index:02d}_{stage.name}"
        key = stage_key(recipe, index)
        finished = distributed.on_main(_finished_stage, stage_dir, label, key, run)
        if finished is not None:
            model, metrics = finished
            artefact = Artefact(model, onnx=stage_dir / "model.onnx" if stage.produces_onnx else None)
            rows.append((label, metrics))
            files.append(stage_dir / "model.onnx")
            console.print(f"stage {label}: done in a previous run, loaded")
            continue
        console.rule(f"stage {index}/{len(recipe.stages)}: {stage.name}")
        if distributed.is_main():
            stage_dir.mkdir(exist_ok=True)
        _seed(recipe.seed + index)
        start = time.time()
        # torch stages run on every rank (their training is split across them); ONNX stages read
        # rank 0's files and train nothing, so the other ranks keep the torch model and wait
        if distributed.is_main() or not stage.produces_onnx:
            artefact = runner(stage.name)(stage, artefact, Context(recipe, teacher, splits, stage_dir, recipe.seed))
        seconds = time.time() - start
        onnx = artefact.onnx or stage_dir / "model.onnx"
        metrics = distributed.on_main(_record_stage, recipe, run, artefact, onnx, ctx, splits, label, key,
                                      seconds, work_dir)
        # every rank continues from rank 0's model (pruning on several ranks could differ in the last bit)
        artefact.model = distributed.broadcast(artefact.model)
        rows.append((label, metrics))
        files.append(onnx)
    return rows, files, artefact


def _measured_starts(recipe: Recipe, run: dict, teacher: nn.Module, student: nn.Module | None, splits,
                     work_dir: Path) -> list[tuple[str, dict]]:
    """The teacher's (and student's) report rows; also clears the directories of stages the recipe
    no longer has."""
    rows = [_measured_start(teacher, "teacher", recipe, splits, work_dir)]
    if student is not None:
        rows.append(_measured_start(student, "student", recipe, splits, work_dir))
    start_dirs = {_start_dir(work_dir, role) for role, _ in rows}
    expected = {f"{index:02d}_{stage.name}" for index, stage in enumerate(recipe.stages, start=1)}
    for stale in sorted(work_dir.glob("[0-9][0-9]_*")):
        if stale.name not in expected and stale not in start_dirs:  # the recipe's stage list changed
            shutil.rmtree(stale)
            run["stages"].pop(stale.name, None)
    return rows


def _finished_stage(stage_dir: Path, label: str, key: str, run: dict) -> tuple[nn.Module, dict] | None:
    """(model, metrics) of a stage finished with the same settings; a changed one's directory goes."""
    metrics_file = stage_dir / METRICS_FILE
    if metrics_file.is_file() and json.loads(metrics_file.read_text()).get("stage_key") != key:
        console.print(f"stage {label}: settings changed, running it again")
        shutil.rmtree(stage_dir)
        run["stages"].pop(label, None)
    if not metrics_file.is_file():
        return None
    return (torch.load(stage_dir / "model.pt", map_location="cpu", weights_only=False),
            json.loads(metrics_file.read_text()))


def _record_stage(recipe: Recipe, run: dict, artefact: Artefact, onnx: Path, ctx: Context, splits, label: str,
                  key: str, seconds: float, work_dir: Path) -> dict:
    """Save a finished stage's model, export and measure it, and write its metrics (rank 0 only)."""
    stage_dir = work_dir / label
    torch.save(artefact.model, stage_dir / "model.pt")
    if artefact.onnx is None:
        artefact.info["max_abs_diff"] = _export(artefact.model, onnx, ctx, ExportOnnx().max_abs_diff)
    metrics = {**_measure(recipe, artefact.model, onnx, splits),
               **artefact.info, "seconds": seconds, "stage_key": key}
    _write_json(stage_dir / METRICS_FILE, metrics)
    run["stages"][label] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_json(work_dir / RUN_FILE, run)
    console.print(f"stage {label}: {score_text(metrics)}, {metrics['params']:,} parameters, "
                  f"{metrics['bytes']:,} bytes, {seconds:.0f} s")
    return metrics


def _export(model: nn.Module, path: Path, ctx: Context, bound: float) -> float:
    """The task's checked export: the classifier graph, or the detection contract's graph."""
    if ctx.recipe.task == "detection":
        from robot_compress.compress.detection.task import export_checked_detector

        return export_checked_detector(model, path, ctx.splits)
    return export_checked(model, path, ctx, ExportOnnx().check_images, bound)


def _measure(recipe: Recipe, model: nn.Module, onnx: Path, splits) -> dict[str, Any]:
    """Task-aware metrics: top-1 for a classifier, COCO mAP for a detector, plus size and latency."""
    if recipe.task == "detection":
        from robot_compress.compress.detection.task import measure_detector

        return measure_detector(model, onnx, splits, recipe.metrics)
    return measure(model, onnx, splits.eval, splits.spec, recipe.metrics)


def _retime(rows: list[tuple[str, dict]], files: list[Path], input_shape: tuple[int, ...], config: MetricsConfig) -> None:
    """Replace the rows' latencies by one interleaved measurement of their ONNX files: a stage
    timed while training ran elsewhere on the machine is not comparable with one timed at rest."""
    for threads in config.latency_threads:
        timings = interleaved_latency_ms(files, input_shape, threads, config.latency_warmup, config.latency_runs)
        for (_, metrics), timing in zip(rows, timings, strict=True):
            metrics[f"latency_ms_{threads}t"] = timing


def _write_model(recipe: Recipe, run: dict, splits, rows, final: Artefact, out: Path) -> ModelDir:
    from robot_compress.compress.cifar_resnet import WEIGHTS_LICENSE

    if recipe.task == "detection":
        return _write_detector(recipe, run, splits, rows, final, out)

    teacher_metrics, final_metrics = rows[0][1], rows[-1][1]
    summary = {k: v for k, v in final_metrics.items() if k != "history"}
    summary.update({"top1_eval_data": f"{Path(recipe.data.eval).name} ({final_metrics['eval_images']} images)",
                    "teacher_top1": teacher_metrics["top1"], "teacher_params": teacher_metrics["params"],
                    "params_removed_vs_teacher": 1 - final_metrics["params"] / teacher_metrics["params"],
                    "stages": {label: {k: v for k, v in m.items() if k != "history"} for label, m in rows}})
    num_classes = len(splits.train.label_names)
    manifest = Manifest(
        name=out.name,
        labels=list(splits.train.label_names),
        input=TensorSpec(name="input", dtype="float32", shape=(3, *splits.spec.input_size)),
        output=TensorSpec(name="logits", dtype="float32", shape=(num_classes,)),
        preprocessing=splits.spec,
        source={**{role: {"kind": config.kind, "arch": config.arch, "checkpoint": config.checkpoint, "path": config.path}
                   for role, config in (("teacher", recipe.teacher), ("student", recipe.student)) if config},
                "training_data": recipe.data.train,
                "validation": f"{recipe.data.val_size} images of the training data, held out by seed {recipe.seed}"},
        license=WEIGHTS_LICENSE if recipe.teacher.kind == "cifar_resnet" and recipe.teacher.checkpoint else "",
        recipe=recipe.source,
        metrics=summary,
        created={key: run[key] for key in ("command", "recipe_sha256", "seed", "versions", "device", "cpu",
                                           "torch_threads", "started", "finished", "stages")},
    )
    return write_model_dir(out, manifest, final.onnx)


def _write_detector(recipe: Recipe, run: dict, splits, rows, final: Artefact, out: Path) -> ModelDir:
    """The detection contract's model directory (as convert-detector writes it), with the run's metrics."""
    from robot_compress.compress.detection.task import manifest_fields
    from robot_compress.runtime.model_contract import sha256_of

    teacher_metrics, final_metrics = rows[0][1], rows[-1][1]
    summary = {k: v for k, v in final_metrics.items() if k != "history"}
    summary.update({"map_eval_data": f"{recipe.data.eval} ({final_metrics['eval_images']} images)",
                    "teacher_map50_95": teacher_metrics["map50_95"], "teacher_map50": teacher_metrics["map50"],
                    "teacher_params": teacher_metrics["params"],
                    "params_removed_vs_teacher": 1 - final_metrics["params"] / teacher_metrics["params"],
                    "stages": {label: {k: v for k, v in m.items() if k != "history"} for label, m in rows}})
    manifest = Manifest(
        name=out.name,
        **manifest_fields(splits),
        source={"model": recipe.teacher.arch, "weights": Path(recipe.teacher.checkpoint).name,
                "weights_sha256": sha256_of(Path(recipe.teacher.checkpoint)),
                "training_data": f"{recipe.data.train} ({len(splits.train)} images, label-free distillation)",
                "validation": f"{len(splits.val)} images of the training data, held out by seed {recipe.seed}"},
        license="Apache-2.0",
        recipe=recipe.source,
        metrics=summary,
        created={key: run[key] for key in ("command", "recipe_sha256", "seed", "versions", "device", "cpu",
                                           "torch_threads", "started", "finished", "stages")},
    )
    return write_model_dir(out, manifest, final.onnx)
