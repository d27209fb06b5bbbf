"""A robot URDF as an MJCF body tree, with the Waffle Pi's camera and wheel actuators.

MuJoCo can load a URDF by itself, but not combined with a world, and it drops names we need
(the camera frame) when it merges fixed joints; translating the few URDF elements the TurtleBot3
uses (links, fixed/continuous joints, box/cylinder/sphere/mesh geometry, inertials) keeps every link
as a body. URDF rpy is extrinsic X-Y-Z, which the scene's compiler setting (eulerseq="XYZ") matches.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from robot_compress.sim.assets import AssetError, mujoco_mesh, resolve_uri

CAMERA_LINK = "camera_rgb_frame"
SMALL_MASS = 1e-3  # links without an inertial (frames, the camera housing): enough to stop MuJoCo refusing them


@dataclass
class RobotParts:
    body: ET.Element
    assets: list[ET.Element] = field(default_factory=list)
    wheel_joints: dict[str, str] = field(default_factory=dict)  # "left"/"right" -> joint name
    wheel_radius: float = 0.0
    wheel_separation: float = 0.0


def _vec(text: str | None, default: str = "0 0 0") -> list[float]:
    return [float(v) for v in (text or default).split()]


def _fmt(values) -> str:
    return " ".join(f"{v:.6g}" for v in values)


def _origin(element: ET.Element | None) -> dict[str, str]:
    if element is None or element.find("origin") is None:
        return {}
    origin = element.find("origin")
    return {"pos": _fmt(_vec(origin.get("xyz"))), "euler": _fmt(_vec(origin.get("rpy")))}


def load_urdf(path: Path, namespace: str = "") -> ET.Element:
    """The URDF with its `${namespace}` placeholders filled (xacro is not needed for this file)."""
    if not path.is_file():
        raise AssetError(f"robot description {path} is missing")
    text = path.read_text().replace("${namespace}", namespace)
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise AssetError(f"cannot parse {path}: {exc}") from exc


def _geometry(geometry: ET.Element, root: Path, assets: list[ET.Element], mesh_names: dict) -> dict[str, str]:
    shape = next(iter(geometry), None)
    if shape is None:
        raise AssetError("a URDF <geometry> without a shape")
    if shape.tag == "box":
        return {"type": "box", "size": _fmt(v / 2 for v in _vec(shape.get("size")))}
    if shape.tag == "cylinder":
        return {"type": "cylinder", "size": _fmt([float(shape.get("radius")), float(shape.get("length")) / 2])}
    if shape.tag == "sphere":
        return {"type": "sphere", "size": _fmt([float(shape.get("radius"))])}
    if shape.tag == "mesh":
        source = resolve_uri(shape.get("filename", ""), root)
        path, unit = mujoco_mesh(source)
        scale = [s * unit for s in _vec(shape.get("scale"), "1 1 1")]
        key = (str(path), _fmt(scale))
        if key not in mesh_names:
            mesh_names[key] = f"mesh_{len(mesh_names)}_{source.stem}"
            assets.append(ET.Element("mesh", name=mesh_names[key], file=str(path), scale=_fmt(scale)))
        return {"type": "mesh", "mesh": mesh_names[key]}
    raise AssetError(f"URDF geometry <{shape.tag}> is not supported (box, cylinder, sphere, mesh are)")


def robot_parts(urdf_path: Path, asset_root: Path, fovy_deg: float, spawn: tuple[float, float, float]) -> RobotParts:
    """The robot as one MJCF <body> (free joint at its root link), its mesh assets and wheel facts."""
    urdf = load_urdf(urdf_path)
    colours = {m.get("name"): m.find("color").get("rgba") for m in urdf.findall("material")
               if m.find("color") is not None}
    links = {link.get("name"): link for link in urdf.findall("link")}
    joints = urdf.findall("joint")
    children = {j.find("child").get("link") for j in joints}
    roots = [name for name in links if name not in children]
    if len(roots) != 1:
        raise AssetError(f"{urdf_path}: expected one root link, found {roots}")
    if CAMERA_LINK not in links:
        raise AssetError(f"{urdf_path} has no link {CAMERA_LINK!r}: the simulated robot needs a camera")
    parts = RobotParts(body=ET.Element("body"))
    mesh_names: dict = {}

    def fill(body: ET.Element, link_name: str) -> None:
        link = links[link_name]
        inertial = link.find("inertial")
        if inertial is not None:
            i = inertial.find("inertia")
            full = [float(i.get(k, 0)) for k in ("ixx", "iyy", "izz", "ixy", "ixz", "iyz")]
            ET.SubElement(body, "inertial", mass=inertial.find("mass").get("value"),
                          fullinertia=_fmt(full),
                          pos=_origin(inertial).get("pos", "0 0 0"))  # URDF inertial rpy is zero here
        else:
            ET.SubElement(body, "inertial", pos="0 0 0", mass=f"{SMALL_MASS}", diaginertia="1e-6 1e-6 1e-6")
        for n, visual in enumerate(link.findall("visual")):
            material = visual.find("material")
            rgba = colours.get(material.get("name") if material is not None else None, "0.5 0.5 0.5 1")
            ET.SubElement(body, "geom", name=f"{link_name}_visual_{n}", contype="0", conaffinity="0", density="0",
                          group="1", rgba=rgba, **_origin(visual),
                          **_geometry(visual.find("geometry"), asset_root, parts.assets, mesh_names))
        for n, collision in enumerate(link.findall("collision")):
            extra = {"condim": "1"} if "caster" in link_name else {}  # casters slide: the real ones roll
            ET.SubElement(body, "geom", name=f"{link_name}_collision_{n}", group="3", rgba="0 0 0 0",
                          **extra, **_origin(collision),
                          **_geometry(collision.find("geometry"), asset_root, parts.assets, mesh_names))
        if link_name == CAMERA_LINK:
            # MuJoCo cameras look along -z with +y up; the URDF camera frame looks along +x with +z up.
            ET.SubElement(body, "camera", name="camera", fovy=f"{fovy_deg:.6g}", xyaxes="0 -1 0 0 0 1")
        for joint in joints:
            if joint.find("parent").get("link") != link_name:
                continue
            child_name = joint.find("child").get("link")
            child = ET.SubElement(body, "body", name=child_name, **_origin(joint))
            kind = joint.get("type")
            if kind in ("continuous", "revolute"):
                axis = joint.find("axis")
                ET.SubElement(child, "joint", name=joint.get("name"), type="hinge", damping="0.001",
                              armature="0.001", axis=_fmt(_vec(axis.get("xyz") if axis is not None else None, "1 0 0")))
                side = "left" if "left" in joint.get("name") else "right"
                parts.wheel_joints[side] = joint.get("name")
            elif kind != "fixed":
                raise AssetError(f"URDF joint type {kind!r} ({joint.get('name')}) is not supported")
            fill(child, child_name)

    body = parts.body
    body.set("name", roots[0])
    body.set("pos", _fmt(spawn[:2] + (0.0,)))
    body.set("euler", _fmt((0.0, 0.0, spawn[2])))
    ET.SubElement(body, "freejoint", name="base")
    fill(body, roots[0])
    if set(parts.wheel_joints) != {"left", "right"}:
        raise AssetError(f"{urdf_path}: expected a left and a right wheel joint, found {parts.wheel_joints}")
    wheel_y = []
    for side in ("left", "right"):
        joint = next(j for j in joints if j.get("name") == parts.wheel_joints[side])
        wheel_y.append(_vec(joint.find("origin").get("xyz"))[1])
        child = links[joint.find("child").get("link")]
        cylinder = child.find("collision/geometry/cylinder")
        if cylinder is None:
            raise AssetError(f"{urdf_path}: wheel link {child.get('name')} has no collision cylinder")
        parts.wheel_radius = float(cylinder.get("radius"))
    parts.wheel_separation = abs(wheel_y[0] - wheel_y[1])
    return parts


def horizontal_to_vertical_fov(hfov_deg: float, width: int, height: int) -> float:
    """MuJoCo cameras take the vertical field of view; the Pi Camera's datasheet gives the horizontal one."""
    return math.degrees(2 * math.atan(math.tan(math.radians(hfov_deg) / 2) * height / width))


def link_offset(urdf_path: Path, link: str = CAMERA_LINK) -> tuple[float, float, float]:
    """Position of `link` in the root link's frame, through the joints' origins (the camera's
    mounting point, to place things in its view before the scene is built)."""
    import numpy as np

    urdf = load_urdf(urdf_path)
    parent_joint = {j.find("child").get("link"): j for j in urdf.findall("joint")}
    chain = []
    while link in parent_joint:
        chain.append(parent_joint[link])
        link = parent_joint[link].find("parent").get("link")
    position, rotation = np.zeros(3), np.eye(3)
    for joint in reversed(chain):
        origin = joint.find("origin")
        xyz = np.array(_vec(origin.get("xyz") if origin is not None else None))
        r, p, y = _vec(origin.get("rpy") if origin is not None else None)
        position = position + rotation @ xyz
        rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
        ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
        rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
        rotation = rotation @ rz @ ry @ rx
    return tuple(float(v) for v in position)
