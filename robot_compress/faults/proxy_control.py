"""The fault proxy's control channel, both ends: JSON lines over a Unix socket (which also reaches
a proxy inside another network namespace) or loopback TCP. One request a line, `{"op": "get"}` or
`{"op": "set", ...}`; one reply a line, `{"ok": true, ...state}` or `{"ok": false, "error": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from robot_compress.runtime.polling import wait_until


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)



async def start_control_server(address: str, handler) -> asyncio.Server:
    """JSON-lines control channel on a Unix socket (`unix:/path`) or loopback TCP (`127.0.0.1:P`)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = {"ok": True, **(await handler(json.loads(line)))}
                except (ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    if address.startswith("unix:"):
        path = Path(address[5:])
        path.unlink(missing_ok=True)
        return await asyncio.start_unix_server(serve, str(path))
    host, port = parse_address(address)
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"the control channel listens on loopback only, got {host}")
    return await asyncio.start_server(serve, host, port)


class ProxyClient:
    """Drive a FaultProxy in another process (or another network namespace, over a Unix socket)."""

    def __init__(self, address: str, timeout_s: float = 5.0):
        self.address = address
        self.timeout_s = timeout_s

    def _request(self, request: dict) -> dict:
        if self.address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.address[5:]
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            target = parse_address(self.address)
        with sock:
            sock.settimeout(self.timeout_s)
            sock.connect(target)
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as f:
                reply = json.loads(f.readline())
        if not reply.pop("ok"):
            raise ValueError(f"proxy at {self.address} refused {request}: {reply['error']}")
        return reply

    def get(self) -> dict:
        return self._request({"op": "get"})

    def update(self, mode: str | None = None, up: dict | None = None, down: dict | None = None,
               both: dict | None = None) -> dict:
        request = {"op": "set", "mode": mode, "up": up, "down": down, "both": both}
        return self._request({k: v for k, v in request.items() if v is not None})

    def wait_ready(self, timeout_s: float = 10.0) -> dict:
        """The proxy's state once its control channel answers; TimeoutError (an OSError) if it does not."""
        def answer() -> dict | None:
            try:
                return self.get()
            except OSError:
                return None

        return wait_until(answer, timeout_s, f"the fault proxy's control channel at {self.address}", interval_s=0.05)
