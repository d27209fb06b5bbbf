"""The TurtleBot3 files the scene is built from, and the conversions MuJoCo needs.

The assets stay where they are (../shared/assets/turtlebot3 beside the project, or a folder the user
names); what MuJoCo cannot read (COLLADA meshes) is converted to OBJ with trimesh into a cache folder
outside the project, keyed by the source file's content so an edited asset is converted again.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ASSETS = REPO.parent / "shared" / "assets" / "turtlebot3"
URDF = Path("turtlebot3_description/urdf/turtlebot3_waffle_pi.urdf")
WORLD_SDF = Path("turtlebot3_world/model.sdf")


class AssetError(RuntimeError):
    """A missing or unreadable asset; the message names the file."""


def cache_dir() -> Path:
    """Converted meshes and board textures: $ROBOT_COMPRESS_CACHE/sim or ~/.cache/robot_compress/sim."""
    root = os.environ.get("ROBOT_COMPRESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robot_compress"
    path = Path(root) / "sim"
    path.mkdir(parents=True, exist_ok=True)
    return path


def asset_root(path: str | Path | None = None) -> Path:
    """The turtlebot3 asset folder, checked for the two files the scene starts from."""
    root = Path(path) if path else Path(os.environ.get("ROBOT_COMPRESS_TURTLEBOT3", DEFAULT_ASSETS))
    for rel in (URDF, WORLD_SDF):
        if not (root / rel).is_file():
            raise AssetError(f"TurtleBot3 asset {root / rel} is missing: pass the folder that holds "
                             f"turtlebot3_description/ and turtlebot3_world/ (default {DEFAULT_ASSETS})")
    return root


def parse_xml(path: Path) -> ET.Element:
    try:
        return ET.fromstring(path.read_text())
    except (OSError, ET.ParseError, UnicodeDecodeError) as exc:
        raise AssetError(f"cannot read {path}: {exc}") from exc


def resolve_uri(uri: str, root: Path) -> Path:
    """`package://turtlebot3_description/...` and `model://turtlebot3_world/...` to files under `root`."""
    for scheme in ("package://", "model://"):
        if uri.startswith(scheme):
            path = root / uri[len(scheme):]
            break
    else:
        path = Path(uri) if Path(uri).is_absolute() else root / uri
    if not path.is_file():
        raise AssetError(f"mesh {uri} not found (looked for {path})")
    return path


def mujoco_mesh(path: Path) -> tuple[Path, float]:
    """(a file MuJoCo reads, the unit scale to metres): STL/OBJ as they are, COLLADA converted to OBJ."""
    if path.suffix.lower() in (".stl", ".obj"):
        return path, 1.0
    if path.suffix.lower() != ".dae":
        raise AssetError(f"mesh {path}: MuJoCo reads STL and OBJ, and .dae is converted; {path.suffix} is neither")
    data = path.read_bytes()
    out = cache_dir() / "meshes" / f"{path.stem}-{hashlib.sha256(data).hexdigest()[:12]}.obj"
    unit = _collada_unit(path)
    if not out.is_file():
        try:
            import trimesh
        except ImportError as exc:
            raise AssetError(f"converting {path} needs trimesh and pycollada: `pip install -e .[sim]`") from exc
        try:
            mesh = trimesh.load(path, force="mesh")
        except Exception as exc:
            raise AssetError(f"cannot convert {path} to OBJ: {type(exc).__name__}: {exc}") from exc
        if not len(getattr(mesh, "faces", [])):
            raise AssetError(f"{path} holds no triangles")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        mesh.export(tmp, file_type="obj", include_texture=False)
        tmp.replace(out)
    return out, unit


def _collada_unit(path: Path) -> float:
    """The <unit meter=...> of a COLLADA file (Gazebo scales by it; trimesh leaves it to the caller)."""
    root = parse_xml(path)
    for element in root.iter():
        if element.tag.endswith("unit") and element.get("meter"):
            return float(element.get("meter"))
    return 1.0
