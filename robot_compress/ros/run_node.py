"""The `main()` of a node that publishes until it is done (its `done` flag) or stopped: the
simulated cameras. A start-up error it names is one line on stderr and exit status 2."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_until_done(make_node: Callable[[], Node], name: str, errors: tuple[type[Exception], ...],
                   args: list[str] | None = None) -> int:
    """Spin `make_node()` until its `done` is true; then report how many frames it `published`."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.2)  # let the last messages leave before the publishers go away
        node.get_logger().info(f"published {node.published} frames")
    except errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
