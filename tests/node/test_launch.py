"""The shared process description, the launch file (without `launch` installed) and `robot-compress up`."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess

import psutil
import pytest

from robot_compress.ros.launch_description import ARGUMENTS, DEFAULTS, describe, find_executable
from robot_compress.runtime import processes as supervisor
from robot_compress.runtime.polling import wait_until
from tests.conftest import REPO, free_port

LAUNCH_FILE = REPO / "launch" / "perception.launch.py"


def test_default_is_the_node_alone_with_the_shipped_parameter_file():
    (node,) = describe()
    assert (node.name, node.executable, node.parameters) == ("perception_node", "perception_node", {})
    assert node.params_file == str(REPO / "config" / "perception.yaml")
    assert node.remappings == {"image": "/camera/image_raw", "image/compressed": "/camera/image_raw/compressed"}


def test_camera_and_edge_server_share_topic_and_port():
    server, node, camera = describe({"camera": "true", "camera_source": "data.npz", "edge_server": "true",
                                     "edge_port": "9100", "image_topic": "/front/image"})
    assert server.command()[1:] == ["edge-serve", "--model-repository", "models", "--host", "127.0.0.1",
                                    "--port", "9100"]
    assert node.parameters == {"edge_url": "127.0.0.1:9100"}
    assert camera.remappings == node.remappings and node.remappings["image"] == "/front/image"
    assert camera.parameters["source"] == "data.npz" and camera.parameters["wait_for_subscribers"] == 1


def test_edge_url_none_means_local_only_and_overrides_reach_the_command_line():
    (node,) = describe({"edge_url": "none", "local_model": "models/robot_small"})
    command = node.command()
    assert command[0] == find_executable("perception_node")
    assert command[1:4] == ["--ros-args", "-r", "__node:=perception_node"]
    assert "edge_url:=\"\"" in command and "local_model:=\"models/robot_small\"" in command


def test_edge_token_file_reaches_the_node_as_a_path_not_the_token():
    (node,) = describe({"edge_token_file": "/run/secrets/edge_token"})
    assert node.parameters == {"edge_token_file": "/run/secrets/edge_token"}
    assert not any("edge_token:=" in part for part in node.command())


@pytest.mark.parametrize("overrides, message", [
    ({"camera": "yes"}, "'camera' must be true or false"),
    ({"camera": "true"}, "'camera_source' is required"),
    ({"edge_server": "true", "edge_port": "eighty"}, "'edge_port' must be int"),
    ({"edge_ulr": "x"}, "unknown launch argument(s) ['edge_ulr']"),
])
def test_bad_arguments_are_named(overrides, message):
    with pytest.raises(ValueError) as info:
        describe(overrides)
    assert message in str(info.value)


def test_launch_file_loads_without_launch_installed():
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.generate_launch_description)
    if importlib.util.find_spec("launch") is None:
        with pytest.raises(ModuleNotFoundError, match="launch"):
            module.generate_launch_description()


def launch_actions(monkeypatch, overrides: dict[str, str]) -> tuple[dict[str, list], list]:
    """Runs the launch file against the FAKE launch modules (tests/node/fake_launch.py): the
    declared actions by type, and the processes its OpaqueFunction returns for these arguments."""
    from tests.node import fake_launch

    fake_launch.install(monkeypatch)
    spec = importlib.util.spec_from_file_location("perception_launch_fake", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (entities,) = module.generate_launch_description().args
    declared: dict[str, list] = {}
    for action in entities:
        declared.setdefault(type(action).__name__, []).append(action)
    defaults = {a.args[0]: a.kwargs["default_value"] for a in declared["DeclareLaunchArgument"]}
    (opaque,) = declared["OpaqueFunction"]
    return declared, opaque.kwargs["function"]({**defaults, **overrides})


def test_launch_file_starts_what_describe_says(monkeypatch):
    """The launch file's arguments, environment and actions are the shared description's: the same
    node names, executables, parameter files, parameters and remappings."""
    from robot_compress.ros.launch_description import dds_environment

    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)  # as in a user's shell (the tests set it)
    overrides = {"camera": "true", "camera_source": "data.npz", "edge_server": "true", "edge_port": "9100",
                 "image_topic": "/front/image", "local_model": "models/robot_small"}
    declared, processes = launch_actions(monkeypatch, overrides)
    assert [a.args[0] for a in declared["DeclareLaunchArgument"]] == [a.name for a in ARGUMENTS]
    assert dict(a.args for a in declared["SetEnvironmentVariable"]) == dds_environment()
    expected = describe(overrides)
    assert [type(p).__name__ for p in processes] == ["ExecuteProcess" if not s.ros_node else "Node" for s in expected]
    for process, spec in zip(processes, expected, strict=True):
        if not spec.ros_node:
            assert process.kwargs["cmd"] == spec.command() and process.kwargs["name"] == spec.name
            continue
        kwargs = process.kwargs
        assert (kwargs["package"], kwargs["executable"], kwargs["name"]) == ("robot_compress", spec.executable,
                                                                             spec.name)
        assert kwargs["parameters"] == [p for p in (spec.params_file,) if p] + [spec.parameters]
        assert dict(kwargs["remappings"]) == spec.remappings


def test_launch_file_refuses_a_bad_argument(monkeypatch):
    with pytest.raises(ValueError, match="'camera_source' is required"):
        launch_actions(monkeypatch, {"camera": "true"})


def test_up_arguments_mirror_the_launch_arguments():
    from robot_compress.cli import build_parser

    args = build_parser("up").parse_args(["up"])
    assert {a.name: getattr(args, a.name) for a in ARGUMENTS} == DEFAULTS


def test_up_dry_run_prints_every_process():
    done = subprocess.run([find_executable("robot-compress"), "up", "--dry-run", "--edge-server", "true",
                           "--camera", "true", "--camera-source", "x.npz"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["edge_server", "perception_node", "sim_camera"]


@pytest.mark.timeout(60)
def test_up_runs_the_stack_and_stops_it_cleanly_on_ctrl_c(listener, shared_data, tmp_path):
    command = [find_executable("robot-compress"), "up", "--edge-server", "true", "--edge-port", str(free_port()),
               "--camera", "true", "--camera-source", str(shared_data / "cifar10" / "test_dev.npz"),
               "--camera-rate-hz", "10", "--camera-count", "1000"]
    log = tmp_path / "up.log"
    # Its own session (as the supervisor starts every child), so the SIGINT below reaches only `up`,
    # as a terminal's Ctrl-C would reach it.
    up = supervisor.start(command, log, env=os.environ, cwd=REPO)
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: len(listener.snapshot("results")) >= 5, 30, "results from the stack",
                   detail=lambda: log.read_text()[-2000:])
        children = psutil.Process(up.pid).children()
        assert sorted(c.cmdline()[1].rsplit("/", 1)[-1] for c in children) == \
            ["perception_node", "robot-compress", "sim_camera"]
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, log.read_text()[-2000:]
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if up.poll() is None:
            children = children or psutil.Process(up.pid).children()
            supervisor.stop(up, signals=(signal.SIGKILL,))
        for child in children:  # each in its own session: killing `up` does not reach them
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def test_up_stops_with_the_code_of_a_failing_process(ros_domain_id):
    done = subprocess.run([find_executable("robot-compress"), "up", "--local-model", "/nonexistent/model"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "perception_node exited with 2" in done.stdout
    assert "model directory /nonexistent/model does not exist" in done.stderr
