"""`robot-compress doctor`: which parts can run here, and why not.

Exit code 0 when the robot-side runtime (ONNX Runtime, OpenCV, the model contract) can run;
ROS, torch and GPU are reported but optional, since each part of the product needs different ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass


@dataclass
class Check:
    part: str
    ok: bool
    detail: str
    needed_for: str
    required: bool = False


def _import_check(part: str, module: str, needed_for: str, required: bool = False, missing_hint: str = "") -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Check(part, False, f"{reason} ({missing_hint})" if missing_hint else reason, needed_for, required)
    return Check(part, True, getattr(mod, "__version__", "installed"), needed_for, required)


def vision_msgs_hint() -> str:
    """Why vision_msgs is missing: the last `make venv` build's reason, in a source checkout."""
    from robot_compress.ros.vision_msgs_build import read_status

    status = read_status()
    why = f"build/vision_msgs: {status['reason']}; " if status and not status.get("ok") else ""
    return (f"optional: results go out as std_msgs/String JSON instead; {why}install ros-jazzy-vision-msgs, "
            f"or build it with `python -m robot_compress.ros.vision_msgs_build` (needs cmake, a C/C++ compiler "
            f"and pip install -e '.[msgbuild]')")


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except Exception as exc:
        return Check("onnxruntime", False, str(exc), "local inference, edge server", required=True)
    return Check("onnxruntime", True, f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}",
                 "local inference, edge server", required=True)


def check_rclpy(timeout_s: float = 5.0) -> Check:
    """Import rclpy and send one message through the RMW, publisher to subscriber."""
    needed = "perception_node, sim_camera"
    try:
        import rclpy
        from rclpy.utilities import get_rmw_implementation_identifier
        from std_msgs.msg import String
    except Exception as exc:
        return Check("rclpy + RMW", False, f"rclpy not importable: {exc} (pip install -e .[ros], or source "
                     f"/opt/ros/jazzy/setup.bash)", needed)
    context = rclpy.Context()
    try:
        rclpy.init(context=context)
        node = rclpy.create_node(f"robot_compress_doctor_{os.getpid()}", context=context)
        received: list[str] = []
        topic = f"robot_compress_doctor_{os.getpid()}"
        node.create_subscription(String, topic, lambda m: received.append(m.data), 10)
        publisher = node.create_publisher(String, topic, 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            publisher.publish(String(data="ping"))
            executor.spin_once(timeout_sec=0.1)
        rmw = get_rmw_implementation_identifier()
        node.destroy_node()
    except Exception as exc:
        return Check("rclpy + RMW", False, f"rclpy imported but the RMW failed: {exc}", needed)
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
    if not received:
        return Check("rclpy + RMW", False, f"{rmw}: no message came back within {timeout_s:.0f} s "
                     f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}, multicast blocked?)", needed)
    return Check("rclpy + RMW", True, f"{rmw}: publish/subscribe round trip works "
                 f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})", needed)


def check_torchvision() -> Check:
    """In a subprocess: a broken torchvision build can abort the interpreter that imports it.
    Imported the way `compress` imports it (compress/torchvision_compat.py), so a CUDA build on CPU
    torch, usable for the classifiers, is reported as usable."""
    code = ("from robot_compress.compress.torchvision_compat import import_torchvision, schema_workaround_applied\n"
            "version = import_torchvision().__version__\n"
            "print(version + (' (a CUDA build on CPU torch: its classifiers work, its detection ops do not)'"
            " if schema_workaround_applied() else ''))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return Check("torchvision", True, proc.stdout.strip(), "torchvision teachers in `compress`")
    last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return Check("torchvision", False, last, "torchvision teachers in `compress`")


def check_rendering() -> Check:
    """Headless OpenGL for the MuJoCo simulation, each backend tried in a child process."""
    from robot_compress.sim.rendering import BACKENDS, INSTALL_HINT, MUJOCO_HINT, probe

    needed = "sim_world (MuJoCo TurtleBot3 simulation)"
    reasons = {backend: probe(backend) for backend in BACKENDS}
    working = [b for b, reason in reasons.items() if reason is None]
    if MUJOCO_HINT in reasons.values():
        return Check("headless rendering", False, MUJOCO_HINT, needed)
    if not working:
        return Check("headless rendering", False, "; ".join(f"{b}: {r}" for b, r in reasons.items()) +
                     f" ({INSTALL_HINT})", needed)
    detail = f"{working[0].upper()} (MUJOCO_GL={working[0]})"
    others = [f"{b}: {'works' if reasons[b] is None else reasons[b]}" for b in BACKENDS if b != working[0]]
    return Check("headless rendering", True, detail + (f"; {'; '.join(others)}" if others else ""), needed)


def check_gpu() -> Check:
    details = []
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        details.append(proc.stdout.strip() or proc.stderr.strip())
    try:
        import torch

        if torch.cuda.is_available():
            details.append(f"torch CUDA: {torch.cuda.get_device_name(0)}")
    except Exception:
        pass
    if details:
        return Check("GPU", True, "; ".join(d for d in details if d), "faster training in `compress`")
    return Check("GPU", False, "none found (training runs on the CPU)", "faster training in `compress`")


def check_cpu_int8() -> Check:
    """Informational: without an int8 dot-product unit, INT8 models may be slower than FP32 ones."""
    from robot_compress.runtime.cpu_info import cpu_name, int8_dot_products

    found = int8_dot_products()
    if found:
        return Check("CPU int8", True, f"{cpu_name()}: {', '.join(found)}", "fast INT8 robot models")
    return Check("CPU int8", False, f"{cpu_name()}: no VNNI/AMX/SDOT; INT8 may be slower than FP32 at narrow "
                 f"layers: compare with `benchmarks/compress_cifar10.py --shipped`, try `robot-compress "
                 f"align-channels`", "fast INT8 robot models")


def run_checks(with_ros: bool = True) -> list[Check]:
    checks = [
        Check("python", True, sys.version.split()[0], "everything", required=True),
        _import_check("numpy", "numpy", "everything", required=True),
        _import_check("opencv", "cv2", "preprocessing, image decoding", required=True),
        check_onnxruntime(),
        check_cpu_int8(),
        _import_check("tritonclient (OIP v2 stubs)", "tritonclient.grpc", "model contract, edge client/server",
                      required=True, missing_hint="pip install tritonclient[grpc]"),
    ]
    if with_ros:
        checks.append(check_rclpy())
    checks += [
        _import_check("vision_msgs", "vision_msgs.msg", "typed ~/classification, ~/detections, sim/ground_truth",
                      missing_hint=vision_msgs_hint()),
        _import_check("cv_bridge", "cv_bridge", "image conversion",
                      missing_hint="optional: the node's own numpy conversion is used instead"),
        _import_check("launch", "launch", "ros2 launch", missing_hint="optional: use `robot-compress up` instead"),
        _import_check("launch_ros", "launch_ros", "ros2 launch", missing_hint="optional: use `robot-compress up`"),
        _import_check("torch", "torch", "`compress`", missing_hint="pip install torch==2.13.0 then .[compress]"),
        _import_check("torch_pruning", "torch_pruning", "structured pruning in `compress`"),
        check_torchvision(),
        check_rendering(),
        check_gpu(),
    ]
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--no-ros", action="store_true", help="skip the ROS publish/subscribe check")


def run(args: argparse.Namespace) -> int:
    checks = run_checks(with_ros=not args.no_ros)
    robot_ok = all(c.ok for c in checks if c.required)
    if args.json:
        print(json.dumps({"robot_runtime_ok": robot_ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="robot-compress doctor")
        for column in ("part", "status", "detail", "needed for"):
            table.add_column(column, overflow="fold")
        for c in checks:
            status = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if c.required else "[yellow]no[/]")
            table.add_row(c.part, status, c.detail, c.needed_for)
        console = Console()
        console.print(table)
        console.print("robot-side runtime: " + ("[green]can run[/]" if robot_ok else "[red]cannot run[/]"))
    return 0 if robot_ok else 1
