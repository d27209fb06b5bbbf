"""The Gazebo turtlebot3_world model (SDF) as MJCF geoms in the world body.

Visuals become geoms that are drawn and never collide; collisions of primitive shapes collide and
are not drawn. Mesh collisions are left out: MuJoCo collides with a mesh's convex hull, which for
the hexagonal arena wall would fill the whole arena.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from robot_compress.sim.assets import AssetError, mujoco_mesh, parse_xml, resolve_uri


def _pose(element: ET.Element) -> dict[str, str]:
    pose = element.find("pose")
    values = [float(v) for v in (pose.text.split() if pose is not None and pose.text else [0] * 6)]
    if len(values) != 6:
        raise AssetError(f"SDF pose {pose.text!r} must have 6 numbers")
    return {"pos": " ".join(f"{v:.6g}" for v in values[:3]), "euler": " ".join(f"{v:.6g}" for v in values[3:])}


def world_geoms(sdf_path: Path, asset_root: Path) -> tuple[list[ET.Element], list[ET.Element]]:
    """(mesh assets, geoms) for every visual and primitive collision of the model's links."""
    sdf = parse_xml(sdf_path)
    assets: list[ET.Element] = []
    geoms: list[ET.Element] = []
    meshes: dict[tuple[str, str], str] = {}
    links = sdf.findall(".//link")
    if not links:
        raise AssetError(f"{sdf_path} has no <link>")
    for link in links:
        for kind in ("visual", "collision"):
            for element in link.findall(kind):
                shape = next(iter(element.find("geometry")), None)
                if shape is None:
                    raise AssetError(f"{sdf_path}: {kind} {element.get('name')!r} has no geometry")
                attrs = {"name": f"world_{kind}_{element.get('name')}", **_pose(element)}
                if shape.tag == "cylinder":
                    attrs.update(type="cylinder", size=f"{float(shape.findtext('radius'))} "
                                                        f"{float(shape.findtext('length')) / 2}")
                elif shape.tag == "box":
                    attrs.update(type="box", size=" ".join(f"{float(v) / 2}" for v in shape.findtext("size").split()))
                elif shape.tag == "mesh":
                    if kind == "collision":
                        continue
                    source = resolve_uri(shape.findtext("uri", ""), asset_root)
                    path, unit = mujoco_mesh(source)
                    scale = " ".join(f"{float(s) * unit:.6g}" for s in (shape.findtext("scale") or "1 1 1").split())
                    key = (str(path), scale)
                    if key not in meshes:
                        meshes[key] = f"world_mesh_{len(meshes)}"
                        assets.append(ET.Element("mesh", name=meshes[key], file=str(path), scale=scale))
                    attrs.update(type="mesh", mesh=meshes[key])
                else:
                    raise AssetError(f"{sdf_path}: SDF geometry <{shape.tag}> is not supported")
                if kind == "visual":
                    diffuse = element.findtext("material/diffuse") or "0.7 0.7 0.7 1"
                    rgba = [float(v) for v in diffuse.split()]
                    # Gazebo's black wall reads as a flat silhouette; a dark grey keeps its shading visible.
                    rgba[:3] = [max(v, 0.15) for v in rgba[:3]]
                    attrs.update(contype="0", conaffinity="0", group="1", rgba=" ".join(f"{v:.3g}" for v in rgba))
                else:
                    attrs.update(group="3", rgba="0 0 0 0")
                geoms.append(ET.Element("geom", **attrs))
    return assets, geoms
