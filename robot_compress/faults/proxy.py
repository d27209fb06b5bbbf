"""A fault-injecting TCP proxy: the slow, stalled or broken Wi-Fi link between robot and edge.

`tc netem` is missing from this kernel, so faults that need timing (latency, jitter, a bandwidth
cap) are made here in user space, the role toxiproxy plays elsewhere. The same proxy makes the
link black-hole, reset or refuse, switchable at run time from this process (`FaultProxy.update`)
or from another one (`proxy_control.ProxyClient` over a loopback TCP or Unix-socket control channel; a Unix
socket also reaches a proxy running inside another network namespace).

Modes, as the robot sees them:
- pass: bytes flow, each direction shaped by its latency, jitter and bandwidth cap;
- blackhole: connections stay open and new ones are accepted, but nothing is forwarded and
  nothing is closed (no RST, no FIN). Bytes are held, not discarded, and delivered when the link
  comes back, as TCP retransmission would after a Wi-Fi drop, so late answers do arrive late;
- reset: every open connection and every new one is closed with a TCP RST;
- down: existing connections are reset and the listening port is closed (connection refused).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import random
import signal
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import asdict, dataclass, field, replace

from robot_compress.faults.proxy_control import parse_address, start_control_server

READ_CHUNK = 64 * 1024
HELD_LIMIT = 4 * 1024 * 1024  # per direction: beyond this the proxy stops reading (back-pressure)
BANDWIDTH_SLICE_S = 0.01  # a bandwidth-capped direction sends at most 10 ms worth of bytes at once


class Mode(str, enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    RESET = "reset"
    DOWN = "down"


@dataclass(frozen=True)
class Shaping:
    """Shaping of one direction: each chunk is delayed by latency +/- jitter (uniform, order kept,
    as TCP delivers in order) and the direction is capped at bandwidth_bps bytes/s (None: no cap)."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_bps: float | None = None

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"latency_ms and jitter_ms must be >= 0, got {self}")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise ValueError(f"bandwidth_bps must be > 0 or None, got {self.bandwidth_bps}")


@dataclass(frozen=True)
class LinkState:
    """What the link does now. `up` is robot -> edge (client -> upstream), `down` the answers."""

    mode: Mode = Mode.PASS
    up: Shaping = field(default_factory=Shaping)
    down: Shaping = field(default_factory=Shaping)

    def to_dict(self) -> dict:
        return {"mode": self.mode.value, "up": asdict(self.up), "down": asdict(self.down)}

    def updated(self, mode: Mode | str | None = None, up: dict | None = None, down: dict | None = None,
                both: dict | None = None) -> LinkState:
        """A copy with some fields changed; `both` sets the same shaping fields on each direction."""
        up_fields = {**(both or {}), **(up or {})}
        down_fields = {**(both or {}), **(down or {})}
        return LinkState(
            mode=Mode(mode) if mode is not None else self.mode,
            up=replace(self.up, **up_fields),
            down=replace(self.down, **down_fields),
        )


@dataclass
class ProxyStats:
    """Counters a test can assert on: bytes delivered per direction and connections seen."""

    accepted: int = 0
    reset: int = 0
    open: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close a connection with RST instead of FIN (SO_LINGER 0), like a peer that lost its state."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: a reader task queues chunks stamped with their delivery
    time, a writer task sends them when due, at the capped rate, only while the link flows."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 direction: str):
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.direction = direction
        self.queue: deque[tuple[float, bytes]] = deque()
        self.held = 0
        self.last_due = 0.0
        self.changed = asyncio.Event()

    def _shaping(self) -> Shaping:
        return getattr(self.proxy.state, self.direction)

    async def _wait(self, predicate) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait(lambda: self.proxy.flowing.is_set() and self.held < HELD_LIMIT)
            data = await self.reader.read(READ_CHUNK)
            shaping = self._shaping()
            jitter = self.proxy.rng.uniform(-shaping.jitter_ms, shaping.jitter_ms)
            due = loop.time() + max(0.0, shaping.latency_ms + jitter) / 1000.0
            self.last_due = max(self.last_due, due)
            self.queue.append((self.last_due, data))
            self.held += len(data)
            self.changed.set()
            if not data:
                return

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait(lambda: self.proxy.flowing.is_set() and bool(self.queue))
            due, data = self.queue[0]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
                continue
            if not data:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            rate = self._shaping().bandwidth_bps
            piece = data if rate is None else data[: max(1, int(rate * BANDWIDTH_SLICE_S))]
            self.writer.write(piece)
            await self.writer.drain()
            self.proxy.count(self.direction, len(piece))
            if len(piece) < len(data):
                self.queue[0] = (due, data[len(piece):])
            else:
                self.queue.popleft()
            self.held -= len(piece)
            self.changed.set()
            if rate is not None:
                await asyncio.sleep(len(piece) / rate)


class _Connection:
    def __init__(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        self.client_reader = client_reader
        self.client_writer = client_writer
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.pipes: list[_Pipe] = []

    def wake(self) -> None:
        for pipe in self.pipes:
            pipe.changed.set()

    def reset(self) -> None:
        for writer in (self.client_writer, self.upstream_writer):
            if writer is not None:
                _abort_with_rst(writer)


class FaultProxy:
    """Forward `listen` to `upstream` through a runtime-switchable fault. Runs its own event loop
    in a daemon thread; every public method is safe to call from any thread.

    Use as a context manager, or `start()` / `close()`. `address` is the bound (host, port)."""

    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 control: str | None = None, seed: int = 0):
        self.upstream = upstream
        self.listen = listen
        self.control_address = control
        self.state = LinkState()
        self.stats = ProxyStats()
        self.rng = random.Random(seed)
        self.connections: set[_Connection] = set()
        self.flowing: asyncio.Event
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    # ---- public, thread-safe -------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.listen

    @property
    def url(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    def update(self, mode: Mode | str | None = None, up: dict | None = None, down: dict | None = None,
               both: dict | None = None) -> LinkState:
        """Change the link now, e.g. `update(mode="blackhole")` or `update(both={"latency_ms": 50})`."""
        return self._call(self._apply(self.state.updated(mode, up, down, both)))

    def snapshot(self) -> dict:
        return self._call(self._snapshot())

    # ---- event-loop side ------------------------------------------------------------------
    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _snapshot(self) -> dict:
        self.stats.open = len(self.connections)
        return {"state": self.state.to_dict(), "stats": self.stats.to_dict(), "listen": self.url}

    async def _start(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        await self._open_listener()
        if self.control_address:
            self._control = await start_control_server(self.control_address, self._handle_control)

    async def _open_listener(self) -> None:
        self._server = await asyncio.start_server(self._handle_client, self.listen[0], self.listen[1],
                                                  reuse_address=True)
        self.listen = self._server.sockets[0].getsockname()[:2]

    async def _stop(self) -> None:
        for server in (self._server, self._control):
            if server is not None:
                server.close()
        for conn in list(self.connections):
            conn.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _apply(self, state: LinkState) -> LinkState:
        previous, self.state = self.state, state
        if state.mode == Mode.BLACKHOLE:
            self.flowing.clear()
        else:
            self.flowing.set()
        if state.mode in (Mode.RESET, Mode.DOWN):
            for conn in list(self.connections):
                conn.reset()
                self.stats.reset += 1
        if state.mode == Mode.DOWN and self._server is not None:
            self._server.close()
            self._server = None
        if previous.mode == Mode.DOWN and state.mode != Mode.DOWN:
            await self._open_listener()
        for conn in self.connections:
            conn.wake()
        return state

    def count(self, direction: str, n: int) -> None:
        if direction == "up":
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    async def _handle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        conn = _Connection(reader, writer)
        self.connections.add(conn)
        self.stats.accepted += 1
        try:
            await self._serve(conn)
        except (ConnectionError, OSError):
            conn.reset()
        finally:
            self.connections.discard(conn)
            self._tasks.discard(task)
            for w in (conn.client_writer, conn.upstream_writer):
                if w is not None and not w.transport.is_closing():
                    w.close()

    async def _serve(self, conn: _Connection) -> None:
        if self.state.mode in (Mode.RESET, Mode.DOWN):
            conn.reset()
            self.stats.reset += 1
            return
        await self.flowing.wait()  # black hole: the accepted client waits, unconnected, in silence
        if self.state.mode != Mode.PASS:
            conn.reset()
            return
        up_reader, conn.upstream_writer = await asyncio.open_connection(*self.upstream)
        conn.pipes = [_Pipe(self, conn.client_reader, conn.upstream_writer, "up"),
                      _Pipe(self, up_reader, conn.client_writer, "down")]
        loops = [asyncio.create_task(fn()) for p in conn.pipes for fn in (p.read_loop, p.write_loop)]
        try:
            # Each direction ends on its own (half-close); the connection ends when all four do.
            await asyncio.gather(*loops)
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _handle_control(self, request: dict) -> dict:
        op = request.get("op", "get")
        if op == "set":
            await self._apply(self.state.updated(request.get("mode"), request.get("up"),
                                                 request.get("down"), request.get("both")))
        elif op != "get":
            raise ValueError(f"unknown op {op!r} (expected get or set)")
        return await self._snapshot()


def main(argv: list[str] | None = None) -> int:
    """`python -m robot_compress.faults.proxy`: run a proxy until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept the robot on")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the edge server")
    parser.add_argument("--control", help="unix:/path or 127.0.0.1:PORT for ProxyClient")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FaultProxy(parse_address(args.upstream), parse_address(args.listen), args.control, args.seed) as p:
        print(json.dumps({"listen": p.url, "upstream": args.upstream, "control": args.control}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
