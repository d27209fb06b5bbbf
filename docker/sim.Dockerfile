# syntax=docker/dockerfile:1
# Simulation image: headless Gazebo (gz sim Harmonic, the Jazzy pairing) with the TurtleBot3 world
# and a TurtleBot3 Waffle, whose camera is bridged to ROS on /camera/image_raw (sensor_msgs/Image).
# The robot service remaps that topic onto perception_node's `image` input (docker/compose.yaml).
#
#   docker build -f docker/sim.Dockerfile -t robot_compress/sim .               (from the repository root)
ARG ROS_DISTRO=jazzy
FROM ros:${ROS_DISTRO}-ros-base

# The stock Waffle camera renders 1920x1080 (about 6 MB per rgb8 frame); the classifier needs 32x32,
# so render at a camera-like 640x480 unless asked otherwise.
ARG CAMERA_WIDTH=640
ARG CAMERA_HEIGHT=480

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    TURTLEBOT3_MODEL=waffle
# turtlebot3_gazebo brings ros_gz (gz sim, the bridges, ros_gz_image); Mesa EGL lets the camera
# sensor render without a display (software rendering when there is no GPU).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        "ros-${ROS_DISTRO}-turtlebot3-gazebo" \
        "ros-${ROS_DISTRO}-ros-gz-sim" \
        "ros-${ROS_DISTRO}-ros-gz-image" \
        "ros-${ROS_DISTRO}-ros-gz-bridge" \
        "ros-${ROS_DISTRO}-robot-state-publisher" \
        libegl1 libgl1-mesa-dri \
 && rm -rf /var/lib/apt/lists/*

COPY docker/set_camera_resolution.py /opt/robot_compress/set_camera_resolution.py
RUN python3 /opt/robot_compress/set_camera_resolution.py \
        "/opt/ros/${ROS_DISTRO}/share/turtlebot3_gazebo/models/turtlebot3_waffle/model.sdf" \
        "${CAMERA_WIDTH}" "${CAMERA_HEIGHT}"

COPY docker/launch/ /opt/robot_compress/launch/
COPY --chmod=755 docker/ros_entrypoint.sh /opt/robot_compress/ros_entrypoint.sh

RUN useradd --create-home --uid 10001 sim
USER 10001
ENTRYPOINT ["/opt/robot_compress/ros_entrypoint.sh"]
# ros2 launch shuts its nodes down on SIGINT only (see robot.Dockerfile).
STOPSIGNAL SIGINT
CMD ["ros2", "launch", "/opt/robot_compress/launch/sim_world.launch.py"]
