"""First on a child's PYTHONPATH, this stands in for a ROS install without vision_msgs: the node
and sim_world then publish their std_msgs/String JSON (tests/node/conftest.py, without_vision_msgs)."""

raise ImportError("vision_msgs hidden for the test of the JSON fallback")
