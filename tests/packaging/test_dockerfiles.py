"""The Dockerfiles, checked without a Docker engine: what they COPY exists and survives .dockerignore,
their base images and commands are the ones the project promises, and no torch gets in."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from .dockerfiles import DOCKER, REPO, Dockerfile, DockerIgnore, console_scripts

DOCKERFILES = ["robot.Dockerfile", "edge.Dockerfile", "sim.Dockerfile"]


def parse(name: str) -> Dockerfile:
    path = DOCKER / name
    assert path.is_file(), f"docker/{name} is missing"
    return Dockerfile.parse(path)


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def constraints() -> dict[str, str]:
    pins = {}
    for line in requirement_lines(REPO / "requirements" / "constraints.txt"):
        name, _, version = line.partition("==")
        pins[normalize(name)] = version
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower().strip()


# --- every Dockerfile ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copied_file_exists_in_the_build_context_and_is_not_dockerignored(name):
    dockerfile = parse(name)
    ignore = DockerIgnore(REPO / ".dockerignore")
    copies = [c for c in dockerfile.copies() if "from" not in c.flags]
    assert copies, f"{name} copies nothing"
    problems = []
    for copy in copies:
        for source in copy.sources:
            assert not source.startswith(("/", "..")), f"{name}:{copy.line}: {source} is outside the context"
            matches = sorted(REPO.glob(source.rstrip("/"))) if any(ch in source for ch in "*?[") \
                else [REPO / source.rstrip("/")]
            existing = [m for m in matches if m.exists()]
            if not existing:
                problems.append(f"{name}:{copy.line}: COPY {source}: no such file or directory in the context")
                continue
            for match in existing:
                relative = match.relative_to(REPO).as_posix()
                if ignore.excluded(relative):
                    problems.append(f"{name}:{copy.line}: COPY {source}: {relative} is excluded by .dockerignore")
                elif match.is_dir():
                    files = [f for f in match.rglob("*") if f.is_file()
                             and not ignore.excluded(f.relative_to(REPO).as_posix())]
                    if not files:
                        problems.append(f"{name}:{copy.line}: COPY {source}: nothing left after .dockerignore")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_torch_is_installed(name):
    dockerfile = parse(name)
    text = dockerfile.run_text()
    for install in re.findall(r"pip[0-9.]*\"?\s+install[^&;\n]*", text):
        assert "torch" not in install, f"{name} installs torch: {install}"
        assert "[compress" not in install and ".[" not in install, f"{name} installs an extra: {install}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_script_exists_and_is_executable(name):
    dockerfile = parse(name)
    entry = dockerfile.all("ENTRYPOINT")
    if not entry:
        return
    program = entry[-1].exec_form()[0]
    source = dockerfile.container_path_source(program)
    assert source is not None and source.is_file(), f"{name}: ENTRYPOINT {program} is not COPYed from the context"
    copy = next(c for c in dockerfile.copies() if c.dest == program)
    assert copy.flags.get("chmod") == "755" or source.stat().st_mode & 0o111, f"{program} would not be executable"
    assert source.read_text().startswith("#!"), f"{source} has no shebang"


# --- robot ----------------------------------------------------------------------------------------

def test_robot_image_is_built_from_ros_jazzy_with_rosdep_and_colcon():
    robot = parse("robot.Dockerfile")
    assert robot.base_images()[0].startswith("ros:jazzy-"), robot.base_images()
    run = robot.run_text()
    assert "rosdep install --from-paths src" in run
    assert "colcon build --packages-select robot_compress" in run
    # vision_msgs and cv_bridge come from the distribution (through rosdep), and the build checks it
    assert "vision-msgs" in run and "cv-bridge" in run


def test_robot_image_default_command_is_ros2_launch_of_the_package_launch_file():
    robot = parse("robot.Dockerfile")
    assert robot.last("CMD").exec_form() == ["ros2", "launch", "robot_compress", "perception.launch.py"]
    launch_file = REPO / "launch" / "perception.launch.py"
    assert launch_file.is_file(), (
        "launch/perception.launch.py is missing: the robot image's default command launches it")


def test_robot_rosdep_skips_only_keys_that_pip_provides():
    robot = parse("robot.Dockerfile")
    skipped = re.search(r'--skip-keys\s+"([^"]+)"', robot.run_text())
    assert skipped, "robot.Dockerfile: rosdep install has no --skip-keys"
    package = ET.parse(REPO / "package.xml").getroot()
    keys = {e.text.strip() for e in package if e.tag.endswith("depend") and e.text}
    requirements = {normalize(r.split("==")[0].split("<")[0]) for r in
                    requirement_lines(DOCKER / "robot-requirements.txt")}
    provided_by = {"python3-onnxruntime-pip": "onnxruntime", "python3-grpcio": "grpcio"}
    for key in skipped.group(1).split():
        assert key in keys, f"rosdep skips {key}, which package.xml does not depend on"
        assert key in provided_by, f"rosdep skips {key}: add what installs it instead to this test and the image"
        assert provided_by[key] in requirements, f"{key} is skipped but docker/robot-requirements.txt lacks it"


def test_robot_requirements_are_the_projects_tested_pins_and_cover_the_robot_runtime():
    pins = constraints()
    lines = requirement_lines(DOCKER / "robot-requirements.txt")
    names = set()
    for line in lines:
        name = normalize(re.split(r"[=<>!~]", line, maxsplit=1)[0])
        names.add(name)
        assert name != "torch", "the robot image must not contain torch"
        if "==" in line:
            version = line.split("==", 1)[1]
            assert pins.get(name) == version, f"{line}: requirements/constraints.txt pins {name}=={pins.get(name)}"
    # the robot runtime (issue brief): onnxruntime, grpcio, protobuf<7, tritonclient[grpc], rich via pip;
    # numpy, opencv, pyyaml from the distribution (package.xml)
    assert {"onnxruntime", "grpcio", "protobuf", "tritonclient", "rich"} <= names
    assert any(line.startswith("tritonclient[grpc]") for line in lines)
    assert "numpy<2" in lines, "keep Ubuntu's numpy 1.x (cv_bridge is built against it)"
    assert "opencv-python-headless" not in names, "OpenCV comes from python3-opencv; a pip copy would shadow it"
    protobuf = next(line for line in lines if normalize(line.split("=")[0]) == "protobuf")
    assert int(protobuf.split("==")[1].split(".")[0]) < 7


def test_robot_image_copies_a_complete_robot_model():
    robot = parse("robot.Dockerfile")
    model = robot.args["ROBOT_MODEL"]
    directory = REPO / "models" / model
    assert (directory / "config.pbtxt").is_file() and (directory / "manifest.json").is_file(), directory
    assert list(directory.glob("*/model.onnx")), f"{directory} has no <version>/model.onnx"
    assert any(c.sources == [f"models/{model}/"] for c in robot.copies())


def test_robot_pythonpath_matches_the_venv_it_creates():
    robot = parse("robot.Dockerfile")
    venv = re.search(r'python3 -m venv --system-site-packages "\$\{RC_HOME\}/venv"', robot.run_text())
    assert venv, "robot.Dockerfile: expected a venv at ${RC_HOME}/venv"
    env = robot.env()
    assert env["PYTHONPATH"] == f"{env['RC_HOME']}/venv/lib/python3.12/site-packages"  # Ubuntu 24.04 = 3.12


# --- edge -----------------------------------------------------------------------------------------

def test_edge_image_is_slim_python_and_serves_what_it_copies_on_the_port_it_exposes():
    edge = parse("edge.Dockerfile")
    assert re.fullmatch(r"python:3\.1[0-9]-slim(-\w+)?", edge.base_images()[0]), edge.base_images()
    cmd = edge.last("CMD").exec_form()
    assert cmd[:2] == ["robot-compress", "edge-serve"]
    assert "robot-compress" in console_scripts()
    options = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    repository = options["--model-repository"]
    model = edge.args["EDGE_MODEL"]
    assert any(c.dest.rstrip("/") == f"{repository}/{model}" and c.sources == [f"models/{model}/"]
               for c in edge.copies()), f"edge.Dockerfile does not COPY models/{model}/ into {repository}"
    assert (REPO / "models" / model / "config.pbtxt").is_file()
    exposed = edge.last("EXPOSE").args.split()
    assert options["--port"] in exposed
    assert f"127.0.0.1:{options['--port']}" in edge.last("HEALTHCHECK").args
    assert options.get("--host") == "0.0.0.0", "inside a container the server must listen on all interfaces"


def test_edge_serve_accepts_the_image_command_line():
    """`robot-compress edge-serve` exists and parses exactly the options the edge image passes."""
    cmd = parse("edge.Dockerfile").last("CMD").exec_form()
    code = ("import sys; from robot_compress.cli import COMMANDS, build_parser\n"
            "assert 'edge-serve' in COMMANDS, 'robot-compress has no edge-serve command'\n"
            "args = build_parser('edge-serve').parse_args(sys.argv[1:])\n"
            "print(args.command, args.port)\n")
    done = subprocess.run([sys.executable, "-c", code, *cmd[1:]], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["edge-serve", "8001"]


# --- sim ------------------------------------------------------------------------------------------

def test_sim_image_runs_the_turtlebot3_waffle_world_launch_file_it_copies():
    sim = parse("sim.Dockerfile")
    assert sim.base_images()[0].startswith("ros:jazzy-")
    assert "ros-${ROS_DISTRO}-turtlebot3-gazebo" in sim.run_text()
    assert sim.env()["TURTLEBOT3_MODEL"] == "waffle"
    cmd = sim.last("CMD").exec_form()
    assert cmd[:2] == ["ros2", "launch"]
    source = sim.container_path_source(cmd[2])
    assert source == DOCKER / "launch" / "sim_world.launch.py", source


def test_set_camera_resolution_rewrites_camera_sensors_and_fails_without_one(tmp_path):
    sdf = tmp_path / "model.sdf"
    sdf.write_text(
        "<sdf version='1.8'><model name='m'><link name='l'>"
        "<sensor name='lidar' type='gpu_lidar'/>"
        "<sensor name='camera' type='camera'><camera><image><width>1920</width><height>1080</height>"
        "<format>R8G8B8</format></image></camera></sensor>"
        "</link></model></sdf>")
    script = DOCKER / "set_camera_resolution.py"
    done = subprocess.run([sys.executable, str(script), str(sdf), "640", "480"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image = ET.parse(sdf).getroot().find(".//sensor[@name='camera']/camera/image")
    assert (image.findtext("width"), image.findtext("height"), image.findtext("format")) == ("640", "480", "R8G8B8")

    sdf.write_text("<sdf version='1.8'><model name='m'><link name='l'/></model></sdf>")
    done = subprocess.run([sys.executable, str(script), str(sdf), "640", "480"], capture_output=True, text=True)
    assert done.returncode == 1 and "no camera sensor" in done.stderr


# --- .dockerignore --------------------------------------------------------------------------------

def test_dockerignore_keeps_the_context_small_and_matches_like_docker():
    ignore = DockerIgnore(REPO / ".dockerignore")
    for heavy in [".git", ".venv/bin/python", "runs/x/model.onnx", "robot_compress/__pycache__/cli.cpython-311.pyc",
                  "robot_compress.egg-info/PKG-INFO", "build/lib/x.py", "tests/conftest.py"]:
        assert ignore.excluded(heavy), heavy
    for needed in ["setup.py", "package.xml", "robot_compress/cli.py", "models/cifar10_resnet56/1/model.onnx",
                   "docker/robot-requirements.txt", "requirements/constraints.txt", "launch/perception.launch.py"]:
        assert not ignore.excluded(needed), needed


def test_images_carry_the_models_the_default_parameters_name():
    """The robot image's default command uses config/perception.yaml as it is, so the model it names
    must be the one the image installs; the edge image must serve the model the robot asks for."""
    params = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())["perception_node"]["ros__parameters"]
    robot_model = parse("robot.Dockerfile").args["ROBOT_MODEL"]
    assert Path(params["local_model"]).name == robot_model, (
        f"config/perception.yaml local_model {params['local_model']} but the robot image installs {robot_model}")
    assert parse("edge.Dockerfile").args["EDGE_MODEL"] == params["edge_model"]


# What the robot image provides for each top-level import of the robot-side code.
FROM_PIP = {"onnxruntime": "onnxruntime", "grpc": "grpcio", "google": "protobuf", "tritonclient": "tritonclient",
            "rich": "rich", "pydantic": "pydantic", "pydantic_core": "pydantic-core"}  # docker/robot-requirements.txt
FROM_ROSDEP = {"numpy": "python3-numpy", "cv2": "python3-opencv", "PIL": "python3-pil", "yaml": "python3-yaml",
               "rclpy": "rclpy",
               "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs", "diagnostic_msgs": "diagnostic_msgs",
               "std_srvs": "std_srvs", "vision_msgs": "vision_msgs", "cv_bridge": "cv_bridge",
               "geometry_msgs": "geometry_msgs", "nav_msgs": "nav_msgs", "tf2_msgs": "tf2_msgs"}  # package.xml
WITH_RCLPY = {"rcl_interfaces", "ament_index_python", "builtin_interfaces"}  # rclpy's own dependencies


def test_robot_image_provides_every_import_of_the_robot_side_code():
    """Every third-party module that robot_compress.runtime / .ros / the CLI import (at any depth,
    lazily or not) is installed in the robot image by pip or by rosdep; torch is none of them."""
    files = [*(REPO / "robot_compress" / "runtime").rglob("*.py"), *(REPO / "robot_compress" / "ros").rglob("*.py"),
             REPO / "robot_compress" / "cli.py", REPO / "robot_compress" / "__init__.py"]
    imports: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "robot_compress":
                    imports.setdefault(top, set()).add(path.relative_to(REPO).as_posix())
    assert "numpy" in imports and "onnxruntime" in imports, "the scan found no imports at all"
    assert "torch" not in imports, f"robot-side code imports torch: {sorted(imports['torch'])}"
    requirements = {normalize(re.split(r"[=<>!~]", r, maxsplit=1)[0])
                    for r in requirement_lines(DOCKER / "robot-requirements.txt")}
    package = ET.parse(REPO / "package.xml").getroot()
    rosdep_keys = {e.text.strip() for e in package if e.tag in ("depend", "exec_depend") and e.text}
    problems = []
    for top, users in sorted(imports.items()):
        if top in FROM_PIP:
            if FROM_PIP[top] not in requirements:
                problems.append(f"{top}: add {FROM_PIP[top]} to docker/robot-requirements.txt")
        elif top in FROM_ROSDEP:
            if FROM_ROSDEP[top] not in rosdep_keys:
                problems.append(f"{top}: add <exec_depend>{FROM_ROSDEP[top]}</exec_depend> to package.xml")
        elif top not in WITH_RCLPY:
            problems.append(f"{top} (imported by {sorted(users)}) is not installed in the robot image: add it to "
                            f"package.xml or docker/robot-requirements.txt, and to this test's tables")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["robot.Dockerfile", "sim.Dockerfile"])
def test_images_that_run_ros2_launch_stop_it_with_sigint(name):
    """ros2 launch shuts its nodes down on SIGINT only; docker stop's default SIGTERM ends launch at
    once and leaves the nodes to be killed."""
    image = parse(name)
    assert image.last("CMD").exec_form()[:2] == ["ros2", "launch"]
    assert image.last("STOPSIGNAL").args == "SIGINT", f"{name}: STOPSIGNAL SIGINT is missing"
