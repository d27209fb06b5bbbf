"""Fixtures of the conformance suite: the same model repository served by the project's edge
server and by a real NVIDIA Triton (its Python-backend twin), each on loopback.

Triton takes seconds and much of a shared CPU to start, so one Triton serves the whole session;
only the test that kills a server starts servers of its own. Where Triton cannot start, every
test that needs it fails with the reason: nothing here is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.edge.triton_repository import write_triton_repository
from robot_compress.faults.triton_process import TritonServerProcess, TritonUnavailable
from robot_compress.runtime.model_contract import MANIFEST_FILE, Manifest, ModelDir, write_model_dir
from tests.conftest import EDGE_MODEL, MODELS
from tests.edge_models import link_model, tiny_model

SERVERS = ("edge_server", "triton")
SMALL_QUEUE = "resnet56_small_queue"  # ResNet-56 under another name, with a queue of 2: easy to overload
EDGE_DETECTOR = MODELS / "coco_yolox_nano_640"  # the shipped edge detector: uint8 images in, [100, 6] out


def renamed_model(source: Path, repository: Path, name: str, **config_options) -> Path:
    """Model directory `source` under another name, sharing its ONNX file, with its own config."""
    manifest = Manifest.from_json(json.loads((source / MANIFEST_FILE).read_text()))
    manifest.name = name
    target = repository / name
    target.mkdir(parents=True)
    (target / str(manifest.version)).symlink_to((source / str(manifest.version)).resolve())
    return write_model_dir(target, manifest, source / str(manifest.version) / "model.onnx", **config_options).root


@pytest.fixture(scope="session")
def conformance_repository(tmp_path_factory) -> Path:
    """ResNet-56 and the 640 edge detector with their shipped batching settings, ResNet-56 with a
    queue of 2, and a tiny model whose tensors differ from ResNet-56's."""
    repository = tmp_path_factory.mktemp("conformance_repository")
    for model in (EDGE_MODEL, EDGE_DETECTOR):
        link_model(model, repository, max_batch_size=32, max_queue_delay_us=500, max_queue_size=64)
    renamed_model(EDGE_MODEL, repository, SMALL_QUEUE, max_batch_size=4, max_queue_delay_us=500, max_queue_size=2)
    tiny_model(repository, max_batch_size=8)
    return repository


@pytest.fixture(scope="session")
def edge_manifest() -> Manifest:
    return ModelDir.load(EDGE_MODEL).manifest


def start_triton(repository: Path, workdir: Path) -> TritonServerProcess:
    """Triton on the Python-backend twin of `repository`; a failure (with the reason) if it cannot start."""
    twin = workdir / "repository"
    write_triton_repository(repository, twin)
    try:
        return TritonServerProcess(twin, workdir).start()
    except TritonUnavailable as exc:
        pytest.fail(f"a real Triton could not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def triton(conformance_repository, tmp_path_factory) -> Iterator[TritonServerProcess]:
    server = start_triton(conformance_repository, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def edge_server(conformance_repository, tmp_path_factory) -> Iterator[EdgeServerProcess]:
    log = tmp_path_factory.mktemp("edge_server") / "server.log"
    server = EdgeServerProcess(conformance_repository, log).start()
    yield server
    server.stop()


@pytest.fixture(params=SERVERS)
def server(request):
    """Each conformance test runs once against the project's edge server and once against Triton."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def start_server(tmp_path) -> Iterator[Callable[[str, Path], EdgeServerProcess | TritonServerProcess]]:
    """start_server(kind, repository): a server of the test's own ("edge_server" or "triton"), stopped after it."""
    started = []

    def start(kind: str, repository: Path):
        workdir = tmp_path / f"{kind}{len(started)}"
        workdir.mkdir()
        if kind == "triton":
            server = start_triton(repository, workdir)
        else:
            server = EdgeServerProcess(repository, workdir / "server.log").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
