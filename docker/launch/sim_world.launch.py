"""Headless Gazebo TurtleBot3 world with a TurtleBot3 Waffle and its camera on /camera/image_raw.

Used by the `sim` service of docker/compose.yaml (the TURTLEBOT3_MODEL=waffle environment variable
is set by the sim image). Differs from turtlebot3_gazebo's turtlebot3_world.launch.py only in what a
container needs: the Gazebo server runs without its GUI and renders the camera off-screen; the
robot turns in place (spin_rad_s) so the camera sees changing scenes.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    AppendEnvironmentVariable,
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression

from launch import LaunchDescription


def generate_launch_description():
    tb3 = get_package_share_directory("turtlebot3_gazebo")
    ros_gz_sim = get_package_share_directory("ros_gz_sim")
    spin = LaunchConfiguration("spin_rad_s")
    return LaunchDescription([
        DeclareLaunchArgument("world", default_value=os.path.join(tb3, "worlds", "turtlebot3_world.world")),
        DeclareLaunchArgument("x_pose", default_value="-2.0"),
        DeclareLaunchArgument("y_pose", default_value="-0.5"),
        DeclareLaunchArgument("spin_rad_s", default_value="0.3",
                              description="yaw rate of the robot, rad/s; 0 leaves it standing"),
        AppendEnvironmentVariable("GZ_SIM_RESOURCE_PATH", os.path.join(tb3, "models")),
        # Server only (-s), camera rendered off-screen (--headless-rendering), running (-r).
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(ros_gz_sim, "launch", "gz_sim.launch.py")),
            launch_arguments={
                "gz_args": ["-r -s --headless-rendering -v 2 ", LaunchConfiguration("world")],
                "on_exit_shutdown": "true",
            }.items(),
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(tb3, "launch", "robot_state_publisher.launch.py")),
            launch_arguments={"use_sim_time": "true"}.items(),
        ),
        # Spawns the Waffle and starts its ros_gz bridges, including the image bridge that
        # publishes /camera/image_raw (turtlebot3_gazebo does this for every model but burger).
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(tb3, "launch", "spawn_turtlebot3.launch.py")),
            launch_arguments={
                "x_pose": LaunchConfiguration("x_pose"),
                "y_pose": LaunchConfiguration("y_pose"),
            }.items(),
        ),
        ExecuteProcess(
            cmd=["ros2", "topic", "pub", "--rate", "5", "/cmd_vel", "geometry_msgs/msg/TwistStamped",
                 ["{twist: {angular: {z: ", spin, "}}}"]],
            condition=IfCondition(PythonExpression([spin, " != 0"])),
            output="log",
        ),
    ])
