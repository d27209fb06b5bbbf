"""package.xml: valid format 3 with the dependencies rosdep must install on a robot."""

from __future__ import annotations

import configparser
import xml.etree.ElementTree as ET

import pytest

from .dockerfiles import REPO, setup_keyword

# Element order of the format 3 schema (package_format3.xsd): the fixed head, then any mix of
# dependency/url/author elements, then export last.
HEAD = ["name", "version", "description", "maintainer", "license"]
BODY = {"url", "author", "buildtool_depend", "buildtool_export_depend", "build_depend", "build_export_depend",
        "depend", "exec_depend", "test_depend", "doc_depend", "conflict", "replace", "group_depend",
        "member_of_group"}


@pytest.fixture(scope="module")
def package() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def keys(package: ET.Element, *tags: str) -> set[str]:
    return {e.text.strip() for e in package if e.tag in tags and e.text}


def test_format_3_with_elements_in_schema_order(package):
    assert package.tag == "package" and package.get("format") == "3"
    tags = [e.tag for e in package]
    head = []
    for tag in tags:  # name version description maintainer+ license+ (maintainer/license may repeat)
        if head and tag == head[-1] and tag in ("maintainer", "license"):
            continue
        if tag not in HEAD:
            break
        head.append(tag)
    assert head == HEAD, f"package.xml must start with {HEAD}, found {tags[:len(HEAD) + 2]}"
    rest = tags[sum(1 for t in tags if t in HEAD):]
    assert rest[-1] == "export" and tags.count("export") == 1
    unknown = set(rest[:-1]) - BODY
    assert not unknown, f"elements not allowed by format 3: {unknown}"
    for maintainer in package.findall("maintainer"):
        assert maintainer.get("email") and "@" in maintainer.get("email"), "maintainer needs an email"
    assert package.findtext("description").strip()
    assert package.findtext("license").strip()


def test_name_and_version_agree_with_setup_py(package):
    assert package.findtext("name") == setup_keyword("name") == "robot_compress"
    assert package.findtext("version") == setup_keyword("version")


def test_ament_python_build_type(package):
    assert "ament_python" in keys(package, "buildtool_depend")
    assert package.find("export/build_type").text.strip() == "ament_python"


def test_required_dependencies(package):
    build_and_run = keys(package, "depend") | (keys(package, "build_depend") & keys(package, "exec_depend"))
    missing = {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "std_srvs"} - build_and_run
    assert not missing, f"package.xml lacks <depend> on {sorted(missing)}"
    run = keys(package, "depend", "exec_depend")
    missing = {"vision_msgs", "cv_bridge", "python3-numpy", "python3-opencv", "launch", "launch_ros"} - run
    assert not missing, f"package.xml lacks <exec_depend> on {sorted(missing)}"
    assert any("onnxruntime" in k for k in run), "package.xml has no rosdep key for onnxruntime"
    assert not any("torch" in k for k in keys(package, *BODY)), "the ROS package must not depend on torch"


def test_ament_index_marker_and_colcon_script_dir():
    marker = REPO / "resource" / "robot_compress"
    assert marker.is_file(), "resource/robot_compress (the ament index marker) is missing"
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    # ros2 run looks for executables in <prefix>/lib/<package>
    assert config.get("develop", "script_dir") == "$base/lib/robot_compress"
    assert config.get("install", "install_scripts") == "$base/lib/robot_compress"
