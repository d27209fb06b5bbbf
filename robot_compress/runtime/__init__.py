"""ROS-free, torch-free online core: model contract, preprocessing, backends, router, edge server."""
