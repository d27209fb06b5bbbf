"""The fault proxy does what each mode says, measured on real sockets (timing bounds are
behaviour bounds with room for a loaded 2-core machine, not speed goals)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from robot_compress.faults.proxy import FaultProxy, LinkState, Mode, Shaping
from robot_compress.faults.proxy_control import ProxyClient

SLACK_S = 0.08  # scheduling noise allowed on top of a configured delay


@pytest.fixture
def proxy(echo_server) -> Iterator[FaultProxy]:
    with FaultProxy(echo_server.address) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return data


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - start


def test_pass_forwards_both_ways_unchanged(proxy, echo_server):
    payload = bytes(range(256)) * 1000
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    stats = proxy.snapshot()["stats"]
    assert stats["bytes_up"] == stats["bytes_down"] == len(payload) == echo_server.received


def test_latency_adds_the_configured_delay_per_direction(proxy):
    with connect(proxy) as sock:
        baseline = min(round_trip(sock) for _ in range(5))
        proxy.update(up={"latency_ms": 120}, down={"latency_ms": 60})
        rtts = [round_trip(sock) for _ in range(5)]
    assert all(0.18 <= rtt <= 0.18 + baseline + SLACK_S for rtt in rtts), rtts


def test_jitter_spreads_delays_within_its_bounds(proxy):
    proxy.update(both={"latency_ms": 50, "jitter_ms": 40})
    with connect(proxy) as sock:
        rtts = [round_trip(sock) for _ in range(20)]
    # Two directions, each 50 +/- 40 ms: round trips lie in [20, 180] ms and are not all equal.
    assert all(0.02 <= rtt <= 0.18 + SLACK_S for rtt in rtts), rtts
    assert max(rtts) - min(rtts) > 0.03, rtts


def test_bandwidth_cap_limits_throughput(proxy):
    rate = 100_000
    proxy.update(up={"bandwidth_bps": rate})
    payload = b"x" * 150_000
    with connect(proxy, timeout=10) as sock:
        start = time.monotonic()
        sock.sendall(payload)
        recv_exactly(sock, len(payload))
        elapsed = time.monotonic() - start
    assert len(payload) / rate * 0.9 <= elapsed <= len(payload) / rate + 0.5, elapsed


def test_blackhole_holds_bytes_without_closing_then_delivers_them(proxy):
    with connect(proxy) as old:
        round_trip(old)
        proxy.update(mode="blackhole")
        old.settimeout(0.5)
        old.sendall(b"held")
        with pytest.raises(TimeoutError):  # no data, no FIN (b""), no RST
            old.recv(16)
        with connect(proxy) as new:  # new connections are accepted but get nothing either
            new.settimeout(0.3)
            new.sendall(b"new")
            with pytest.raises(TimeoutError):
                new.recv(16)
            assert proxy.snapshot()["stats"]["bytes_up"] == 4  # only the first ping went through
            proxy.update(mode="pass")
            new.settimeout(2)
            assert recv_exactly(new, 3) == b"new"
        old.settimeout(2)
        assert recv_exactly(old, 4) == b"held"
        assert round_trip(old) < 0.5


def test_reset_gives_econnreset_on_open_and_new_connections(proxy):
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.update(mode="reset")
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    # On loopback the RST may beat connect() returning, so connect() is inside the raises block.
    with pytest.raises(ConnectionResetError), connect(proxy) as sock:
        sock.sendall(b"x")
        sock.recv(16)
    assert proxy.snapshot()["stats"]["reset"] == 2


def test_down_refuses_and_pass_restores_the_same_port(proxy):
    with connect(proxy) as sock:
        round_trip(sock)
        proxy.update(mode="down")
        with pytest.raises(ConnectionResetError):
            sock.recv(16)
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.update(mode="pass")
    with connect(proxy) as sock:
        assert round_trip(sock) < 0.5


def test_unreachable_upstream_looks_like_a_reset_to_the_client():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()
    with FaultProxy(dead) as proxy, pytest.raises(ConnectionResetError), connect(proxy) as sock:
        sock.sendall(b"x")
        sock.recv(16)


def test_link_state_rejects_nonsense():
    with pytest.raises(ValueError):
        Shaping(latency_ms=-1)
    with pytest.raises(ValueError):
        LinkState().updated(mode="sideways")
    state = LinkState().updated(mode="blackhole", both={"latency_ms": 5}, down={"latency_ms": 7})
    assert state == LinkState(Mode.BLACKHOLE, Shaping(latency_ms=5), Shaping(latency_ms=7))


def test_another_process_controls_the_proxy_over_a_unix_socket(echo_server, tmp_path):
    control = f"unix:{tmp_path / 'proxy.sock'}"
    upstream = f"{echo_server.address[0]}:{echo_server.address[1]}"
    proc = subprocess.Popen([sys.executable, "-m", "robot_compress.faults.proxy", "--upstream", upstream,
                             "--control", control], stdout=subprocess.PIPE, text=True)
    try:
        listen = json.loads(proc.stdout.readline())["listen"]
        host, port = listen.rsplit(":", 1)
        client = ProxyClient(control)
        assert client.wait_ready()["state"]["mode"] == "pass"
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            round_trip(sock)
            client.update(mode="blackhole")
            sock.settimeout(0.3)
            sock.sendall(b"x")
            with pytest.raises(TimeoutError):
                sock.recv(1)
            reply = client.update(mode="pass", both={"latency_ms": 100})
            assert reply["state"]["up"]["latency_ms"] == 100
            sock.settimeout(2)
            assert recv_exactly(sock, 1) == b"x"
            assert round_trip(sock) >= 0.2
        with pytest.raises(ValueError, match="sideways"):
            client.update(mode="sideways")
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0


def _echo_handler() -> grpc.GenericRpcHandler:
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    return grpc.method_handlers_generic_handler("test.Echo", {"Echo": echo})


@pytest.fixture
def grpc_through_proxy() -> Iterator[tuple[FaultProxy, grpc.Channel]]:
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_echo_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with FaultProxy(("127.0.0.1", port)) as proxy, grpc.insecure_channel(proxy.url) as channel:
        yield proxy, channel
    server.stop(grace=None)


def test_grpc_through_the_proxy_fails_and_recovers_as_each_mode_says(grpc_through_proxy):
    proxy, channel = grpc_through_proxy
    call = channel.unary_unary("/test.Echo/Echo")
    assert call(b"hello", timeout=5) == b"hello"

    proxy.update(both={"latency_ms": 100})
    start = time.monotonic()
    assert call(b"slow", timeout=5) == b"slow"
    assert time.monotonic() - start >= 0.2

    proxy.update(mode="blackhole", both={"latency_ms": 0})
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        call(b"lost", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 0.3 + SLACK_S

    proxy.update(mode="reset")
    with pytest.raises(grpc.RpcError) as info:
        call(b"reset", timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    proxy.update(mode="pass")
    deadline = time.monotonic() + 5
    while True:  # gRPC reconnects with backoff; the channel must come back by itself
        try:
            assert call(b"back", timeout=1, wait_for_ready=True) == b"back"
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline
