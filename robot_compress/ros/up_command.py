"""`robot-compress up`: start the perception stack as plain subprocesses (no ROS launch needed).

Reads the same description as launch/perception.launch.py. Ctrl-C (or SIGTERM) stops every
child with SIGINT, then SIGTERM, then SIGKILL after a grace period. A child that exits 0 (the
camera after `--camera-count` frames) is done; one that fails stops the stack with its code.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time

from robot_compress.ros.launch_description import ARGUMENTS, dds_environment, describe
from robot_compress.runtime import processes

GRACE_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for argument in ARGUMENTS:
        parser.add_argument(f"--{argument.name.replace('_', '-')}", dest=argument.name, default=argument.default,
                            help=f"{argument.description} (default: {argument.default or 'empty'})")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")


def run(args: argparse.Namespace) -> int:
    try:
        specs = describe({a.name: getattr(args, a.name) for a in ARGUMENTS})
        commands = [(spec.name, spec.command()) for spec in specs]
    except (ValueError, FileNotFoundError) as exc:
        print(f"up: error: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, **dds_environment()}
    if args.dry_run:
        for name, command in commands:
            print(f"{name}: {shlex.join(command)}")
        return 0
    stop = []
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    children: dict[str, subprocess.Popen] = {}
    code = 0
    try:
        for name, command in commands:
            print(f"up: starting {name}: {shlex.join(command)}", flush=True)
            children[name] = processes.start(command, env=env)
        running = dict(children)
        while running and not stop:
            time.sleep(0.2)
            for name, child in list(running.items()):
                if child.poll() is None:
                    continue
                del running[name]
                print(f"up: {name} exited with {child.returncode}", flush=True)
                if child.returncode != 0:
                    code = child.returncode
                    stop.append(name)
    except KeyboardInterrupt:
        pass
    finally:
        processes.stop(children.values(), grace_s=GRACE_S)
        signal.signal(signal.SIGTERM, previous)
    return code

