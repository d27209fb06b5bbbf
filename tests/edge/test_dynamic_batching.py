"""Dynamic batching end to end: concurrent gRPC clients share model executions, and each still
gets the answer for its own input."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.grpc as triton

from tests.edge_models import tiny_model

CLIENTS = 8


def test_concurrent_clients_are_batched_and_answered_individually(tmp_path, start_edge_server):
    tiny_model(tmp_path, max_batch_size=CLIENTS, max_queue_delay_us=300_000, max_queue_size=16)
    server = start_edge_server(tmp_path, "--strict-queue-delay")
    barrier = threading.Barrier(CLIENTS)
    answers: dict[int, np.ndarray] = {}

    def client(value: int) -> None:
        x = np.full((1, 3, 32, 32), value, dtype=np.float32)  # tiny answers the per-channel mean: value
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        with triton.InferenceServerClient(server.url) as c:
            barrier.wait()
            answers[value] = c.infer("tiny", [tensor], client_timeout=30).as_numpy("scores")

    threads = [threading.Thread(target=client, args=(v,)) for v in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == list(range(CLIENTS))
    for value, scores in answers.items():
        np.testing.assert_allclose(scores, np.full((1, 3), value))
    with triton.InferenceServerClient(server.url) as c:
        (stats,) = c.get_inference_statistics("tiny").model_stats
    assert stats.inference_count == CLIENTS
    assert stats.execution_count < CLIENTS, "no two requests were batched together"
