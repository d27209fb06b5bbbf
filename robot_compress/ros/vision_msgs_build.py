"""Build the vision_msgs messages (interfaces/vision_msgs) where the ROS install has none.

The pip ROS wheels have no vision_msgs, so without this the node falls back to std_msgs/String
JSON. `make venv` runs `python -m robot_compress.ros.vision_msgs_build`: it generates and compiles
the Fast DDS C/C++ type support and Python bindings with the wheels' rosidl generators and CMake into
`build/vision_msgs/install`, then writes a .pth file into the venv so every Python of that venv
(the tests, `robot-compress up`, the node processes they start) imports `vision_msgs`. The
libraries find each other through their RUNPATH ($ORIGIN), and the Python bindings call the Fast DDS
type support directly, so no LD_LIBRARY_PATH is needed.

Re-running is fast: nothing is rebuilt while the sources, this file and the toolchain are unchanged.
Without a toolchain (cmake, a C/C++ compiler, the rosidl/ament_cmake wheels) it says what is
missing and exits 0: the product keeps working on the JSON messages. A compile that fails with the
toolchain present exits 1, since that is a bug to fix. `build/vision_msgs/status.json` keeps the
outcome for `robot-compress doctor`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "interfaces" / "vision_msgs"
OUT = REPO / "build" / "vision_msgs"
INSTALL = OUT / "install"
STATUS = OUT / "status.json"
PTH_NAME = "robot_compress_vision_msgs.pth"
# What the CMake configure step finds through the venv prefix (the ros-jazzy-* build wheels).
NEEDED_CMAKE_PACKAGES = ("ament_cmake", "rosidl_default_generators", "std_msgs", "geometry_msgs")


def python_dir(prefix: Path = INSTALL) -> Path:
    """Where the install puts the `vision_msgs` Python package."""
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def read_status() -> dict | None:
    """The last build's outcome ({"ok", "reason", ...}), or None where it never ran here."""
    try:
        return json.loads(STATUS.read_text())
    except (OSError, ValueError):
        return None


def missing_toolchain(prefix: Path) -> list[str]:
    """What a build here lacks, in words; empty when everything is there."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        missing.append("a C compiler (cc/gcc)")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++/g++)")
    for package in NEEDED_CMAKE_PACKAGES:
        if not (prefix / "share" / package / "cmake").is_dir():
            missing.append(f"{package} CMake config under {prefix}/share (pip install -e '.[msgbuild]')")
    try:
        import catkin_pkg  # noqa: F401  (ament_cmake parses package.xml with it)
    except ImportError:
        missing.append("the catkin_pkg Python package (pip install -e '.[msgbuild]')")
    return missing


def fingerprint(prefix: Path) -> str:
    """Changes whenever a rebuild is needed: the message sources, this file, Python, the prefix."""
    digest = hashlib.sha256()
    for path in sorted(p for p in [*SOURCE.rglob("*"), Path(__file__)] if p.is_file()):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    digest.update(f"{sys.version}\0{prefix.resolve()}\0{INSTALL.resolve()}".encode())
    return digest.hexdigest()


def _write_status(ok: bool, reason: str, **extra) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    STATUS.write_text(json.dumps({"ok": ok, "reason": reason, **extra}, indent=2) + "\n")


def _run(command: list[str], log, env: dict[str, str]) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)


def build(prefix: Path, jobs: int) -> float:
    """Configure, compile and install into INSTALL; the seconds it took. Raises CalledProcessError."""
    cmake_dir = OUT / "cmake"
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(INSTALL, ignore_errors=True)
    env = dict(os.environ)
    # ament_cmake finds the rosidl type supports through the ament index of the venv prefix.
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    started = time.monotonic()
    with open(OUT / "build.log", "w") as log:
        _run(["cmake", "-S", str(SOURCE), "-B", str(cmake_dir), f"-DCMAKE_PREFIX_PATH={prefix}",
              f"-DCMAKE_INSTALL_PREFIX={INSTALL}", f"-DPython3_EXECUTABLE={sys.executable}",
              "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF",
              # The Python extensions sit in lib/pythonX.Y/site-packages/vision_msgs, the libraries in lib.
              "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..", "-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON",
              # One type support each, called directly: with several, rosidl dispatches at run time by
              # searching LD_LIBRARY_PATH for the library, which build/ is not on. Fast DDS is the RMW
              # the rclpy wheels ship.
              "-DSTATIC_ROSIDL_TYPESUPPORT_C=rosidl_typesupport_fastrtps_c",
              "-DSTATIC_ROSIDL_TYPESUPPORT_CPP=rosidl_typesupport_fastrtps_cpp"],
             log, env)
        _run(["cmake", "--build", str(cmake_dir), "--parallel", str(jobs)], log, env)
        _run(["cmake", "--install", str(cmake_dir)], log, env)
    return time.monotonic() - started


def write_pth(site_packages: Path) -> Path:
    """Put the built package on the venv's sys.path for every Python started from it."""
    path = site_packages / PTH_NAME
    path.write_text(f"{python_dir()}\n")
    return path


def import_check() -> str | None:
    """Import the built messages in a fresh Python; the error text, or None when they work."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(python_dir()), env.get("PYTHONPATH")) if p)
    code = ("from vision_msgs.msg import Detection2DArray, Classification\n"
            "from rclpy.serialization import serialize_message\n"
            "serialize_message(Detection2DArray()); serialize_message(Classification())\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="the ROS prefix with the rosidl/ament_cmake CMake configs (default: this venv)")
    parser.add_argument("--no-pth", action="store_true",
                        help="do not write the .pth file into this venv (put build/vision_msgs/install/lib/"
                             "pythonX.Y/site-packages on PYTHONPATH yourself)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    args = parser.parse_args(argv)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    prefix = args.prefix.resolve()

    stamp = fingerprint(prefix)
    status = read_status()
    if not args.force and status and status.get("ok") and status.get("fingerprint") == stamp \
            and (python_dir() / "vision_msgs" / "msg").is_dir():
        if not args.no_pth:
            write_pth(site_packages)
        print(f"vision_msgs: up to date in {INSTALL.relative_to(REPO)}")
        return 0

    missing = missing_toolchain(prefix)
    if missing:
        reason = "not built, missing: " + "; ".join(missing)
        _write_status(False, reason)
        print(f"vision_msgs: {reason}. The node publishes std_msgs/String JSON instead.", file=sys.stderr)
        return 0

    print(f"vision_msgs: building {SOURCE.relative_to(REPO)} into {INSTALL.relative_to(REPO)} ...", flush=True)
    try:
        seconds = build(prefix, args.jobs)
    except subprocess.CalledProcessError as exc:
        log = OUT / "build.log"
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        reason = f"build failed ({' '.join(exc.cmd[:2])} exited {exc.returncode}); log: {log}"
        _write_status(False, reason)
        print(f"{tail}\nvision_msgs: {reason}", file=sys.stderr)
        return 1
    error = import_check()
    if error:
        reason = f"built, but `from vision_msgs.msg import ...` fails: {error}"
        _write_status(False, reason)
        print(f"vision_msgs: {reason}", file=sys.stderr)
        return 1
    _write_status(True, "built", fingerprint=stamp, build_s=round(seconds, 1), python_path=str(python_dir()))
    where = "" if args.no_pth else f"; {write_pth(site_packages)} puts it on this venv's path"
    print(f"vision_msgs: built in {seconds:.0f} s{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
