"""`python -m robot_compress.ros.vision_msgs_build` (run by `make venv`) when it cannot build: it names
what is missing and lets the venv finish, or fails loudly on a compile error; `robot-compress doctor`
repeats the reason."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from robot_compress import doctor
from robot_compress.ros import vision_msgs_build


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The build's output folder (status, log, CMake tree) in tmp_path, not the checkout's build/."""
    out = tmp_path / "out"
    monkeypatch.setattr(vision_msgs_build, "OUT", out)
    monkeypatch.setattr(vision_msgs_build, "STATUS", out / "status.json")
    return out


def test_without_a_compiler_it_says_what_is_missing_and_the_venv_goes_on(scratch, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert vision_msgs_build.main(["--force", "--into", str(tmp_path / "prefix")]) == 0
    said = capsys.readouterr().err
    assert "missing: cmake; a C compiler (cc/gcc); a C++ compiler (c++/g++)" in said
    assert "std_msgs/String JSON instead" in said
    status = vision_msgs_build.read_status()
    assert status["ok"] is False and "cmake" in status["reason"]
    assert not (tmp_path / "prefix").exists()
    assert f"build/vision_msgs: {status['reason']}" in doctor.vision_msgs_hint()


def test_a_compile_error_fails_loudly_with_the_log(scratch, tmp_path, monkeypatch, capsys):
    missing = vision_msgs_build.missing_toolchain(Path(sys.prefix))
    if missing:
        pytest.skip(f"needs the build toolchain: {missing}")
    source = tmp_path / "vision_msgs"
    shutil.copytree(vision_msgs_build.SOURCE, source)
    (source / "msg" / "Point2D.msg").write_text("float64 x\nnot_a_type y\n")
    monkeypatch.setattr(vision_msgs_build, "SOURCE", source)
    assert vision_msgs_build.main(["--force", "--jobs", "1", "--into", str(tmp_path / "prefix")]) == 1
    said = capsys.readouterr().err
    assert "not_a_type" in said  # the tail of the CMake log names the bad field
    status = vision_msgs_build.read_status()
    assert status["ok"] is False and status["reason"].startswith("build failed (cmake -S exited")
    assert str(scratch / "build.log") in status["reason"]
    assert not (tmp_path / "prefix" / "lib").exists()
