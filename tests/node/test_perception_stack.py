"""End to end with real processes: sim_camera -> perception_node -> this test's subscriber, with a
real edge server on loopback (killed and restarted for failover), real rclpy over Fast DDS."""

from __future__ import annotations

import time

import pytest

from robot_compress.runtime.polling import wait_until
from tests.conftest import rerun_after_a_stall
from tests.node.conftest import camera_spec, node_spec, stamp_key

pytestmark = [pytest.mark.timeout(90), rerun_after_a_stall]

PROBE_PERIOD_MS, RECOVERY_PROBES = 200.0, 3
HEALTHY_DEADLINE_MS = 1000.0


def seconds(record: dict) -> float:
    return record["stamp"]["sec"] + record["stamp"]["nanosec"] * 1e-9


def truth_order(listener) -> list[tuple[int, int]]:
    return [stamp_key(t["stamp"]) for t in listener.snapshot("truth")]


def describe(listener) -> str:
    results, truth = listener.snapshot("results"), listener.snapshot("truth")
    missing = sorted(set(truth_order(listener)) - {stamp_key(r["stamp"]) for r in results})
    return (f"{len(results)} results, {len(truth)} truths, missing stamps {missing[:5]}, "
            f"diagnostics {listener.snapshot('diagnostics')}")


def assert_one_result_per_frame_in_order(listener, expected: int, interrupted: bool = False):
    """Results and ground truth name the same frames in the same order. A camera stopped by a signal
    may have sent the last image without its ground truth, or the reverse: that one frame is ignored."""
    wait_until(lambda: min(len(listener.snapshot("results")), len(listener.snapshot("truth"))) >= expected - interrupted,
               20, f"{expected} results and ground truths", detail=lambda: describe(listener))
    time.sleep(0.3)  # a duplicate would arrive now
    results, truth = [stamp_key(r["stamp"]) for r in listener.snapshot("results")], truth_order(listener)
    if interrupted and abs(len(results) - len(truth)) == 1:
        results, truth = results[:len(truth)], truth[:len(results)]
    assert results == truth, describe(listener)
    records = listener.snapshot("results")[:len(results)]
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    assert listener.snapshot("diagnostics")["frames_dropped"] == "0"
    return records


def test_healthy_edge_answers_every_frame_once_in_order(processes, edge_server, listener, cifar_test_dev, shared_data):
    # The robot's 60 ms deadline is the fault tests' subject. Here a loaded CI machine once took
    # 180-425 ms for a probe on loopback, the router rightly failed over, and no frame went via the edge.
    # This test checks the edge path itself, so its deadline leaves room for such a stall.
    node = processes.start_spec(node_spec(edge_server.url, probe_period_ms=PROBE_PERIOD_MS,
                                          deadline_ms=HEALTHY_DEADLINE_MS, probe_timeout_ms=HEALTHY_DEADLINE_MS))
    listener.wait_for_backend("edge", 20)
    frames = 24
    camera = processes.start_spec(camera_spec(shared_data / "cifar10" / "test_dev.npz", frames, 12.0))
    assert camera.wait(30) == 0, processes.output(camera)
    results = assert_one_result_per_frame_in_order(listener, frames)
    assert {r["backend"] for r in results} == {"edge"}
    truth = {stamp_key(t["stamp"]): t["class_id"] for t in listener.snapshot("truth")}
    correct = sum(r["class_id"] == truth[stamp_key(r["stamp"])] for r in results)
    assert correct >= 0.8 * frames  # ResNet-56 is 93% on test_dev: the pixels arrive intact
    diagnostics = wait_until(lambda: (d := listener.snapshot("diagnostics")).get("frames_out") == str(frames) and d,
                             5, "diagnostics to count every frame")
    assert (diagnostics["frames_in"], diagnostics["frames_dropped"], diagnostics["bad_input"]) == (str(frames), "0", "0")
    assert diagnostics["state"] == "edge" and float(diagnostics["edge_rtt_p50_ms"]) > 0
    assert node.poll() is None


def test_force_local_service_switches_backend(processes, edge_server, listener):
    from std_srvs.srv import SetBool

    processes.start_spec(node_spec(edge_server.url, probe_period_ms=100.0, recovery_probes=2))
    listener.wait_for_backend("edge", 20)
    client = listener.node.create_client(SetBool, "/perception_node/force_local")
    assert client.wait_for_service(10)
    future = client.call_async(SetBool.Request(data=True))
    wait_until(future.done, 10, "force_local answer")
    assert future.result().success
    wait_until(lambda: listener.backend_now() == "local", 5, "backend local")
    time.sleep(0.5)
    assert listener.backend_now() == "local"  # stays local while forced, although the edge is fine
    future = client.call_async(SetBool.Request(data=False))
    wait_until(future.done, 10, "force_local release answer")
    wait_until(lambda: listener.backend_now() == "edge", 5, "backend edge after release")


def test_edge_killed_then_restarted(processes, start_edge_server, edge_repository, listener, shared_data):
    edge_server = start_edge_server(edge_repository)
    processes.start_spec(node_spec(edge_server.url, probe_period_ms=PROBE_PERIOD_MS, recovery_probes=RECOVERY_PROBES,
                                   deadline_ms=100.0))
    listener.wait_for_backend("edge", 20)
    camera = processes.start_spec(camera_spec(shared_data / "cifar10" / "test_dev.npz", 0, 10.0, loop=True))
    wait_until(lambda: len(listener.snapshot("results")) >= 5, 20, "first edge results")

    kill_started = time.monotonic()
    edge_server.kill()
    killed_at = time.time()
    local_at = listener.wait_for_backend("local", 5, since=kill_started)
    wait_until(lambda: sum(seconds(r) > killed_at for r in listener.snapshot("results")) >= 5, 10,
               "frames after the kill")

    edge_server.start()
    ready_at, ready_wall = time.monotonic(), time.time()
    back_at = listener.wait_for_backend("edge", 15, since=local_at)
    bound_s = PROBE_PERIOD_MS / 1000 * RECOVERY_PROBES + 1.0
    assert back_at - ready_at <= bound_s, f"back to edge {back_at - ready_at:.2f} s after restart, bound {bound_s} s"
    edge_again = len(listener.snapshot("results"))
    wait_until(lambda: len(listener.snapshot("results")) >= edge_again + 5, 10, "frames after recovery")
    processes.stop(camera)

    results = assert_one_result_per_frame_in_order(listener, len(listener.snapshot("truth")), interrupted=True)
    while_down = [r for r in results if killed_at < seconds(r) < ready_wall]
    assert len(while_down) >= 5 and {r["backend"] for r in while_down} == {"local"}
    assert results[-1]["backend"] == "edge"
    local = [r for r in results if r["backend"] == "local"]
    assert local and all(r["class_id"] is not None for r in local)
    diagnostics = wait_until(lambda: (d := listener.snapshot("diagnostics")).get("failovers") != "0" and d,
                             5, "failover in diagnostics")
    assert int(diagnostics["failovers"]) >= 1 and diagnostics["state"] == "edge"


def test_compressed_camera_local_only(processes, listener, shared_data):
    processes.start_spec(node_spec(""))
    listener.wait_for_backend("local", 20)
    frames = 12
    camera = processes.start_spec(camera_spec(shared_data / "cifar10" / "test_dev.npz", frames, 20.0, compressed=True))
    assert camera.wait(30) == 0, processes.output(camera)
    results = assert_one_result_per_frame_in_order(listener, frames)
    assert {r["backend"] for r in results} == {"local"}
    truth = {stamp_key(t["stamp"]): t["class_id"] for t in listener.snapshot("truth")}
    assert sum(r["class_id"] == truth[stamp_key(r["stamp"])] for r in results) >= 0.7 * frames
