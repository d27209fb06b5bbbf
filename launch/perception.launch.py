"""ROS 2 launch file for the perception stack: perception_node, and with arguments sim_camera and a
loopback edge server. The process list and parameters live in
robot_compress/ros/launch_description.py, which `robot-compress up` reads too.

    ros2 launch robot_compress perception.launch.py camera:=true \
        camera_source:=/path/to/test_dev.npz edge_server:=true

`launch` and `launch_ros` are imported only when this runs, so the package works without them.
"""

from __future__ import annotations


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, SetEnvironmentVariable
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription
    from robot_compress.ros.launch_description import ARGUMENTS, dds_environment, describe

    def processes(context):
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in ARGUMENTS}
        actions = []
        for spec in describe(values):
            if not spec.ros_node:
                actions.append(ExecuteProcess(cmd=spec.command(), name=spec.name, output="screen"))
                continue
            parameters = [spec.params_file] if spec.params_file else []
            actions.append(Node(package="robot_compress", executable=spec.executable, name=spec.name,
                                parameters=[*parameters, spec.parameters], remappings=list(spec.remappings.items()),
                                output="screen"))
        return actions

    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in ARGUMENTS),
        *(SetEnvironmentVariable(name, value) for name, value in dds_environment().items()),
        OpaqueFunction(function=processes),
    ])
