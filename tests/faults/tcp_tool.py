"""A TCP echo server and a TCP prober, run as separate processes inside the test namespaces.

`python tcp_tool.py serve HOST PORT` echoes; `python tcp_tool.py probe HOST PORT TIMEOUT` reads
`new` or `old` lines on stdin and answers each with one JSON line: how one echo round trip on a
fresh connection (`new`) or on the connection kept from before (`old`) ended, and how long it took.
"""

from __future__ import annotations

import errno
import json
import socket
import sys
import threading
import time

OUTCOMES = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.ENETUNREACH: "unreachable",
            errno.EHOSTUNREACH: "unreachable", errno.EPIPE: "reset"}


def serve(host: str, port: int) -> None:
    server = socket.create_server((host, port))
    print("ready", flush=True)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    while True:
        conn, _ = server.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def probe(host: str, port: int, timeout: float) -> None:
    kept: socket.socket | None = None
    for line in sys.stdin:
        start = time.monotonic()
        try:
            if line.strip() == "new" or kept is None:
                if kept is not None:
                    kept.close()
                kept = None
                kept = socket.create_connection((host, port), timeout=timeout)
            kept.settimeout(timeout)
            kept.sendall(b"ping")
            reply = kept.recv(4)
            outcome = "ok" if reply == b"ping" else "closed"
        except TimeoutError:
            outcome = "timeout"
        except OSError as exc:
            outcome = OUTCOMES.get(exc.errno, f"errno {exc.errno}")
        if outcome != "ok" and kept is not None:
            kept.close()
            kept = None
        print(json.dumps({"outcome": outcome, "elapsed_s": time.monotonic() - start}), flush=True)


if __name__ == "__main__":
    command, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "serve":
        serve(host, port)
    else:
        probe(host, port, float(sys.argv[4]))
