"""perception.launch.py with the simulated TurtleBot3 camera as the node's input.

Used by the `robot` service of docker/compose.yaml:

    ros2 launch /opt/robot_compress/launch/robot_in_sim.launch.py edge_url:=edge:8001

Every argument given on the command line also reaches perception.launch.py (launch arguments are
visible to included descriptions), so its own arguments work here unchanged. The remaps apply to
every node that perception.launch.py starts: the node's `image` (or `image/compressed`, with
transport:=compressed) input becomes the Gazebo camera topic, and the other input is parked on a
topic nobody publishes, so each camera frame reaches the node exactly once.
"""

from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import (
    EnvironmentVariable,
    EqualsSubstitution,
    LaunchConfiguration,
    PathJoinSubstitution,
)
from launch_ros.actions import SetRemap
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def generate_launch_description():
    camera = LaunchConfiguration("camera_topic")
    transport = LaunchConfiguration("transport")
    raw = IfCondition(EqualsSubstitution(transport, "raw"))
    compressed = IfCondition(EqualsSubstitution(transport, "compressed"))
    return LaunchDescription([
        DeclareLaunchArgument(
            "camera_topic", default_value="/camera/image_raw",
            description="sensor_msgs/Image topic of the simulated camera (TurtleBot3 Waffle in Gazebo)"),
        DeclareLaunchArgument(
            "transport", default_value="raw", choices=["raw", "compressed"],
            description="raw: subscribe to camera_topic; compressed: to camera_topic/compressed "
                        "(needs compressed_image_transport in the sim image)"),
        DeclareLaunchArgument(
            "edge_url", default_value="edge:8001",
            description="host:port of the OIP v2 edge server (the compose `edge` or `triton` service)"),
        DeclareLaunchArgument(
            "local_model", default_value=EnvironmentVariable("RC_ROBOT_MODEL", default_value=""),
            description="on-robot model directory (the robot image sets RC_ROBOT_MODEL)"),
        GroupAction([
            SetRemap(src="image", dst=camera, condition=raw),
            SetRemap(src="image/compressed", dst="/robot_compress/unused/image/compressed", condition=raw),
            SetRemap(src="image", dst="/robot_compress/unused/image", condition=compressed),
            SetRemap(src="image/compressed", dst=[camera, "/compressed"], condition=compressed),
            IncludeLaunchDescription(PythonLaunchDescriptionSource(
                PathJoinSubstitution([FindPackageShare("robot_compress"), "launch", "perception.launch.py"]))),
        ]),
    ])
