"""The running simulation: physics steps, the robot camera, and each frame's ground truth."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from robot_compress.sim.assets import AssetError
from robot_compress.sim.boards import Board, Picture, load_coco_pictures
from robot_compress.sim.drive import CirclePatrol, DiffDrive, command_problem
from robot_compress.sim.ground_truth import PinholeCamera, TruthBox, board_boxes
from robot_compress.sim.rendering import INSTALL_HINT, RenderingUnavailable, import_mujoco
from robot_compress.sim.scene import SceneSpec, build_mjcf, compile_model, ring_of_boards

DEFAULT_PICTURES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco" / "val_dev"


@dataclass
class Pose2D:
    x: float
    y: float
    yaw: float
    linear: float  # forward speed, m/s
    angular: float  # yaw rate, rad/s


@dataclass
class Frame:
    time_s: float  # simulated time
    rgb: np.ndarray
    boxes: list[TruthBox] = field(default_factory=list)
    pose: Pose2D | None = None
    class_id: int = -1  # the whole-picture label of the board at the image centre (CIFAR-10 mode)
    label: str = ""


class Simulation:
    """One MuJoCo world with the robot; `advance` runs physics, `render` takes a camera frame."""

    def __init__(self, spec: SceneSpec | None = None, boards: list[Board] | None = None, occlusion: bool = True,
                 min_visible: float = 0.3):
        self.spec = spec or SceneSpec()
        self.mujoco = mujoco = import_mujoco()
        self.boards = boards if boards is not None else ring_of_boards(load_coco_pictures(DEFAULT_PICTURES, 6))
        xml, robot = build_mjcf(self.spec, self.boards)
        self.model = compile_model(mujoco, xml)
        self.data = mujoco.MjData(self.model)
        self.drive = DiffDrive(robot.wheel_radius, robot.wheel_separation)
        self.occlusion = occlusion
        self.min_visible = min_visible
        self.camera_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, "camera")
        if self.camera_id < 0:
            raise AssetError("the scene has no camera named 'camera'")
        self.base_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, robot.body.get("name"))
        self.board_geoms = {b.name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, b.name) for b in self.boards}
        self.fovy_deg = float(self.model.cam_fovy[self.camera_id])
        try:
            self.renderer = mujoco.Renderer(self.model, self.spec.height, self.spec.width)
        except Exception as exc:  # the GL stack's own error types differ by backend
            raise RenderingUnavailable(f"MuJoCo cannot render with MUJOCO_GL={os.environ.get('MUJOCO_GL')}: "
                                       f"{type(exc).__name__}: {exc}. Fix: {INSTALL_HINT}, or unset MUJOCO_GL "
                                       f"to let robot_compress pick EGL or OSMesa") from exc
        self.command = (0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    # --- motion ---------------------------------------------------------------------------------
    def set_command(self, linear: float, angular: float) -> None:
        """Follow a body velocity from now on; ValueError (naming the value) for one the robot cannot follow."""
        problem = command_problem(linear, angular)
        if problem:
            raise ValueError(problem)
        self.command = (float(linear), float(angular))
        self.data.ctrl[:] = self.drive.wheel_speeds(*self.command)

    def patrol(self, patrol: CirclePatrol | None = None) -> None:
        """Steer along the scripted patrol for the next step."""
        pose = self.pose()
        self.set_command(*(patrol or CirclePatrol()).command(pose.x, pose.y, pose.yaw))

    def advance(self, seconds: float) -> None:
        steps = max(1, round(seconds / self.model.opt.timestep))
        self.mujoco.mj_step(self.model, self.data, nstep=steps)

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def pose(self) -> Pose2D:
        x, y = self.data.qpos[0:2]
        w, qx, qy, qz = self.data.qpos[3:7]
        yaw = math.atan2(2 * (w * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        vx, vy = self.data.qvel[0:2]
        return Pose2D(float(x), float(y), yaw, float(vx * math.cos(yaw) + vy * math.sin(yaw)), float(self.data.qvel[5]))

    # --- camera ---------------------------------------------------------------------------------
    def camera(self) -> PinholeCamera:
        return PinholeCamera(self.data.cam_xpos[self.camera_id].copy(),
                             self.data.cam_xmat[self.camera_id].reshape(3, 3).copy(),
                             self.spec.width, self.spec.height, self.fovy_deg)

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in ROS's convention, where pixel (0, 0)'s centre is at (0, 0)."""
        focal = self.camera().focal
        return focal, focal, self.spec.width / 2 - 0.5, self.spec.height / 2 - 0.5

    def render(self) -> Frame:
        self.renderer.update_scene(self.data, camera=self.camera_id)
        rgb = self.renderer.render().copy()
        segmentation = None
        if self.occlusion and self.boards:
            self.renderer.enable_segmentation_rendering()
            try:
                self.renderer.update_scene(self.data, camera=self.camera_id)
                segmentation = self.renderer.render()[:, :, 0].copy()
            finally:
                self.renderer.disable_segmentation_rendering()
        camera = self.camera()
        centre = self._board_at_centre(segmentation)
        boxes = []
        for board in self.boards:
            mask = None if segmentation is None else segmentation == self.board_geoms[board.name]
            if mask is not None and not mask.any():
                continue
            boxes += board_boxes(board, camera, mask, self.min_visible)
        return Frame(self.time_s, rgb, boxes, self.pose(),
                     centre.picture.class_id if centre else -1, centre.picture.label if centre else "")

    def _board_at_centre(self, segmentation) -> Board | None:
        if segmentation is None:
            return self.boards[0] if len(self.boards) == 1 else None
        geom = segmentation[self.spec.height // 2, self.spec.width // 2]
        return next((b for b in self.boards if self.board_geoms[b.name] == geom), None)

    def set_picture(self, board_name: str, picture: Picture) -> None:
        """Show another picture on a board from the next frame on (resized to the board's texture)."""
        mujoco = self.mujoco
        board = next(b for b in self.boards if b.name == board_name)
        tex = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_TEXTURE, f"{board_name}_tex")
        h, w, c = self.model.tex_height[tex], self.model.tex_width[tex], self.model.tex_nchannel[tex]
        rgb = picture.rgb if picture.rgb.shape[:2] == (h, w) else cv2.resize(picture.rgb, (w, h),
                                                                                interpolation=cv2.INTER_AREA)
        start = self.model.tex_adr[tex]
        self.model.tex_data[start:start + h * w * c] = rgb.reshape(-1) if c == 3 else np.dstack(
            [rgb, np.full((h, w, 1), 255, np.uint8)]).reshape(-1)
        # mujoco.Renderer has no public upload; its GL context must be current for mjr_uploadTexture.
        self.renderer._gl_context.make_current()
        mujoco.mjr_uploadTexture(self.model, self.renderer._mjr_context, tex)
        board.picture = picture

    def close(self) -> None:
        """Free the GL context now: left to interpreter exit, EGL teardown can fail noisily."""
        if getattr(self, "renderer", None) is not None:
            self.renderer.close()
            self.renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def annotate(frame: Frame) -> np.ndarray:
    """The frame (RGB) with its ground truth drawn: boxes with labels, or the whole-picture label."""
    image = np.ascontiguousarray(frame.rgb)
    for box in frame.boxes:
        cv2.rectangle(image, (round(box.x0), round(box.y0)), (round(box.x1) - 1, round(box.y1) - 1), (255, 40, 40), 1)
        cv2.putText(image, box.label, (round(box.x0) + 2, max(10, round(box.y0) + 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 0), 1, cv2.LINE_AA)
    if frame.label:
        cv2.putText(image, f"truth: {frame.label}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1,
                    cv2.LINE_AA)
    return image


def write_snapshot(path: Path, frame: Frame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), annotate(frame)[:, :, ::-1])
