"""Fixtures of the edge suite: test model repositories and real edge servers on loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EDGE_MODEL
from tests.edge.edge_process import EdgeServerProcess, link_model, tiny_model

EDGE_NAME = EDGE_MODEL.name
MAX_MESSAGE_MB = 1.0


@pytest.fixture(scope="session")
def edge_repository(tmp_path_factory) -> Path:
    """ResNet-56 with its shipped batching settings, plus two tiny 3-output models."""
    repository = tmp_path_factory.mktemp("edge_repository")
    link_model(EDGE_MODEL, repository, max_batch_size=32, max_queue_delay_us=500, max_queue_size=64)
    tiny_model(repository, max_batch_size=8)
    tiny_model(repository, "tiny_logits", output="logits", max_batch_size=8)
    return repository


@pytest.fixture(scope="session")
def edge_server(edge_repository, tmp_path_factory) -> Iterator[EdgeServerProcess]:
    """One shared server for the tests that do not disturb it (no freezing, no killing)."""
    log = tmp_path_factory.mktemp("edge_server") / "server.log"
    server = EdgeServerProcess(edge_repository, log, "--max-message-mb", str(MAX_MESSAGE_MB)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge_manifest():
    from robot_compress.runtime.model_contract import ModelDir

    return ModelDir.load(EDGE_MODEL).manifest


@pytest.fixture
def start_edge_server(tmp_path) -> Iterator[Callable[..., EdgeServerProcess]]:
    """start_edge_server(repository, *args, port=None): a server of the test's own, stopped after it."""
    started: list[EdgeServerProcess] = []

    def start(repository: Path, *args: str, port: int | None = None) -> EdgeServerProcess:
        server = EdgeServerProcess(repository, tmp_path / f"server{len(started)}.log", *args, port=port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
