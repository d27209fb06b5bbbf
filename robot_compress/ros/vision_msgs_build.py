"""Build the vision_msgs messages (interfaces/vision_msgs) where the ROS install has none.

The pip ROS wheels have no vision_msgs, so without this the node falls back to std_msgs/String
JSON. `make venv` runs `python -m robot_compress.ros.vision_msgs_build`: CMake, with the rosidl
generators of the venv's ROS wheels, compiles the C/C++ type supports and the Python bindings in
`build/vision_msgs/cmake` and installs them into the venv the way a ROS wheel is installed
(lib/*.so, lib/pythonX.Y/site-packages/vision_msgs, share/vision_msgs). Every Python of the venv,
and every process it starts, then imports `vision_msgs`: the wheels' bootstrap puts <venv>/lib on
LD_LIBRARY_PATH, where rosidl looks up a message's type support libraries at run time.

Re-running is fast: nothing is rebuilt while the sources, this file and the toolchain are unchanged.
Without a toolchain (cmake, a C/C++ compiler, the rosidl/ament_cmake wheels) it says what is missing
and exits 0: the product keeps working on the JSON messages. A compile that fails with the toolchain
present exits 1, since that is a bug to fix. `build/vision_msgs/status.json` keeps the outcome for
`robot-compress doctor`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "interfaces" / "vision_msgs"
OUT = REPO / "build" / "vision_msgs"
STATUS = OUT / "status.json"
# What the CMake configure step finds through the venv prefix (the ros-jazzy-* build wheels).
NEEDED_CMAKE_PACKAGES = ("ament_cmake", "rosidl_default_generators", "std_msgs", "geometry_msgs")


def python_dir(prefix: Path) -> Path:
    """Where an install into `prefix` puts the `vision_msgs` Python package."""
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
    if importlib.util.find_spec("catkin_pkg") is None:  # ament_cmake parses package.xml with it
        missing.append("the catkin_pkg Python package (pip install -e '.[msgbuild]')")
    return missing


def fingerprint(prefix: Path, into: Path) -> str:
    """Changes whenever a rebuild is needed: the message sources, this file, Python, the prefixes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in SOURCE.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(SOURCE)).encode() + b"\0" + path.read_bytes())
    digest.update(Path(__file__).read_bytes())
    digest.update(f"{sys.version}\0{prefix}\0{into}".encode())
    return digest.hexdigest()


def _write_status(ok: bool, reason: str, **extra) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    STATUS.write_text(json.dumps({"ok": ok, "reason": reason, **extra}, indent=2) + "\n")


def _run(command: list[str], log, env: dict[str, str]) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)


def build(prefix: Path, into: Path, jobs: int) -> float:
    """Configure, compile and install into `into`; the seconds it took. Raises CalledProcessError."""
    cmake_dir = OUT / "cmake"
    shutil.rmtree(cmake_dir, ignore_errors=True)  # a fresh configure: no stale CMake cache
    OUT.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # ament_cmake finds the rosidl type supports through the ament index of the venv prefix.
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    started = time.monotonic()
    with open(OUT / "build.log", "w") as log:
        _run(["cmake", "-S", str(SOURCE), "-B", str(cmake_dir), f"-DCMAKE_PREFIX_PATH={prefix}",
              f"-DCMAKE_INSTALL_PREFIX={into}", f"-DPython3_EXECUTABLE={sys.executable}",
              "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF",
              # The Python extensions sit in lib/pythonX.Y/site-packages/vision_msgs, the libraries in lib.
              "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..", "-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON"],
             log, env)
        _run(["cmake", "--build", str(cmake_dir), "--parallel", str(jobs)], log, env)
        _run(["cmake", "--install", str(cmake_dir)], log, env)
    return time.monotonic() - started


def import_check(into: Path) -> str | None:
    """Use the installed messages in a fresh Python (a publisher of each, which needs every type
    support library); the error text, or None when they work."""
    env = dict(os.environ)
    for name, path in (("PYTHONPATH", python_dir(into)), ("LD_LIBRARY_PATH", into / "lib")):
        env[name] = os.pathsep.join(p for p in (str(path), env.get(name)) if p)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"], env["ROS_DOMAIN_ID"] = "LOCALHOST", str(100 + os.getpid() % 100)
    code = ("import rclpy\n"
            "from vision_msgs.msg import Classification, Detection2DArray\n"
            "rclpy.init()\n"
            "node = rclpy.create_node('vision_msgs_build_check')\n"
            "node.create_publisher(Detection2DArray, 'detections', 1)\n"
            "node.create_subscription(Classification, 'classification', print, 1)\n"
            "node.destroy_node()\n"
            "rclpy.shutdown()\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]


def provided_elsewhere(into: Path) -> str | None:
    """Where a vision_msgs this build did not install comes from (a sourced ROS install), or None."""
    spec = importlib.util.find_spec("vision_msgs")
    if spec is None or not spec.origin:
        return None
    origin = Path(spec.origin).resolve()
    return None if origin.is_relative_to(python_dir(into).resolve()) else str(origin.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="the ROS prefix with the rosidl/ament_cmake CMake configs (default: this venv)")
    parser.add_argument("--into", type=Path, default=Path(sys.prefix),
                        help="install prefix (default: this venv; another one needs <into>/lib on LD_LIBRARY_PATH "
                             "and <into>/lib/pythonX.Y/site-packages on PYTHONPATH)")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    args = parser.parse_args(argv)
    prefix, into = args.prefix.resolve(), args.into.resolve()

    elsewhere = provided_elsewhere(into)
    if elsewhere and not args.force:
        print(f"vision_msgs: already provided by {elsewhere}; not building")
        return 0
    stamp = fingerprint(prefix, into)
    status = read_status()
    if not args.force and status and status.get("ok") and status.get("fingerprint") == stamp \
            and (python_dir(into) / "vision_msgs" / "msg").is_dir():
        print(f"vision_msgs: up to date in {into}")
        return 0

    missing = missing_toolchain(prefix)
    if missing:
        reason = "not built, missing: " + "; ".join(missing)
        _write_status(False, reason)
        print(f"vision_msgs: {reason}. The node publishes std_msgs/String JSON instead.", file=sys.stderr)
        return 0

    print(f"vision_msgs: building {SOURCE} in {OUT}, installing into {into} ...", flush=True)
    try:
        seconds = build(prefix, into, args.jobs)
    except subprocess.CalledProcessError as exc:
        log = OUT / "build.log"
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        reason = f"build failed ({' '.join(exc.cmd[:2])} exited {exc.returncode}); log: {log}"
        _write_status(False, reason)
        print(f"{tail}\nvision_msgs: {reason}", file=sys.stderr)
        return 1
    error = import_check(into)
    if error:
        reason = f"built, but a vision_msgs publisher fails: {error}"
        _write_status(False, reason)
        print(f"vision_msgs: {reason}", file=sys.stderr)
        return 1
    _write_status(True, "built", fingerprint=stamp, build_s=round(seconds, 1), into=str(into))
    print(f"vision_msgs: built and installed in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
