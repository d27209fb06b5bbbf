"""Fixtures shared by every test area (tests/<area>/ each have their own conftest.py too)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from robot_compress.edge.process import EdgeServerProcess
from robot_compress.faults.stall_watch import SIGNIFICANT_STALL_MS, StallWatch
from robot_compress.ros.launch_description import dds_environment
from robot_compress.runtime.processes import free_port  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS = REPO / "models"
EDGE_MODEL = MODELS / "cifar10_resnet56"
SMALL_MODEL = MODELS / "cifar10_resnet20"

MAX_MESSAGE_MB = 4.0  # the shared edge server's message limit: above one 640x640x3 uint8 frame (1.2 MB)

_domain_counter = itertools.count()

# The test process publishes camera-sized images to the nodes too (and reads their results): it
# loads the same shared-memory DDS profile as the processes it starts, before any rclpy.init of
# the session. Without it a 640x480 frame from here goes over fragmented UDP and can be lost.
os.environ.update(dds_environment())

# A test run started in the background (nohup, `&`) inherits SIGINT ignored, and so would every
# child it starts: the Ctrl-C tests would then fail. Python's own handler here means children
# start with the default disposition, as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The offline pipeline's tests need torch, which the robot (and its Docker image) does not have:
# there they are not collected at all, and everywhere else they carry the `torch` marker.
HAVE_TORCH = importlib.util.find_spec("torch") is not None
collect_ignore_glob = [] if HAVE_TORCH else ["compress/*"]


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "tests/compress/" in item.nodeid or item.nodeid.startswith("compress/"):
            item.add_marker(pytest.mark.torch)


def pytest_report_header() -> str:
    return "torch: installed" if HAVE_TORCH else "torch: not installed, tests/compress not collected"


def next_ros_domain_id() -> int:
    """A ROS_DOMAIN_ID for one test: distinct across tests in this run and, by pid, across runs
    that happen at the same time on this machine (Fast DDS accepts 0..232)."""
    return 1 + (os.getpid() * 13 + next(_domain_counter)) % 200


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """Give the test (and the subprocesses it starts) its own ROS_DOMAIN_ID."""
    domain = next_ros_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture(scope="session", autouse=True)
def fastdds_shared_memory_cleanup():
    """Tests SIGKILL ROS processes on purpose; each leaves a 16 MiB Fast DDS segment in /dev/shm.
    Remove those (only segments no live process holds) when the session ends."""
    yield
    from robot_compress.ros.shm_cleanup import clean_zombie_segments

    clean_zombie_segments()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real CIFAR-10 and pretrained weights). Missing data is a failure, not a skip."""
    if not (SHARED_DATA / "cifar10" / "test_dev.npz").is_file():
        pytest.fail(f"{SHARED_DATA} is missing: clone the project with ../shared beside it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_test_dev(shared_data):
    from robot_compress.runtime.datasets import load_cifar10_npz

    return load_cifar10_npz(shared_data / "cifar10" / "test_dev.npz")


# --- real edge servers on loopback ---------------------------------------------------------------
@pytest.fixture(scope="session")
def edge_repository(tmp_path_factory) -> Path:
    """The edge models (classifier and detector) with their shipped batching settings, plus two
    tiny 3-output models."""
    from tests.edge_models import link_model, tiny_model

    repository = tmp_path_factory.mktemp("edge_repository")
    for model in (EDGE_MODEL, MODELS / "coco_yolox_nano_640"):
        link_model(model, repository, max_batch_size=32, max_queue_delay_us=500, max_queue_size=64)
    tiny_model(repository, max_batch_size=8)
    tiny_model(repository, "tiny_logits", output="logits", max_batch_size=8)
    return repository


@pytest.fixture(scope="session")
def edge_server(edge_repository, tmp_path_factory) -> Iterator[EdgeServerProcess]:
    """One server shared by every test that does not disturb it (no freezing, no killing); a test
    that does starts its own with `start_edge_server`."""
    log = tmp_path_factory.mktemp("edge_server") / "server.log"
    server = EdgeServerProcess(edge_repository, log, "--max-message-mb", str(MAX_MESSAGE_MB)).start()
    yield server
    server.stop()


@pytest.fixture
def start_edge_server(tmp_path) -> Iterator[Callable[..., EdgeServerProcess]]:
    """start_edge_server(repository, *args, port=None): a server of the test's own, stopped after it."""
    started: list[EdgeServerProcess] = []

    def start(repository: Path, *args: str, port: int | None = None) -> EdgeServerProcess:
        server = EdgeServerProcess(repository, tmp_path / f"edge_server{len(started)}.log", *args, port=port)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


# --- tests with real-time bounds on a shared VM --------------------------------------------------
# This VM (and CI's) sometimes stands still for hundreds of milliseconds: every process at once.
# A test of frame deadlines or of no-frame-lost cannot pass through that, whatever the code does.
# Tests marked `rerun_after_a_stall` are watched (StallWatch); one that fails while this machine
# stalled for SIGNIFICANT_STALL_MS or more runs once more (pytest-rerunfailures, shown as RERUN),
# one that fails without such a stall fails at once.
_last_watched: dict = {"test": "", "worst_ms": 0.0}


def _failed_during_a_stall(error: BaseException | None) -> bool:
    worst_ms = _last_watched["worst_ms"]
    if error is None or worst_ms < SIGNIFICANT_STALL_MS:
        return False
    warnings.warn(f"{_last_watched['test']} failed while this machine stalled {worst_ms:.0f} ms: running it once more "
                  f"({type(error).__name__}: {str(error)[:300]})", stacklevel=1)
    return True


rerun_after_a_stall = pytest.mark.flaky(reruns=1, condition=_failed_during_a_stall)


def pytest_runtest_setup(item) -> None:
    _last_watched.update(test=item.nodeid, worst_ms=0.0)  # an earlier test's stall must not count


@pytest.fixture(autouse=True)
def _machine_stall_watch(request):
    """Watch this machine's stalls while a `rerun_after_a_stall` test runs (its fixtures included)."""
    if request.node.get_closest_marker("flaky") is None:
        yield
        return
    with StallWatch() as watch:
        yield
    _last_watched.update(test=request.node.nodeid, worst_ms=watch.worst_ms)
