"""ament_python package that also installs with plain `pip install -e .[extras]`."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "robot_compress"


def model_data_files() -> list[tuple[str, list[str]]]:
    """Every file under models/, kept in its directory so the Triton layout survives install."""
    by_dir: dict[str, list[str]] = {}
    for path in sorted(Path("models").rglob("*")):
        if path.is_file():
            by_dir.setdefault(str(path.parent), []).append(str(path))
    return [(f"share/{PACKAGE}/{d}", files) for d, files in by_dir.items()]


RUNTIME = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "onnxruntime>=1.17",
    "pyyaml>=6",
    "grpcio>=1.60",
    "protobuf>=4.21,<7",  # tritonclient's generated stubs need protobuf < 7
    "tritonclient[grpc]>=2.40",
    "rich>=13",
    "matplotlib>=3.7",
]

EXTRAS = {
    # Offline compression; install torch==2.13.0 (CPU wheel) first, see the Makefile.
    # torchvision: torchvision teachers; the registry's 0.28.0 needs compress/torchvision_compat.py on CPU torch.
    "compress": ["torch>=2.1", "torchvision>=0.16", "torch-pruning>=1.4", "onnx>=1.15", "tqdm>=4.60"],
    # ROS 2 Jazzy from the registry's wheels (a full ROS install provides these instead).
    "ros": [
        "ros-rclpy[fastrtps]==7.1.6",
        "ros-jazzy-sensor-msgs",
        "ros-jazzy-std-msgs",
        "ros-jazzy-diagnostic-msgs",
        "ros-jazzy-std-srvs",
    ],
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
    ],
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    zip_safe=True,
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "robot-compress = robot_compress.cli:main",
            "perception_node = robot_compress.ros.perception_node:main",
            "sim_camera = robot_compress.ros.sim_camera:main",
            "edge_server = robot_compress.runtime.edge_server:main",
        ],
    },
)
