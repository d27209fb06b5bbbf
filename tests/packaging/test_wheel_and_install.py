"""The package builds as a wheel whose data files land where `ros2 launch` looks, a pip install of that
wheel puts an executable where `ros2 run` / `ros2 launch` look for each one the launch file names, and
a colcon-style install (what colcon's ament_python build runs) puts the console scripts themselves there.

Both build from a copy of the package sources in a temporary directory, so nothing is written into
the shared working tree."""

from __future__ import annotations

import ast
import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from .dockerfiles import REPO, console_scripts

PACKAGE = "robot_compress"
SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "package.xml", "resource", "libexec", "robot_compress",
           "launch", "config", "models"]
# What ros2 launch / ros2 run / ament_index need under the install prefix.
REQUIRED_SHARE = [
    f"share/ament_index/resource_index/packages/{PACKAGE}",
    f"share/{PACKAGE}/package.xml",
    f"share/{PACKAGE}/launch/perception.launch.py",
    f"share/{PACKAGE}/config/perception.yaml",
]


def model_files() -> list[str]:
    files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "models").rglob("*") if p.is_file())
    assert any(f.endswith("/model.onnx") for f in files), "models/ holds no model.onnx"
    return [f"share/{PACKAGE}/{f}" for f in files]


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif path.is_file():
            shutil.copy2(path, root / name)
    return root


@pytest.fixture(scope="module")
def wheel(source_copy, tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out),
         str(source_copy)], capture_output=True, text=True, timeout=180)
    hint = ("\n(setuptools < 70.1 needs the `wheel` package for bdist_wheel: pip install wheel / "
            "apt install python3-wheel)" if "invalid command 'bdist_wheel'" in done.stdout + done.stderr else "")
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}{hint}"
    wheels = list(out.glob(f"{PACKAGE}-*.whl"))
    assert len(wheels) == 1, wheels
    return zipfile.ZipFile(wheels[0])


@pytest.fixture(scope="module")
def colcon_install(source_copy, tmp_path_factory) -> Path:
    """The setuptools commands colcon's ament_python build runs (colcon-python-setup-py)."""
    build = tmp_path_factory.mktemp("build")
    prefix = tmp_path_factory.mktemp("install") / PACKAGE
    done = subprocess.run(
        [sys.executable, "setup.py", "egg_info", "--egg-base", str(build), "build", "--build-base",
         str(build / "build"), "install", "--prefix", str(prefix), "--record", str(build / "install.log"),
         "--single-version-externally-managed"],
        cwd=source_copy, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"setup.py install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return prefix


@pytest.fixture(scope="module")
def pip_prefix(wheel, tmp_path_factory) -> Path:
    """The wheel installed by pip into an empty prefix, as `pip install` into a ROS environment does."""
    prefix = tmp_path_factory.mktemp("pip") / "prefix"
    # --ignore-installed: without it pip first uninstalls the robot_compress of the environment
    # running the tests (the editable install), and every later test that starts a node fails.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-warn-script-location",
         "--ignore-installed", "--prefix", str(prefix), wheel.filename], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return prefix


def launched_executables() -> set[str]:
    """Every executable the launch description names, with all optional processes switched on."""
    from robot_compress.ros.launch_description import describe

    specs = describe({"camera": "true", "camera_source": "frames.npz", "edge_server": "true"})
    return {spec.executable for spec in specs}


def site_packages(prefix: Path) -> Path:
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return prefix / relative


# --- wheel ------------------------------------------------------------------------------------------

def test_wheel_data_files_land_under_share(wheel):
    names = set(wheel.namelist())
    data = f"{PACKAGE}-{_version(wheel)}.data/data/"
    missing = [p for p in REQUIRED_SHARE + model_files() if data + p not in names]
    assert not missing, f"the wheel lacks {missing}"
    launch_files = [n for n in names if n.startswith(data + f"share/{PACKAGE}/launch/")]
    assert all(n.endswith(".launch.py") for n in launch_files), launch_files


def test_wheel_declares_the_console_scripts_and_no_torch_at_runtime(wheel):
    dist_info = f"{PACKAGE}-{_version(wheel)}.dist-info/"
    entry_points = wheel.read(dist_info + "entry_points.txt").decode()
    for name in ("robot-compress", "perception_node", "sim_camera", "sim_world", "edge_server"):
        assert f"{name} = " in entry_points, f"{name} is not a console script of the wheel"
    metadata = email.message_from_bytes(wheel.read(dist_info + "METADATA"))
    runtime = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert runtime, "the wheel declares no runtime requirements"
    assert not [r for r in runtime if r.lower().startswith("torch")], runtime
    for required in ("onnxruntime", "grpcio", "tritonclient", "numpy"):
        assert any(r.lower().startswith(required) for r in runtime), f"{required} missing from {runtime}"


def _version(wheel: zipfile.ZipFile) -> str:
    return Path(wheel.filename).name.split("-")[1]


# --- pip install of the wheel ---------------------------------------------------------------------

def test_pip_install_has_what_ros2_launch_looks_for(pip_prefix):
    missing = [p for p in REQUIRED_SHARE + model_files() if not (pip_prefix / p).is_file()]
    assert not missing, f"the pip install lacks {missing}"
    assert sorted(p.name for p in (pip_prefix / "share" / PACKAGE / "config").iterdir()) == sorted(
        p.name for p in (REPO / "config").iterdir() if p.suffix in (".yaml", ".xml"))
    assert launched_executables() <= set(console_scripts()), launched_executables()
    lib = pip_prefix / "lib" / PACKAGE
    for name in console_scripts():
        assert (lib / name).is_file(), f"lib/{PACKAGE}/{name} missing: ros2 launch would fail with " \
                                       f"\"libexec directory ... does not exist\" or not find {name}"
        assert os.access(lib / name, os.X_OK), f"lib/{PACKAGE}/{name} is not executable"
        assert (pip_prefix / "bin" / name).is_file(), f"bin/{name} missing"


def _run_installed(pip_prefix: Path, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site_packages(pip_prefix)), "AMENT_PREFIX_PATH": str(pip_prefix),
           "ROS_DOMAIN_ID": "87", "RCUTILS_COLORIZED_OUTPUT": "0"}
    return subprocess.run([str(pip_prefix / "lib" / PACKAGE / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=90, cwd=tmp_path, env=env)


@pytest.mark.parametrize(("args", "expected_rc", "expected"), [
    (["robot-compress", "--help"], 0, "edge-serve"),
    (["edge_server", "--help"], 0, "--model-repository"),
    # ROS nodes have no --help: start each with a parameter it rejects, which proves the installed
    # code ran as far as reading its parameters, then stopped with its own error.
    (["perception_node", "--ros-args", "-p", "no_such_parameter:=1"], 2, "unknown parameter(s) ['no_such_parameter']"),
    (["sim_camera", "--ros-args", "-p", "no_such_parameter:=1"], 2, "unknown parameter(s) ['no_such_parameter']"),
])
def test_each_pip_installed_lib_executable_runs_the_installed_code(pip_prefix, tmp_path, args, expected_rc,
                                                                   expected):
    done = _run_installed(pip_prefix, args, tmp_path)
    assert done.returncode == expected_rc, f"{args}: rc {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert expected in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr[-2000:]


def test_lib_executable_without_bin_beside_it_runs_the_entry_point(pip_prefix, tmp_path):
    """Where the wrapper lands without the console script in ../../bin (a colcon symlink install
    links data files into lib/robot_compress too), it runs the entry point with python3 from PATH."""
    copy = tmp_path / "lib" / PACKAGE / "robot-compress"
    copy.parent.mkdir(parents=True)
    shutil.copy2(pip_prefix / "lib" / PACKAGE / "robot-compress", copy)
    env = {**os.environ, "PYTHONPATH": str(site_packages(pip_prefix)),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(copy), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0 and "edge-serve" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


# --- colcon-style install -----------------------------------------------------------------------------

def test_colcon_install_puts_executables_in_lib_package(colcon_install):
    lib = colcon_install / "lib" / PACKAGE
    for name in console_scripts():
        script = lib / name
        assert script.is_file(), f"{script.relative_to(colcon_install)} missing: ros2 run would not find {name}"
        assert os.access(script, os.X_OK), f"{script} is not executable"
        first_line = script.read_text().splitlines()[0]
        assert "python" in first_line, f"{script} starts {first_line!r}: not the console script (the pip wrapper?)"
    assert not (colcon_install / "bin").exists(), "scripts went to bin/, where ros2 run does not look"


def test_colcon_install_data_files_are_found_through_the_ament_index(colcon_install):
    missing = [p for p in REQUIRED_SHARE + model_files() if not (colcon_install / p).is_file()]
    assert not missing, f"the install lacks {missing}"
    # what ros2 launch / ros2 run do: find the package's prefix through AMENT_PREFIX_PATH
    code = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory\n"
            f"print(get_package_prefix('{PACKAGE}')); print(get_package_share_directory('{PACKAGE}'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "AMENT_PREFIX_PATH": str(colcon_install)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(colcon_install), str(colcon_install / "share" / PACKAGE)]


def test_colcon_installed_script_runs_from_the_install(colcon_install, tmp_path):
    site = site_packages(colcon_install)
    assert (site / PACKAGE / "__init__.py").is_file(), f"{PACKAGE} not installed into {site}"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([str(colcon_install / "lib" / PACKAGE / "robot-compress"), "--help"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "robot-compress" in done.stdout and "edge-serve" in done.stdout
    done = subprocess.run([sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.stdout.strip().startswith(str(site)), "the script did not use the installed copy"


@pytest.mark.parametrize("name", ["robot-compress", "perception_node", "sim_camera", "sim_world", "edge_server"])
def test_every_console_script_points_at_an_installed_function(colcon_install, name):
    target = console_scripts()[name]
    module, _, function = target.partition(":")
    path = site_packages(colcon_install) / Path(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{name} = {target}: {module} is not in the package (not written yet?)"
    tree = ast.parse(path.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert function in defined, f"{name} = {target}: {module} defines no {function}()"


def test_launch_defaults_point_into_the_colcon_install(colcon_install, tmp_path):
    """`ros2 launch robot_compress perception.launch.py` with no arguments (the robot image's CMD)
    passes the default params_file to the node, and the node resolves its default local_model: both
    must exist in an install, where there is no source tree next to the code."""
    code = textwrap.dedent("""\
        import json, os
        from robot_compress.ros.launch_description import DEFAULTS, describe
        from robot_compress.runtime.package_data import data_path
        import yaml
        node = next(s for s in describe({}) if s.name == "perception_node")
        exists = os.path.isfile(node.params_file)
        local_model = yaml.safe_load(open(node.params_file))["perception_node"]["ros__parameters"][
            "local_model"] if exists else "models/robot_balanced"
        print(json.dumps({"params_file": node.params_file, "exists": exists,
                          "model": str(data_path(local_model))}))
        """)
    env = {**os.environ, "PYTHONPATH": str(site_packages(colcon_install)), "AMENT_PREFIX_PATH": str(colcon_install)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    share = colcon_install / "share" / PACKAGE
    assert found["exists"] and found["params_file"].startswith(str(share)), (
        f"the launch file's default params_file {found['params_file']} is not in the install "
        f"({share}/config): robot_compress/ros/launch_description.py must find config/ through the ament "
        f"index when it is installed")
    assert found["model"].startswith(str(share / "models")), found["model"]
