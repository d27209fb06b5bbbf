"""robot_compress: compressed on-robot vision with edge failover for ROS 2."""

__version__ = "0.1.0"
