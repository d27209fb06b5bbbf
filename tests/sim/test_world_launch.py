"""The launch description's simulated world: sim_world instead of sim_camera, and the perception stack
classifying what the simulated robot's camera sees, scored against the simulator's ground truth."""

from __future__ import annotations

import threading

import pytest

from robot_compress.ros.launch_description import describe
from robot_compress.runtime.polling import wait_until
from tests.node.conftest import processes, stamp_key  # noqa: F401  (fixture)


def test_world_turtlebot3_starts_sim_world_on_the_camera_topic():
    node, world = describe({"world": "turtlebot3", "image_topic": "/front/image", "world_rate_hz": "12"})
    assert (world.name, world.executable) == ("sim_world", "sim_world")
    assert world.parameters == {"mode": "cifar10", "rate_hz": 12.0, "width": 320, "height": 240}
    assert world.remappings == {"camera/image_raw": "/front/image"} and node.remappings["image"] == "/front/image"
    assert [s.name for s in describe({"world": "none"})] == ["perception_node"]


@pytest.mark.parametrize("overrides, message", [
    ({"world": "gazebo"}, "'world' must be 'none' or 'turtlebot3'"),
    ({"world": "turtlebot3", "camera": "true", "camera_source": "x.npz"}, "choose one"),
    ({"world": "turtlebot3", "world_mode": "kitti"}, "'world_mode' must be"),
    ({"world": "turtlebot3", "world_width": "wide"}, "'world_width' must be int"),
])
def test_bad_world_arguments_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        describe(overrides)


class Scores:
    """sim_world's ground truth and the node's results, joined by image stamp."""

    def __init__(self):
        from robot_compress.ros.messages import WORLD_TRUTH_JSON_TOPIC
        from robot_compress.ros.result_recorder import BackgroundNode, subscribe

        self.lock = threading.Lock()
        self.truth: dict = {}
        self.results: list[dict] = []
        self._ros = BackgroundNode("world_scores")
        subscribe(self._ros.node, self._on, truth_topic=f"/{WORLD_TRUTH_JSON_TOPIC}")
        self._ros.start()

    def _on(self, kind: str, fields: dict) -> None:
        with self.lock:
            if kind == "truth":
                self.truth[stamp_key(fields["stamp"])] = fields
            elif kind == "result":
                self.results.append(fields)

    def joined(self) -> list[tuple[dict, dict]]:
        with self.lock:
            return [(r, self.truth[stamp_key(r["stamp"])]) for r in self.results if stamp_key(r["stamp"]) in self.truth]

    def close(self):
        self._ros.close()


@pytest.fixture
def scores(ros_domain_id):
    watcher = Scores()
    yield watcher
    watcher.close()


def test_perception_node_classifies_the_simulated_camera(processes, scores):  # noqa: F811
    node, world = describe({"world": "turtlebot3", "edge_url": "none", "world_rate_hz": "10"})
    processes.start_spec(node)
    processes.start_spec(world)
    wait_until(lambda: len(scores.joined()) >= 60, 90, "60 classified frames joined to ground truth",
               detail=lambda: processes.output())
    joined = [(r, t) for r, t in scores.joined() if "class_id" in r]
    correct = sum(r["class_id"] == t["class_id"] for r, t in joined)
    # The board's picture through a 0.1 m-high camera, lighting and a 320x240 render: not the dataset's
    # pixels, but clearly the same picture (chance is 10 %).
    assert correct / len(joined) > 0.5, (correct, len(joined), joined[0])
