"""The `robot-compress` command: one entry point, one module per subcommand.

Each subcommand module defines `add_arguments(parser)` and `run(args) -> int`, and keeps heavy
imports (torch, rclpy, grpc) inside `run`. Only the chosen subcommand's module is imported, so
`robot-compress --help` and the robot-side commands work without torch installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Keep in the order a new user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("robot_compress.doctor", "check which parts of robot_compress can run on this machine"),
    "classify": ("robot_compress.runtime.classify_command", "classify image files with a model directory"),
    "detect": ("robot_compress.runtime.detect_command", "detect objects in image files with a detection model directory"),
    "convert": ("robot_compress.compress.convert", "turn a pretrained CIFAR ResNet checkpoint into a model directory"),
    "convert-detector": ("robot_compress.compress.detection.convert_command",
                         "turn a YOLOX ONNX export into a detection model directory (decode + NMS in the graph)"),
    "compress": ("robot_compress.compress.command", "prune, distil and quantize a model with a recipe (recipes/*.yaml)"),
    "align-channels": ("robot_compress.compress.align_command",
                       "widen a model directory's pruned channel counts for faster CPU kernels (same answers)"),
    "edge-serve": ("robot_compress.edge.command", "serve a model repository over OIP v2 gRPC (Triton-compatible)"),
    "check-camera": ("robot_compress.ros.check_camera_command",
                     "measure what a camera topic delivers here: rate, lost frames, encoding, size, QoS"),
    "triton-repository": ("robot_compress.edge.triton_repository_command",
                          "write a model repository's twin for Triton's Python backend (no ONNX Runtime backend needed)"),
    "up": ("robot_compress.ros.up_command", "start the perception stack (node, optional camera and edge server) without ROS launch"),
    "demo": ("robot_compress.demo.command", "watch failover live: edge server, robot node, simulated camera, scripted link failure"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-compress",
        description="Compressed on-robot vision with edge failover for ROS 2. "
                    "Run `robot-compress COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
