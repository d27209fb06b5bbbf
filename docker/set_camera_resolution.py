"""Set the image size of every camera sensor in an SDF file, in place (used by docker/sim.Dockerfile).

    python3 set_camera_resolution.py MODEL.sdf WIDTH HEIGHT

Fails (exit 1) when the file has no camera sensor, so a changed upstream model breaks the image
build instead of silently keeping a 1920x1080 camera.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def set_camera_resolution(path: str, width: int, height: int) -> int:
    """Rewrite PATH with WIDTH x HEIGHT for each <sensor type="camera">; return how many changed."""
    tree = ET.parse(path)
    changed = 0
    for sensor in tree.getroot().iter("sensor"):
        if sensor.get("type") not in ("camera", "rgbd_camera", "depth_camera"):
            continue
        image = sensor.find("camera/image")
        if image is None:
            continue
        for tag, value in (("width", width), ("height", height)):
            element = image.find(tag)
            if element is None:
                element = ET.SubElement(image, tag)
            element.text = str(value)
        changed += 1
    if changed:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, width, height = argv[0], int(argv[1]), int(argv[2])
    if width <= 0 or height <= 0:
        print(f"bad size {width}x{height}", file=sys.stderr)
        return 2
    changed = set_camera_resolution(path, width, height)
    if not changed:
        print(f"{path}: no camera sensor found", file=sys.stderr)
        return 1
    print(f"{path}: {changed} camera sensor(s) set to {width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
