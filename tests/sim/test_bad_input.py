"""Bad input to the simulation: a robot without a camera, no working OpenGL backend, corrupt meshes;
and `robot-compress doctor`'s report of the rendering backend."""

from __future__ import annotations

import shutil

import pytest

from robot_compress.sim import rendering
from robot_compress.sim.assets import DEFAULT_ASSETS, URDF, AssetError, mujoco_mesh
from robot_compress.sim.urdf_mjcf import robot_parts


def test_robot_without_a_camera_is_refused(tmp_path):
    copy = tmp_path / "tb3"
    shutil.copytree(DEFAULT_ASSETS, copy)
    urdf = copy / URDF
    urdf.chmod(0o644)
    urdf.write_text(urdf.read_text().replace("camera_rgb_frame", "some_frame"))
    with pytest.raises(AssetError, match="has no link 'camera_rgb_frame'.*needs a camera"):
        robot_parts(urdf, copy, 48.0, (0.0, 0.0, 0.0))


def test_corrupt_collada_mesh_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBOT_COMPRESS_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "wall.dae"
    bad.write_text("<COLLADA><library_geometries><geometry>")
    with pytest.raises(AssetError, match="wall.dae"):
        mujoco_mesh(bad)


def test_no_working_backend_names_the_debian_packages(monkeypatch):
    # A backend MuJoCo does not know fails in the child process the same way a missing library does.
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(rendering, "BACKENDS", ("no-such-gl",))
    with pytest.raises(rendering.RenderingUnavailable) as info:
        rendering.choose_backend()
    message = str(info.value)
    assert "headless rendering is unavailable" in message and "no-such-gl" in message
    assert "libegl1" in message and "libosmesa6" in message


def test_doctor_reports_the_rendering_backend():
    from robot_compress.doctor import check_rendering

    check = check_rendering()
    assert check.ok, check.detail  # .ci/run installs the Debian packages
    assert check.detail.startswith(("EGL (MUJOCO_GL=egl)", "OSMESA (MUJOCO_GL=osmesa)")), check.detail


def test_a_backend_that_cannot_render_headless_is_a_clear_error(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("from robot_compress.sim.simulation import Simulation\n"
            "from robot_compress.sim.scene import SceneSpec\n"
            "from robot_compress.sim.rendering import RenderingUnavailable\n"
            "try:\n    Simulation(SceneSpec(), boards=[])\n"
            "except RenderingUnavailable as exc:\n    print('REFUSED', exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["MUJOCO_GL"] = "glfw"  # needs a display, which this machine does not have
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert "REFUSED MuJoCo cannot render with MUJOCO_GL=glfw" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "libegl1" in done.stdout and "unset MUJOCO_GL" in done.stdout
