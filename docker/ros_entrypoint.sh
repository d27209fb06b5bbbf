#!/bin/bash
# Entrypoint of the robot and sim images: source ROS 2 and, where there is one, the colcon
# workspace that holds robot_compress, then run the command (default: ros2 launch ...).
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash"
if [ -f /opt/robot_compress/ws/install/setup.bash ]; then
    # shellcheck disable=SC1091
    source /opt/robot_compress/ws/install/setup.bash
fi
exec "$@"
