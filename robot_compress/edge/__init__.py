"""The edge inference service: a model repository served over the Open Inference Protocol v2 (gRPC).

Runs on the edge machine, never on the robot; the robot's side of the link is
`robot_compress.runtime.edge_client`, which shares only `runtime.edge_protocol` with this package.
"""
