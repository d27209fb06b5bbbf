"""The edge server's settings, each checked against its accepted range before anything starts.

An error names the setting and its command-line flag, the value given and the values accepted.
TLS files and the token are checked here too, so that a garbage certificate is reported as such
and never as a port that cannot be bound, and an empty token never turns authentication off.
"""

from __future__ import annotations

import logging
import os
import ssl
import string
import time
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger("robot_compress.edge")

MiB = 1024 * 1024
TOKEN_ENV = "ROBOT_COMPRESS_EDGE_TOKEN"
# gRPC message limits are 32-bit signed; the transport admits twice --max-message-mb.
MAX_MESSAGE_MB = 1023.0
TOKEN_CHARACTERS = set(string.ascii_letters + string.digits + string.punctuation)


class ConfigError(ValueError):
    """A setting outside its accepted values, or an unusable token or TLS file."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and optionally a CA that client certificates
    must chain to (mutual TLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


# field -> (flag, lowest, highest); None: no bound on that side. Inclusive unless noted in `check`.
RANGES: dict[str, tuple[str, float, float]] = {
    "port": ("--port", 0, 65535),
    "threads": ("--threads", 1, 256),
    "max_concurrent_rpcs": ("--max-concurrent-rpcs", 1, 100_000),
    "max_message_mb": ("--max-message-mb", 0.001, MAX_MESSAGE_MB),
    "default_queue_size": ("--default-queue-size", 1, 1_000_000),
    "grace_s": ("--grace-s", 0.0, 3600.0),
    "receive_timeout_s": ("--receive-timeout-s", 0.01, 3600.0),
    "max_streams_per_connection": ("--max-streams-per-connection", 1, 100_000),
    "max_open_calls": ("--max-open-calls", 1, 1_000_000),
}
INTEGERS = {"port", "threads", "max_concurrent_rpcs", "default_queue_size", "max_streams_per_connection",
            "max_open_calls"}


@dataclass(frozen=True)
class ServerConfig:
    repository: Path
    host: str = "0.0.0.0"
    port: int = 8001  # 0: any free port (see EdgeServer.port)
    threads: int = 1  # ONNX Runtime intra-op threads per model
    max_concurrent_rpcs: int = 64  # inference calls being answered at once; more get RESOURCE_EXHAUSTED
    max_message_mb: float = 16.0
    default_queue_size: int = 64  # for models whose config.pbtxt leaves max_queue_size at 0
    adaptive_delay: bool = True  # see edge.batcher; False waits max_queue_delay exactly as Triton
    token: str | None = None
    tls: TlsFiles | None = None
    grace_s: float = 5.0  # SIGTERM: how long in-flight requests may take to finish
    receive_timeout_s: float = 10.0  # from a call's headers to its whole request message
    max_streams_per_connection: int = 100  # HTTP/2 streams one client connection may have open
    # All calls open at once, also those still receiving their message: bounds memory across
    # connections. Beyond it gRPC answers RESOURCE_EXHAUSTED before reading anything.
    max_open_calls: int = 4096

    def __post_init__(self):
        for item in fields(self):
            if item.name not in RANGES:
                continue
            flag, low, high = RANGES[item.name]
            value = getattr(self, item.name)
            integer = item.name in INTEGERS
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                    or not low <= value <= high:
                kind = "an integer" if integer else "a number"
                raise ConfigError(f"{item.name} ({flag}) must be {kind} in {low:g}..{high:g}, got {value!r}")
        if self.max_open_calls < self.max_concurrent_rpcs:
            raise ConfigError(f"max_open_calls (--max-open-calls) {self.max_open_calls} must be at least "
                              f"max_concurrent_rpcs (--max-concurrent-rpcs) {self.max_concurrent_rpcs}")
        if self.token is not None:
            check_token(self.token, "token")

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)


def check_token(token: str, source: str) -> str:
    """A usable bearer token: non-empty, printable ASCII without spaces (gRPC metadata)."""
    if not token:
        raise ConfigError(f"{source} is empty or only whitespace: refusing to start without "
                          f"authentication the operator asked for")
    bad = sorted(set(token) - TOKEN_CHARACTERS)
    if bad:
        raise ConfigError(f"{source} contains characters a gRPC metadata value cannot carry or that "
                          f"are ambiguous in a token: {''.join(bad)!r} (use printable ASCII without spaces)")
    return token


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> str | None:
    """The token from --token-file, else from $ROBOT_COMPRESS_EDGE_TOKEN; None if neither is given.
    Surrounding whitespace (a trailing newline) is dropped; a file or variable that is given but
    empty is an error, never 'no authentication'."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        return check_token(token_file.read_text().strip(), f"--token-file {token_file}")
    if TOKEN_ENV in environ:
        return check_token(environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    return None


def check_tls(tls: TlsFiles) -> None:
    """Load the files as the TLS stack will, naming the file at fault; warn when the server
    certificate is expired or not yet valid (clients will refuse it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for path, what in ((tls.cert, "--tls-cert"), (tls.key, "--tls-key"), (tls.client_ca, "--tls-client-ca")):
        if path is not None and not path.is_file():
            raise ConfigError(f"{what} {path}: no such file")
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except ssl.SSLError as exc:
        reason = ("the key does not belong to the certificate" if "KEY_VALUES_MISMATCH" in str(exc)
                  else "not a PEM certificate and matching private key")
        raise ConfigError(f"--tls-cert {tls.cert} / --tls-key {tls.key}: {reason} ({exc})") from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca))
        except ssl.SSLError as exc:
            raise ConfigError(f"--tls-client-ca {tls.client_ca}: not a PEM CA certificate ({exc})") from None
    _warn_if_expired(tls.cert)


def _warn_if_expired(cert: Path) -> None:
    try:  # CPython's own PEM decoder; no public API reads a certificate's validity
        decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except Exception:  # only a warning; the TLS stack has accepted the file
        return
    now = time.time()
    if now > not_after:
        log.warning("event=certificate_expired file=%s not_after=%s detail=\"clients will refuse this "
                    "certificate\"", cert, decoded["notAfter"].replace(" ", "_"))
    elif now < not_before:
        log.warning("event=certificate_not_yet_valid file=%s not_before=%s", cert,
                    decoded["notBefore"].replace(" ", "_"))
