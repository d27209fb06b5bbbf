"""Which headless OpenGL backend MuJoCo renders with: EGL first, OSMesa as the fallback.

MuJoCo reads MUJOCO_GL once, when it is first imported, so the choice is made before that import,
by rendering a tiny scene in a child process with each backend (a broken GL stack can abort the
process that tries it). A MUJOCO_GL set by the user is kept as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("egl", "osmesa")
DEBIAN_PACKAGES = {"egl": "libegl1 libgl1-mesa-dri", "osmesa": "libosmesa6"}
INSTALL_HINT = ("install the Debian packages libegl1 and libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa), "
                "e.g. `apt-get install -y libegl1 libgl1-mesa-dri libosmesa6`")
MUJOCO_HINT = "MuJoCo is not installed: `pip install -e .[sim]` (the `sim` extra pins mujoco)"

_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 2"/><geom size="1 1 .1" type="box"/>'
                                       '</worldbody></mujoco>')
renderer = mujoco.Renderer(model, 8, 8)
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer.update_scene(data)
image = renderer.render()
renderer.close()
assert image.shape == (8, 8, 3)
print('ok')
"""


class RenderingUnavailable(RuntimeError):
    """No headless OpenGL backend works here; the message names the packages to install."""


def probe(backend: str, timeout_s: float = 60.0) -> str | None:
    """None when MuJoCo renders with `backend` here, else the reason it does not."""
    env = {**os.environ, "MUJOCO_GL": backend}
    env.pop("PYOPENGL_PLATFORM", None)
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"rendering with {backend} did not finish within {timeout_s:.0f} s"
    if proc.returncode == 0 and "ok" in proc.stdout:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    if any("No module named 'mujoco'" in line for line in lines):
        return MUJOCO_HINT
    packages = DEBIAN_PACKAGES.get(backend, "libegl1 libgl1-mesa-dri libosmesa6")
    return (lines[-1] if lines else f"exit code {proc.returncode}") + f" (Debian: {packages})"


def choose_backend() -> str:
    """Set MUJOCO_GL (unless the user did) to the first backend that renders here, and return it."""
    chosen = os.environ.get("MUJOCO_GL", "").lower()
    if chosen:
        return chosen
    reasons = {}
    for backend in BACKENDS:
        reason = probe(backend)
        if reason is None:
            os.environ["MUJOCO_GL"] = backend
            return backend
        if reason == MUJOCO_HINT:
            raise RenderingUnavailable(MUJOCO_HINT)
        reasons[backend] = reason
    raise RenderingUnavailable("headless rendering is unavailable: " +
                               "; ".join(f"{b}: {r}" for b, r in reasons.items()) + f". Fix: {INSTALL_HINT}")


def import_mujoco():
    """The mujoco module, imported after choosing the backend; clear errors when it cannot be."""
    choose_backend()
    try:
        import mujoco
    except ImportError as exc:
        raise RenderingUnavailable(f"{MUJOCO_HINT} ({exc})") from exc
    return mujoco
