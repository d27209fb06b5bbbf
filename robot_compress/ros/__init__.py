"""rclpy shells over runtime/: the perception node, the simulated camera, the launch description."""
