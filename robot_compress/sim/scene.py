"""The MJCF scene: turtlebot3_world, picture boards and the Waffle Pi, compiled into a MuJoCo model."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robot_compress.sim.assets import URDF, WORLD_SDF, AssetError, asset_root
from robot_compress.sim.boards import Board, Picture, texture_file
from robot_compress.sim.sdf_world import world_geoms
from robot_compress.sim.urdf_mjcf import RobotParts, horizontal_to_vertical_fov, link_offset, robot_parts

WHEEL_KV = 0.5  # velocity servo gain (N m per rad/s); implicitfast integrates it stably at the 5 ms step
TIMESTEP = 0.005


@dataclass
class SceneSpec:
    width: int = 320
    height: int = 240
    hfov_deg: float = 62.0
    assets: str | Path | None = None
    with_world: bool = True
    spawn: tuple[float, float, float] = (0.0, -2.0, 0.0)  # x, y, yaw


def ring_of_boards(pictures: list[Picture], path_radius: float = 2.0, ring_radius: float = 2.42,
                   width: float = 0.6, lead_deg: float = 25.0) -> list[Board]:
    """Boards spread around a ring just outside the patrol circle, each turned towards the point of the
    circle that the robot (driving counter-clockwise) passes `lead_deg` before it. Six boards stand before
    the middles of the hexagonal wall (2.54 m from the centre there; the corners hold the green hexagons,
    which would hide them)."""
    boards = []
    for i, picture in enumerate(pictures):
        angle = 2 * math.pi * (i + 0.5) / len(pictures)
        bx, by = ring_radius * math.cos(angle), ring_radius * math.sin(angle)
        seen_from = angle - math.radians(lead_deg)
        px, py = path_radius * math.cos(seen_from), path_radius * math.sin(seen_from)
        h, w = picture.rgb.shape[:2]
        height = width * h / w
        boards.append(Board(f"board_{i}", picture, (bx, by, 0.03 + height / 2), math.atan2(py - by, px - bx), width))
    return boards


def board_filling_view(picture: Picture, spec: SceneSpec, fill: float = 0.85, distance: float = 0.25) -> Board:
    """One board straight ahead of the robot's spawn pose, `fill` of the image's height (and at most
    that of its width) at `distance` metres: the classification view, one picture at a time. The camera
    is 0.1 m above the floor, so the board stands close enough for its lower edge to clear the floor."""
    root = asset_root(spec.assets)
    cam_x, cam_y, cam_z = link_offset(root / URDF)
    fovy = math.radians(horizontal_to_vertical_fov(spec.hfov_deg, spec.width, spec.height))
    h, w = picture.rgb.shape[:2]
    height = fill * 2 * distance * math.tan(fovy / 2)
    width = min(height * w / h, fill * 2 * distance * math.tan(math.radians(spec.hfov_deg) / 2))
    x, y, yaw = spec.spawn
    ahead = cam_x + distance
    center = (x + ahead * math.cos(yaw) - cam_y * math.sin(yaw), y + ahead * math.sin(yaw) + cam_y * math.cos(yaw),
              cam_z)
    return Board("board_0", picture, center, yaw + math.pi, width)


def _fmt(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def board_elements(board: Board) -> tuple[list[ET.Element], list[ET.Element]]:
    """(texture, material and mesh assets; the picture quad and the backing box behind it)."""
    name = board.name
    corners = board.corners()
    normal, right, up = board.axes()
    # MuJoCo samples texture row 0 (the picture's top) at v = 0.
    texcoord = "0 0  1 0  1 1  0 1"
    assets = [
        ET.Element("texture", name=f"{name}_tex", type="2d", file=str(texture_file(board.picture))),
        ET.Element("material", name=f"{name}_mat", texture=f"{name}_tex", specular="0", shininess="0",
                   emission="0.35"),
        ET.Element("mesh", name=f"{name}_quad", inertia="shell", vertex=_fmt(corners.ravel()),
                   face="0 2 1  0 3 2", texcoord=texcoord),
    ]
    center = corners.mean(axis=0) - normal * 0.011
    quat = _quat_from_axes(normal, right, up)
    geoms = [
        ET.Element("geom", name=name, type="mesh", mesh=f"{name}_quad", material=f"{name}_mat", contype="0",
                   conaffinity="0", group="1"),
        # Props: drawn, not collided with, so a robot driven into one is not stuck on it.
        ET.Element("geom", name=f"{name}_backing", type="box", pos=_fmt(center), quat=_fmt(quat), rgba="0.2 0.2 0.2 1",
                   size=_fmt([0.01, board.width / 2 + 0.015, board.height / 2 + 0.015]), group="1", contype="0",
                   conaffinity="0"),
    ]
    return assets, geoms


def _quat_from_axes(x, y, z) -> list[float]:
    """Quaternion (w, x, y, z) of the rotation whose columns are the given orthonormal axes (Shepperd)."""
    m = np.column_stack([x, y, z])
    trace = np.trace(m)
    if trace > 0:
        s = 2 * math.sqrt(1 + trace)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * math.sqrt(1 + m[i, i] - m[j, j] - m[k, k])
        q = [0.0] * 4
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = s / 4
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    return [float(v) for v in q]


def build_mjcf(spec: SceneSpec, boards: list[Board]) -> tuple[str, RobotParts]:
    """The scene's MJCF text and the robot facts the controller needs."""
    root = asset_root(spec.assets)
    fovy = horizontal_to_vertical_fov(spec.hfov_deg, spec.width, spec.height)
    robot = robot_parts(root / URDF, root, fovy, spec.spawn)
    mujoco = ET.Element("mujoco", model="turtlebot3_world")
    ET.SubElement(mujoco, "compiler", angle="radian", eulerseq="XYZ", inertiafromgeom="auto")
    ET.SubElement(mujoco, "option", timestep=f"{TIMESTEP}", integrator="implicitfast")
    visual = ET.SubElement(mujoco, "visual")
    ET.SubElement(visual, "global", offwidth=str(spec.width), offheight=str(spec.height))
    ET.SubElement(visual, "quality", shadowsize="0")
    ET.SubElement(visual, "headlight", ambient="0.35 0.35 0.35", diffuse="0.45 0.45 0.45", specular="0 0 0")
    asset = ET.SubElement(mujoco, "asset")
    ET.SubElement(asset, "texture", name="floor_tex", type="2d", builtin="checker", rgb1="0.62 0.6 0.56",
                  rgb2="0.5 0.48 0.45", width="256", height="256")
    ET.SubElement(asset, "material", name="floor_mat", texture="floor_tex", texrepeat="12 12", reflectance="0")
    world = ET.SubElement(mujoco, "worldbody")
    ET.SubElement(world, "light", directional="true", pos="0 0 5", dir="0.3 0.2 -1", castshadow="false",
                  diffuse="0.5 0.5 0.5")
    ET.SubElement(world, "geom", name="floor", type="plane", size="8 8 0.1", material="floor_mat")
    if spec.with_world:
        world_assets, geoms = world_geoms(root / WORLD_SDF, root)
        asset.extend(world_assets)
        world.extend(geoms)
    for board in boards:
        board_assets, geoms = board_elements(board)
        asset.extend(board_assets)
        world.extend(geoms)
    asset.extend(robot.assets)
    world.append(robot.body)
    actuator = ET.SubElement(mujoco, "actuator")
    for side in ("left", "right"):
        ET.SubElement(actuator, "velocity", name=f"wheel_{side}", joint=robot.wheel_joints[side], kv=f"{WHEEL_KV}",
                      ctrlrange="-12 12", ctrllimited="true")
    return ET.tostring(mujoco, encoding="unicode"), robot


def compile_model(mujoco, xml: str):
    try:
        return mujoco.MjModel.from_xml_string(xml)
    except ValueError as exc:
        raise AssetError(f"MuJoCo rejected the scene: {exc}") from exc
