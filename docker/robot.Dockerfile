# syntax=docker/dockerfile:1
# Robot image: ROS 2 Jazzy, the robot_compress package built with colcon, ONNX Runtime and the
# on-robot model. No torch (the robot runs ONNX models only; robot_compress.compress is never imported).
#
#   docker build -f docker/robot.Dockerfile -t robot_compress/robot .          (from the repository root)
#   docker build -f docker/robot.Dockerfile --build-arg ROBOT_MODEL=robot_small -t robot_compress/robot .
#   docker run --rm --net host robot_compress/robot                              (default: ros2 launch)
#   docker run --rm --net host robot_compress/robot ros2 launch robot_compress perception.launch.py \
#       edge_url:=edge-host:8001 image_topic:=/camera/image_raw local_model:=models/robot_balanced
#
# Not built on the machine that wrote it (no Docker engine there); tests/packaging checks what can be
# checked without one. See docs/DEPLOY.md.
ARG ROS_DISTRO=jazzy
FROM ros:${ROS_DISTRO}-ros-base

# Model directory under models/ that becomes the robot's local model (Triton layout, copied unchanged).
ARG ROBOT_MODEL=robot_balanced

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RC_HOME=/opt/robot_compress
WORKDIR /opt/robot_compress/ws

# 1. ROS and system dependencies from package.xml with rosdep: rclpy, sensor/std/diagnostic msgs,
#    std_srvs, vision_msgs (ros-jazzy-vision-msgs), cv_bridge (ros-jazzy-cv-bridge), launch,
#    launch_ros, python3-numpy, python3-opencv, python3-pil, python3-yaml. The two pip-backed keys are skipped:
#    step 2 installs them pinned (see docker/robot-requirements.txt).
COPY package.xml src/robot_compress/package.xml
# hadolint ignore=DL3008
RUN apt-get update \
 && rosdep update --rosdistro "${ROS_DISTRO}" \
 && rosdep install --from-paths src --ignore-src -y --rosdistro "${ROS_DISTRO}" \
        --skip-keys "python3-onnxruntime-pip python3-grpcio" \
 && apt-get install -y --no-install-recommends python3-venv \
 && dpkg -s "ros-${ROS_DISTRO}-vision-msgs" "ros-${ROS_DISTRO}-cv-bridge" "ros-${ROS_DISTRO}-launch-ros" >/dev/null \
 && rm -rf /var/lib/apt/lists/*

# 2. Python packages the distribution does not have, at the project's tested versions, in a venv
#    that sees the system site-packages: pip never has to remove a Debian package (it cannot), and
#    numpy stays Ubuntu's 1.x that cv_bridge and python3-opencv are built against.
COPY requirements/constraints.txt docker/robot-requirements.txt /tmp/req/
RUN python3 -m venv --system-site-packages "${RC_HOME}/venv" \
 && grep -v -E '^(numpy|torch)==' /tmp/req/constraints.txt > /tmp/req/robot-constraints.txt \
 && "${RC_HOME}/venv/bin/pip" install -c /tmp/req/robot-constraints.txt -r /tmp/req/robot-requirements.txt \
 && test -d "${RC_HOME}/venv/lib/python3.12/site-packages/onnxruntime" \
 && rm -rf /tmp/req
# ROS' setup.bash prepends its own paths and keeps this one, so nodes started by ros2 launch see it.
ENV PYTHONPATH=/opt/robot_compress/venv/lib/python3.12/site-packages

# 3. The package, built the way it is built on a robot.
COPY setup.py setup.cfg package.xml src/robot_compress/
COPY resource/ src/robot_compress/resource/
COPY libexec/ src/robot_compress/libexec/
COPY robot_compress/ src/robot_compress/robot_compress/
COPY launch/ src/robot_compress/launch/
COPY config/ src/robot_compress/config/
COPY models/${ROBOT_MODEL}/ src/robot_compress/models/${ROBOT_MODEL}/
RUN . "/opt/ros/${ROS_DISTRO}/setup.bash" \
 && colcon build --packages-select robot_compress --event-handlers console_direct+ \
 && rm -rf build log \
 && . install/setup.bash \
 && ros2 pkg executables robot_compress | grep -q perception_node \
 && test -f install/robot_compress/share/robot_compress/launch/perception.launch.py \
 && test -f "install/robot_compress/share/robot_compress/models/${ROBOT_MODEL}/config.pbtxt" \
 && python3 -c "import onnxruntime, tritonclient.grpc, cv2, cv_bridge, vision_msgs.msg, robot_compress.runtime" \
 && python3 -c "import os, sys; from robot_compress.ros.launch_description import DEFAULTS; \
        sys.exit(not os.path.isfile(DEFAULTS['params_file']) and 'launch default params_file missing')" \
 && if python3 -c "import torch" 2>/dev/null; then echo "torch must not be in the robot image" >&2; exit 1; fi

COPY --chmod=755 docker/ros_entrypoint.sh /opt/robot_compress/ros_entrypoint.sh

RUN useradd --create-home --uid 10001 robot
USER 10001
ENTRYPOINT ["/opt/robot_compress/ros_entrypoint.sh"]
# ros2 launch shuts its nodes down on SIGINT only; SIGTERM (docker stop's default) ends launch at once
# and leaves the nodes running until the container is killed.
STOPSIGNAL SIGINT
CMD ["ros2", "launch", "robot_compress", "perception.launch.py"]
