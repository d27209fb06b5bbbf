"""The one `main()` of the package's nodes: start rclpy, build the node, spin it, and tear both down
again however the spinning ends (done, SIGINT/SIGTERM, a start-up error).

A start-up error the node names (`errors`) is one line on stderr and exit status 2, never a
traceback; being stopped is a normal end (status 0)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def run_node(make_node: Callable[[], N], name: str, errors: tuple[type[Exception], ...],
             args: list[str] | None = None, *, spin: Callable[[N], None] = rclpy.spin,
             close: Callable[[N], None] | None = None) -> int:
    """Spin `make_node()` with `spin` (by default until stopped); on the way out `close` it (the
    node's own resources, before rclpy's), destroy it and shut rclpy down."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        spin(node)
    except errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if close is not None:
                close(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def spin_until_done(node: Node) -> None:
    """The simulated cameras' spin: until the node's `done` is true (or rclpy stops), then report
    how many frames it `published`."""
    while rclpy.ok() and not node.done:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(0.2)  # let the last messages leave before the publishers go away
    node.get_logger().info(f"published {node.published} frames")
