"""`robot-compress demo`: edge server, fault proxy, perception_node, sim_camera and a recorder on
this machine's loopback, a scripted link failure, a live view, and a summary with a timeline PNG.

The run itself is `faults.experiment.ScenarioRun` (the same code the fault suite runs), on a
loopback testbed so it needs no root; the link faults come from the fault proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robot_compress.demo.live_view import DemoState

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cifar10" / "test_dev.npz"
ROBOT_MODELS = ("robot_balanced", "cifar10_resnet20")  # first one present is the default
DETECTION_RATE_HZ = 5.0  # faults.experiment.DETECTION_RATE_HZ, kept here for --help without imports


def default_local_model() -> Path:
    return next((REPO / "models" / n for n in ROBOT_MODELS if (REPO / "models" / n).is_dir()),
                REPO / "models" / ROBOT_MODELS[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=45.0,
                        help="seconds of camera stream (default 45: 10 s black hole, recovery, flapping)")
    parser.add_argument("--task", choices=("classification", "detection"), default="classification",
                        help="'detection': 640x480 frames of coco/val_dev photos with their boxes (with --world "
                             "turtlebot3: the simulated robot patrolling past boards showing them, scored against "
                             "the boxes sim_world publishes per frame), robot_yolox_nano_320 on the robot, "
                             "coco_yolox_nano_640 on the edge, mAP per backend (needs pycocotools)")
    parser.add_argument("--rate-hz", type=float, default=None,
                        help=f"camera rate (default 15; {DETECTION_RATE_HZ:g} with --task detection)")
    parser.add_argument("--no-fault", action="store_true", help="run without injected link failures")
    parser.add_argument("--edge-url", help="HOST:PORT of a running edge server or Triton (OIP v2 gRPC); "
                        "the demo then starts no edge server of its own")
    parser.add_argument("--world", choices=("dataset", "turtlebot3"), default="dataset",
                        help="camera: 'dataset' (sim_camera streams --source) or 'turtlebot3' (the MuJoCo simulated "
                             "TurtleBot3's camera looking at --source's pictures on boards; needs the `sim` extra)")
    parser.add_argument("--source", type=Path, default=None,
                        help="frames for sim_camera: CIFAR-10 .npz, image folder, COCO folder or video (default: "
                             "../shared/data/cifar10/test_dev.npz; ../shared/data/coco/val_dev with --task detection)")
    parser.add_argument("--local-model", type=Path, default=None,
                        help=f"on-robot model directory (default: the first of models/{{{','.join(ROBOT_MODELS)}}})")
    parser.add_argument("--edge-model", type=Path, default=None,
                        help="edge model directory (its name is what the edge serves; default models/cifar10_resnet56, "
                             "models/coco_yolox_nano_640 with --task detection)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default runs/demo-<time>)")
    parser.add_argument("--plain", action="store_true", help="plain log lines instead of the live view "
                        "(the default when stdout is not a terminal)")


def link_schedule(duration_s: float, no_fault: bool):
    """A 10 s black hole (shorter for short runs), recovery, then flapping; all inside the run."""
    from robot_compress.faults.schedule import blackhole_then_flap

    if no_fault:
        return []
    start = min(5.0, 0.12 * duration_s)
    blackhole = min(10.0, 0.25 * duration_s)
    recover = min(8.0, 0.18 * duration_s)
    flap = min(12.0, 0.25 * duration_s)
    return blackhole_then_flap(start_s=start, blackhole_s=blackhole, recover_s=recover, flap_s=flap)


def run(args: argparse.Namespace) -> int:
    from robot_compress.demo.loopback import LoopbackBed
    from robot_compress.faults.experiment import (
        DETECTION_EDGE_MODEL,
        DETECTION_LOCAL_MODEL,
        DETECTION_NODE_PARAMS,
        DETECTION_SOURCE,
        NODE_PARAMS,
        RunConfig,
        ScenarioRun,
    )
    from robot_compress.faults.scenarios import FLAPPING, Scenario, Step
    from robot_compress.runtime.processes import free_port

    detection = args.task == "detection"
    local_model = args.local_model or (DETECTION_LOCAL_MODEL if detection else default_local_model())
    args.edge_model = args.edge_model or (DETECTION_EDGE_MODEL if detection else REPO / "models" / "cifar10_resnet56")
    args.source = args.source or (DETECTION_SOURCE if detection else DEFAULT_SOURCE)
    args.rate_hz = args.rate_hz or (DETECTION_RATE_HZ if detection else 15.0)
    for what, path in (("--source", args.source), ("--local-model", local_model), ("--edge-model", args.edge_model)):
        if not path.exists():
            print(f"error: {what} {path} does not exist", file=sys.stderr)
            return 2
    if args.world != "dataset":
        from robot_compress.sim.rendering import RenderingUnavailable, choose_backend, probe

        # Checked here, in a second or two, rather than when sim_world's first frame never comes.
        given, problem = os.environ.get("MUJOCO_GL"), None
        try:
            if given:
                problem = probe(given)
            else:
                choose_backend()  # sets MUJOCO_GL, which sim_world inherits
        except RenderingUnavailable as exc:
            problem = str(exc)
        if problem:
            print(f"error: --world {args.world} cannot render here: {problem} (MUJOCO_GL={os.environ.get('MUJOCO_GL')}; "
                  "or run the demo on dataset images: --world dataset)", file=sys.stderr)
            return 2
    out = args.out or REPO / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    changes = link_schedule(args.duration, args.no_fault)
    scenario = Scenario(
        name="demo", fault_class=FLAPPING, duration_s=args.duration, via_proxy=True,
        description="no injected fault" if args.no_fault else "black hole, recovery, then flapping (fault proxy)",
        steps=tuple(Step(c.at_s, "proxy", {"mode": c.mode}) for c in changes))
    world = args.world if args.world != "dataset" else None
    config = RunConfig(source=args.source, rate_hz=args.rate_hz,
                       image_size=(320, 240) if world and not detection else (640, 480), local_model=local_model,
                       edge_model=args.edge_model, edge_port=free_port(), proxy_port=free_port(),
                       external_edge=args.edge_url, world=world, world_task=args.task, camera_loop=detection,
                       node_params={**NODE_PARAMS, **(DETECTION_NODE_PARAMS if detection else {})})
    live = not args.plain and sys.stdout.isatty()
    print(f"robot-compress demo: edge {args.edge_url or args.edge_model.name + ' (local edge server)'}, "
          f"robot model {local_model.name}, camera {'simulated ' + args.world if world else 'dataset'}, "
          f"{args.rate_hz:g} Hz for {args.duration:g} s, output {out}")
    with LoopbackBed() as bed:
        runner = ScenarioRun(scenario, config, bed, out)
        outcome: dict = {}
        thread = threading.Thread(target=_run_into, args=(runner, outcome), daemon=True)
        thread.start()
        try:
            state = _watch(runner, thread, live, changes)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping every process", file=sys.stderr)
            bed.close()
            thread.join(timeout=30)  # its next step fails on the closed testbed
            return 130
    if "error" in outcome:
        print(f"error: the demo run failed: {outcome['error']} (logs in {out})", file=sys.stderr)
        return 1
    return _summarise(outcome["record"], state, out, bed.started, detection)


def _run_into(runner, outcome: dict) -> None:
    try:
        outcome["record"] = runner.run()
    except Exception as exc:  # reported by the main thread, with the log directory
        outcome["error"] = f"{type(exc).__name__}: {exc}"


def _watch(runner, thread: threading.Thread, live: bool, changes) -> DemoState:
    """Follow the run's records until it ends, drawing the live view (or log lines)."""
    from rich.console import Console
    from rich.live import Live

    from robot_compress.demo.live_view import DemoState, plain_line, render
    from robot_compress.faults.experiment import RecordTail

    tail = RecordTail(runner.tail.path)
    state = DemoState()
    started = False
    console = Console()
    title = "robot_compress demo: edge when the link is good, on-robot model when it is not"

    def step() -> None:
        nonlocal started
        for record in tail.poll():
            if record["kind"] == "image" and not started:
                started, state.t0 = True, record["t"]
            state.add(record)
        if started:
            while changes and time.time() >= state.t0 + changes[0].at_s:
                change = changes.pop(0)
                state.link_changed(change.mode, state.t0 + change.at_s)

    changes = list(changes)
    if live:
        with Live(render(state, title), console=console, refresh_per_second=4) as view:
            while thread.is_alive():
                step()
                view.update(render(state, title))
                time.sleep(0.25)
            step()
            view.update(render(state, title))
    else:
        last_print, printed_log = 0.0, 0
        while thread.is_alive() or printed_log < len(state.log):
            step()
            for line in list(state.log)[printed_log:]:
                print(line, flush=True)
            printed_log = len(state.log)
            if started and time.time() - last_print >= 2.0:
                print(plain_line(state), flush=True)
                last_print = time.time()
            if not thread.is_alive():
                break
            time.sleep(0.25)
    thread.join()
    return state


def _summarise(record, state, out: Path, processes: list[dict], detection_task: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    from robot_compress.demo.contact_sheet import contact_sheet
    from robot_compress.faults.analysis import analyze, plot_timeline
    from robot_compress.faults.stall_watch import SIGNIFICANT_STALL_MS

    metrics = analyze(record)
    png = plot_timeline(record, metrics, out / "timeline.png")
    sheet, detection = None, None
    snapshots, sheet_path, source = record.directory / "snapshots", out / "contact_sheet.png", record.config.source
    if detection_task:
        from robot_compress.demo.contact_sheet import detection_contact_sheet, sim_detection_contact_sheet
        from robot_compress.faults.detection_map import run_map, sim_map
        from robot_compress.runtime.model_contract import ModelDir

        ids = ModelDir.load(record.config.local_model).manifest.detection.category_ids
        if record.config.world:
            sheet = sim_detection_contact_sheet(snapshots, record.records, sheet_path)
            detection = sim_map(record.records, ids)
        else:
            sheet = detection_contact_sheet(source, record.records, sheet_path)
            detection = run_map(record.records, source / "instances.json", ids)
    elif record.config.world:
        sheet = contact_sheet(snapshots, record.records, sheet_path)
    summary = {
        "metrics": metrics.to_dict(),
        **({"detection_map": detection} if detection else {}),
        "transitions": [t.__dict__ for t in state.transitions],
        "link_changes": [{"t": t, "action": a} for t, a in record.actions],
        "config": {"world": record.config.world or "dataset", "rate_hz": record.config.rate_hz, "duration_s": record.scenario.duration_s,
                   "local_model": str(record.config.local_model), "edge_model": str(record.config.edge_model),
                   "external_edge": record.config.external_edge},
        "processes": processes,  # all stopped before this was written
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = Table(title="demo summary", show_header=False)
    m = metrics
    rows = [
        ("frames published / answered", f"{m.frames_published} / {m.results}"),
        ("lost / duplicated / out of order", f"{m.lost} / {m.duplicated} / {m.out_of_order}"),
        ("served by edge / local", f"{m.backends.get('edge', 0)} / {m.backends.get('local', 0)}"),
        ("per-frame latency p50 / p99 / max (ms)", f"{_f(m.latency_p50_ms)} / {_f(m.latency_p99_ms)} / "
                                                   f"{_f(m.latency_max_ms)}"),
        *([("mAP50-95 all / edge / local (images)", " / ".join(
            f"{_f1(detection[k]['map50_95'])} ({detection[k]['images']})" for k in ("all", "edge", "local")))]
          if detection else [("top-1 all / edge / local", f"{_p(m.top1)} / {_p(m.top1_edge)} / {_p(m.top1_local)}")]),
        *([("ground-truth boxes in those frames", " / ".join(str(detection[k]["boxes"]) for k in ("all", "edge", "local")))]
          if detection and "boxes" in detection["all"] else []),
        ("transitions", str(len(state.transitions))),
        ("first local result after the fault (ms)", _f(m.first_local_after_fault_ms)),
        ("back to edge after the fault (ms)", _f(m.back_to_edge_ms)),
        ("worst stall of this machine (ms)", _f(m.machine_stall_max_ms)),
        ("timeline", str(png)),
        *([("annotated frames", str(sheet))] if sheet else []),
        ("all figures", str(out / "summary.json")),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    for t in state.transitions:
        print("  " + t.text(state.t0))
    if m.machine_stall_max_ms >= SIGNIFICANT_STALL_MS:
        print(f"note: this machine stood still for up to {m.machine_stall_max_ms:.0f} ms during the run (all "
              "processes at once: CPU steal or overload); latencies and any lost frames reflect that")
    return 0 if m.lost == 0 and m.duplicated == 0 else 1


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _f1(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
