"""Link faults for tests, benchmarks and the demo: a fault-injecting TCP proxy, a two-namespace
network harness, and the failure scenarios as data. Plain Python: no ROS, no torch."""
