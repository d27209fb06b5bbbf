"""docker/compose.yaml, checked without a Docker engine: it parses, builds existing Dockerfiles with
build args they declare, mounts paths that exist, wires ports, networks and names consistently,
runs commands the images and setup.py provide, and its link service really cuts and restores."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from .dockerfiles import DOCKER, REPO, Dockerfile, console_scripts, declared_launch_arguments

COMPOSE = DOCKER / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE.is_file(), "docker/compose.yaml is missing"
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} with no variables set."""
    def repl(match: re.Match) -> str:
        return match.group(3) or ""

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", repl, value)


def dockerfile_of(service: dict) -> Dockerfile:
    build = service["build"]
    return Dockerfile.parse((DOCKER / build["context"]).resolve() / build["dockerfile"])


def container_ports(service: dict) -> list[tuple[str, str]]:
    pairs = []
    for port in service.get("ports", []):
        host, _, container = interpolate(str(port)).rpartition(":")
        pairs.append((host, container))
    return pairs


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"edge", "robot", "sim", "triton", "link"}
    # `docker compose up` starts edge, robot and sim; triton and link are opt-in profiles
    for name in ("edge", "robot", "sim"):
        assert "profiles" not in services[name], name
    assert services["triton"]["profiles"] == ["triton"]
    assert services["link"]["profiles"] == ["link"]


@pytest.mark.parametrize("name", ["edge", "robot", "sim"])
def test_builds_use_existing_dockerfiles_from_the_repository_root(compose, name):
    build = compose["services"][name]["build"]
    context = (DOCKER / build["context"]).resolve()
    assert context == REPO, f"{name}: build context {context} is not the repository root"
    dockerfile = context / build["dockerfile"]
    assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    parsed = Dockerfile.parse(dockerfile)
    for arg, value in build.get("args", {}).items():
        assert arg in parsed.args, f"{name}: build arg {arg} is not an ARG of {dockerfile.name}"
        if arg.endswith("_MODEL"):
            model = interpolate(str(value))
            assert (REPO / "models" / model / "config.pbtxt").is_file(), f"{name}: no model {model}"


def test_host_paths_of_volumes_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, target, *mode = str(volume).split(":")
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name}: volume source {source} does not exist"
            else:
                assert source == "/var/run/docker.sock", f"{name}: unexpected host path {source}"
            assert target.startswith("/"), f"{name}: volume target {target} is not absolute"
            assert mode in ([], ["ro"], ["rw"]), f"{name}: volume mode {mode}"


def test_ports_are_consistent_with_the_images_and_do_not_collide(compose):
    services = compose["services"]
    edge = services["edge"]
    edge_cmd = edge["command"]
    port = edge_cmd[edge_cmd.index("--port") + 1]
    assert edge_cmd[:2] == ["robot-compress", "edge-serve"]
    assert port in dockerfile_of(edge).last("EXPOSE").args.split()
    assert edge_cmd == dockerfile_of(edge).last("CMD").exec_form(), "edge command differs from the image's CMD"
    assert [c for _, c in container_ports(edge)] == [port]

    triton_cmd = services["triton"]["command"]
    assert f"--grpc-port={port}" in triton_cmd, "triton must serve gRPC on the same port as the edge"
    assert [c for _, c in container_ports(services["triton"])] == [port]

    host_ports = [h for s in services.values() for h, _ in container_ports(s)]
    assert len(host_ports) == len(set(host_ports)), f"host ports collide: {host_ports}"


def test_triton_serves_the_same_models_directory_unchanged(compose):
    triton = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", interpolate(triton["image"])), triton["image"]
    repository = next(a.split("=", 1)[1] for a in triton["command"] if a.startswith("--model-repository="))
    mounts = {v.split(":")[1]: v.split(":") for v in triton["volumes"]}
    source, _, *mode = mounts[repository]
    assert (DOCKER / source).resolve() == REPO / "models"
    assert mode == ["ro"], "Triton must not change the model repository"
    # what Triton will find there: config.pbtxt with a platform it has, and numbered versions
    for config in (REPO / "models").glob("*/config.pbtxt"):
        assert 'platform: "onnxruntime_onnx"' in config.read_text(), config
        assert list(config.parent.glob("[0-9]*/model.onnx")), f"{config.parent} has no <version>/model.onnx"


def test_triton_accepts_the_robot_clients_keepalive_pings(compose):
    """The edge client pings between calls; Triton's defaults (a ping at most every 5 min, 2 strikes)
    would close the connection with GOAWAY too_many_pings."""
    client = (REPO / "robot_compress" / "runtime" / "edge_client.py").read_text()
    keepalive = re.search(r"keepalive_s: float = ([0-9.]+)", client)
    assert keepalive, "edge_client.py: no keepalive_s default found"
    options = dict(a.split("=", 1) for a in compose["services"]["triton"]["command"] if a.startswith("--"))
    assert options["--grpc-keepalive-permit-without-calls"] == "1"
    assert int(options["--grpc-http2-min-recv-ping-interval-without-data"]) <= float(keepalive.group(1)) * 1000
    assert options["--grpc-http2-max-ping-strikes"] == "0"


def test_networks_split_the_ros_bus_from_the_edge_link(compose):
    services, networks = compose["services"], compose["networks"]
    for name, service in services.items():
        for network in service.get("networks", []):
            assert network in networks, f"{name}: network {network} is not declared"
    assert set(services["robot"]["networks"]) == {"ros", "edgelink"}
    assert services["edge"]["networks"] == ["edgelink"]
    assert services["triton"]["networks"] == ["edgelink"]
    assert services["sim"]["networks"] == ["ros"], "the sim must stay reachable when the edge link is cut"
    assert "depends_on" not in services["robot"], "the robot must start and run without the edge"


def test_link_service_targets_the_robot_on_the_edge_network(compose):
    services, networks = compose["services"], compose["networks"]
    link = services["link"]
    assert link["environment"]["LINK_NETWORK"] == networks["edgelink"]["name"]
    assert link["environment"]["LINK_CONTAINER"] == services["robot"]["container_name"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in link["volumes"]
    assert link["entrypoint"][0] == "/bin/sh" and link["entrypoint"][1] == "/link_flap.sh"
    assert interpolate(link["image"]).startswith("docker:")


def test_robot_reaches_the_edge_by_service_name_and_port(compose):
    services = compose["services"]
    host, _, port = launch_args(services["robot"])["edge_url"].rpartition(":")
    assert host in services and "edgelink" in services[host]["networks"], f"edge_url host {host}"
    edge_cmd = services["edge"]["command"]
    assert port == edge_cmd[edge_cmd.index("--port") + 1]


def launch_args(service: dict) -> dict[str, str]:
    return {k: interpolate(v) for k, v in (a.split(":=", 1) for a in service["command"] if ":=" in a)}


def test_robot_runs_the_package_launch_file_and_sim_a_launch_file_its_image_contains(compose):
    services = compose["services"]
    robot = services["robot"]["command"]
    assert robot[:4] == ["ros2", "launch", "robot_compress", "perception.launch.py"], robot
    assert (REPO / "launch" / "perception.launch.py").is_file(), (
        "launch/perception.launch.py is missing; the robot service launches it")
    sim = services["sim"]["command"]
    assert sim[:2] == ["ros2", "launch"], sim
    source = dockerfile_of(services["sim"]).container_path_source(sim[2])
    assert source == DOCKER / "launch" / "sim_world.launch.py", f"sim: {sim[2]} is not in the image ({source})"
    compile(source.read_text(), str(source), "exec")


@pytest.mark.parametrize("name", ["robot", "sim"])
def test_ros2_launch_services_stop_with_sigint_and_time_to_shut_down(compose, name):
    """docker stop sends SIGINT (all that ros2 launch shuts its nodes down on) and waits long enough
    for the nodes to finish before it kills them."""
    service = compose["services"][name]
    assert service["command"][:2] == ["ros2", "launch"]
    assert service.get("stop_signal") == "SIGINT"
    grace = service.get("stop_grace_period", "10s")
    assert grace.endswith("s") and int(grace[:-1]) >= 15, grace


def test_launch_arguments_passed_by_compose_are_declared(compose):
    """ros2 launch ignores unknown arguments silently, so a renamed one would go unnoticed."""
    declared = declared_launch_arguments(REPO / "launch" / "perception.launch.py")
    missing = sorted(set(launch_args(compose["services"]["robot"])) - declared)
    assert not missing, f"launch/perception.launch.py declares no argument(s) {missing}; it has {sorted(declared)}"


def test_robot_node_gets_the_sim_camera_the_edge_and_the_built_in_model(compose):
    """What perception.launch.py starts for the robot service's arguments (its process table is plain
    Python): one perception_node reading the Gazebo camera, asking the edge service, with the model
    that the robot image was built with."""
    from robot_compress.ros.launch_description import describe

    services = compose["services"]
    specs = describe(launch_args(services["robot"]))
    assert [s.name for s in specs] == ["perception_node"], "only the node runs in the robot container"
    node = specs[0]
    assert node.ros_node and node.executable in console_scripts(), f"{node.executable} is not a console script"
    # turtlebot3_gazebo bridges the Waffle camera to /camera/image_raw
    assert node.remappings["image"] == "/camera/image_raw"
    assert node.parameters["edge_url"] == "edge:8001"
    model = interpolate(services["robot"]["build"]["args"]["ROBOT_MODEL"])
    assert node.parameters["local_model"] == f"models/{model}"
    assert services["sim"]["environment"]["TURTLEBOT3_MODEL"] == "waffle"


def test_ros_environment_is_shared_by_robot_and_sim(compose):
    robot_env = compose["services"]["robot"]["environment"]
    sim_env = compose["services"]["sim"]["environment"]
    for key in ("ROS_DOMAIN_ID", "RMW_IMPLEMENTATION", "FASTDDS_BUILTIN_TRANSPORTS"):
        assert robot_env[key] == sim_env[key], key
    assert 0 <= int(interpolate(str(robot_env["ROS_DOMAIN_ID"]))) <= 232


# --- the link service's script, against a stand-in for the docker CLI ------------------------------

FAKE_DOCKER = textwrap.dedent("""\
    #!/bin/sh
    # Stand-in for the docker CLI: the robot's networks live in $STATE, calls go to $CALLS.
    echo "$*" >> "$CALLS"
    case "$1 $2" in
      "inspect --format") cat "$STATE" ;;
      "network disconnect") grep -vx "$3" "$STATE" > "$STATE.new" || true; mv "$STATE.new" "$STATE" ;;
      "network connect") echo "$3" >> "$STATE" ;;
      inspect*) : ;;
      *) echo "unexpected: $*" >&2; exit 3 ;;
    esac
    """)


@pytest.fixture
def fake_docker(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    state, calls = tmp_path / "state", tmp_path / "calls"
    state.write_text("rc_ros\nrc_edgelink\n")
    calls.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state), "CALLS": str(calls),
           "LINK_NETWORK": "rc_edgelink", "LINK_CONTAINER": "rc-robot", "DOWN_S": "0", "UP_S": "0"}

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(DOCKER / "link_flap.sh"), *args], env={**env, **extra_env},
                              capture_output=True, text=True, timeout=30)

    def network_calls() -> list[str]:
        return [c for c in calls.read_text().splitlines() if c.startswith("network")]

    return run, state, network_calls


def test_link_script_cuts_and_restores_the_robot_edge_network(fake_docker):
    run, state, network_calls = fake_docker
    done = run("cut")
    assert done.returncode == 0, done.stderr
    assert network_calls() == ["network disconnect rc_edgelink rc-robot"]
    assert state.read_text().split() == ["rc_ros"], "the ROS network must stay attached"
    assert run("status").stdout.strip() == "down"
    assert run("cut").returncode == 0 and len(network_calls()) == 1, "cutting twice must be a no-op"
    done = run("restore")
    assert done.returncode == 0, done.stderr
    assert network_calls()[-1] == "network connect rc_edgelink rc-robot"
    assert run("status").stdout.strip() == "up"


def test_link_script_flaps_a_given_number_of_cycles_and_ends_up(fake_docker):
    run, state, network_calls = fake_docker
    done = run("flap", CYCLES="2")
    assert done.returncode == 0, done.stderr
    assert network_calls() == ["network disconnect rc_edgelink rc-robot", "network connect rc_edgelink rc-robot"] * 2
    assert sorted(state.read_text().split()) == ["rc_edgelink", "rc_ros"]
    assert run("bogus").returncode == 2


def test_link_script_is_posix_sh():
    done = subprocess.run(["sh", "-n", str(DOCKER / "link_flap.sh")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(DOCKER / "link_flap.sh").read_text().startswith("#!/bin/sh\n")
