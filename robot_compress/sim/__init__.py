"""Headless MuJoCo simulation of a TurtleBot3 Waffle Pi in turtlebot3_world, with picture boards and
per-frame ground truth. Plain Python (no ROS); `robot_compress.ros.sim_world` is its ROS shell.
MuJoCo is the optional extra `sim`: `pip install -e .[sim]`."""
