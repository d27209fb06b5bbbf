"""The edge server's settings: one schema (runtime/schema.py) that declares each setting's default,
description and accepted range, gives the command line its options and checks the values given.

An error names the setting's field path, how it was given (its command-line flag, or where the
token came from), the value and the values accepted. TLS files and the token are checked here
too, so that a garbage certificate is reported as such and never as a port that cannot be bound,
and an empty token never turns authentication off.
"""

from __future__ import annotations

import logging
import os
import ssl
import string
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo, field_validator

from robot_compress.runtime.schema import Schema, field_range, setting, validate

log = logging.getLogger("robot_compress.edge")

MiB = 1024 * 1024
TOKEN_ENV = "ROBOT_COMPRESS_EDGE_TOKEN"
# gRPC message limits are 32-bit signed; the transport admits twice --max-message-mb.
MAX_MESSAGE_MB = 1023.0
TOKEN_CHARACTERS = set(string.ascii_letters + string.digits + string.punctuation)


class ConfigError(ValueError):
    """A setting outside its accepted values, or an unusable token or TLS file."""


class TlsFiles(Schema):
    """PEM files: the server's certificate and key, and optionally a CA that client certificates
    must chain to (mutual TLS)."""

    cert: Path = setting(description="server certificate (PEM); enables TLS with --tls-key")
    key: Path = setting(description="server private key (PEM)")
    client_ca: Path | None = setting(None, "CA (PEM) that client certificates must chain to (mTLS)")


class ServerConfig(Schema):
    """What the edge server runs with; `edge-serve`'s options are made from these fields."""

    repository: Path = setting(description="Triton-layout repository: "
                               "<name>/{config.pbtxt,manifest.json,<version>/model.onnx}")
    host: str = setting("0.0.0.0", "address to listen on")
    port: int = setting(8001, "gRPC port; 0: any free port (8001 is Triton's)", 0, 65535)
    threads: int = setting(1, "ONNX Runtime intra-op threads per model", 1, 256)
    max_concurrent_rpcs: int = setting(64, "inference calls answered at once, counted from the arrival of their "
                                       "request message; more get RESOURCE_EXHAUSTED", 1, 100_000)
    max_message_mb: float = setting(16.0, "largest request accepted, in MiB", 0.001, MAX_MESSAGE_MB)
    default_queue_size: int = setting(64, "queue bound for models whose config.pbtxt sets no max_queue_size",
                                      1, 1_000_000)
    adaptive_delay: bool = setting(True, "wait for more requests only when recent concurrency suggests more are "
                                   "coming (see edge.batcher); false: always max_queue_delay, as Triton")
    token: str | None = setting(None, "bearer token every call must carry (None: no authentication)")
    tls: TlsFiles | None = setting(None, "TLS files (None: plaintext)")
    grace_s: float = setting(5.0, "on SIGTERM or SIGINT, how long in-flight requests may finish; a second "
                             "signal cuts it short", 0.0, 3600.0)
    receive_timeout_s: float = setting(10.0, "a call must deliver its request message within this time after "
                                       "its headers, or it ends with DEADLINE_EXCEEDED", 0.01, 3600.0)
    max_streams_per_connection: int = setting(100, "calls one client connection may have open at once (HTTP/2 "
                                              "streams; more wait at the client)", 1, 100_000)
    # A bound on memory across connections: every call open, also those still receiving their message.
    max_open_calls: int = setting(4096, "calls open at once over all connections, also those still receiving "
                                  "their message; beyond it RESOURCE_EXHAUSTED before anything is read",
                                  1, 1_000_000)

    @field_validator("token")
    @classmethod
    def _usable_token(cls, token: str | None) -> str | None:
        if token is not None and (problem := token_problem(token)):
            raise ValueError(problem)
        return token

    @field_validator("max_open_calls")
    @classmethod
    def _room_for_concurrent_rpcs(cls, value: int, info: ValidationInfo) -> int:
        concurrent = info.data.get("max_concurrent_rpcs")
        if concurrent is not None and value < concurrent:
            raise ValueError(f"must be at least max_concurrent_rpcs ({FLAGS['max_concurrent_rpcs']}) "
                             f"{concurrent}, got {value}")
        return value

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * MiB)


# The settings with a range: each is the option named after it (max_open_calls: --max-open-calls).
NUMERIC = tuple(name for name, info in ServerConfig.model_fields.items() if field_range(info))
# How each setting is given, shown beside its field path in errors (the token: a file or $TOKEN_ENV).
FLAGS: dict[str, str] = {
    "repository": "--model-repository", "host": "--host", "adaptive_delay": "--strict-queue-delay",
    "token": f"--token-file or ${TOKEN_ENV}", "tls": "--tls-cert, --tls-key, --tls-client-ca",
    **{f"tls.{name}": "--tls-" + name.replace("_", "-") for name in TlsFiles.model_fields},
    **{name: "--" + name.replace("_", "-") for name in NUMERIC},
}


def server_config(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> ServerConfig:
    """The settings `values` gives (defaults for the rest), checked; ConfigError naming the field,
    how it was given (`names` over FLAGS) and what it accepts otherwise."""
    return validate(ServerConfig, dict(values), "settings", ConfigError, {**FLAGS, **(names or {})})


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a bearer token (gRPC metadata: non-empty printable ASCII without
    spaces), or None. The message never quotes the token itself."""
    if not token:
        return "is empty or only whitespace: refusing to start without authentication the operator asked for"
    bad = sorted(set(token) - TOKEN_CHARACTERS)
    if bad:
        return (f"contains characters a gRPC metadata value cannot carry or that are ambiguous in a token: "
                f"{''.join(bad)!r}; it must be printable ASCII without spaces")
    return None


def read_token(token_file: Path | None, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The token from --token-file, else from $ROBOT_COMPRESS_EDGE_TOKEN, and where it came from
    (for errors); (None, None) if neither is given. Surrounding whitespace (a trailing newline) is
    dropped; ServerConfig refuses a token that is then empty, never taking it as 'no authentication'."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        return token_file.read_text().strip(), f"--token-file {token_file}"
    if TOKEN_ENV in environ:
        return environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    return None, None


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
