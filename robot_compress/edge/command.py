"""`robot-compress edge-serve`: serve a model repository over the Open Inference Protocol v2 (gRPC).

The options come from the settings' schema (edge/config.py): each numeric setting is the option
named after it, with the schema's default, description and accepted range in its help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_compress.edge.config import FLAGS, NUMERIC, TOKEN_ENV, ServerConfig, TlsFiles
from robot_compress.runtime.schema import default_of, field_range, is_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fields = ServerConfig.model_fields
    parser.add_argument(FLAGS["repository"], dest="model_repository", required=True, type=Path,
                        help=fields["repository"].description)
    parser.add_argument(FLAGS["host"], default=default_of(fields["host"]),
                        help=f"{fields['host'].description} (default: {default_of(fields['host'])})")
    for name in NUMERIC:
        info = fields[name]
        parser.add_argument(FLAGS[name], type=float if is_float(info) else int, default=default_of(info),
                            help=f"{info.description} (accepts {field_range(info)}; default: {default_of(info):g})")
    parser.add_argument(FLAGS["adaptive_delay"], action="store_true",
                        help="always wait max_queue_delay for more requests, as Triton does (default: wait "
                             "only when recent concurrency suggests more requests are coming)")
    parser.add_argument("--token-file", type=Path,
                        help=f"file holding the bearer token every call must carry (or set ${TOKEN_ENV})")
    for name, info in TlsFiles.model_fields.items():
        parser.add_argument(FLAGS[f"tls.{name}"], type=Path, help=info.description)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def settings(args: argparse.Namespace) -> dict:
    """The command line as ServerConfig's fields (the token and TLS files only where given)."""
    values = {"repository": args.model_repository, "host": args.host,
              "adaptive_delay": not args.strict_queue_delay, **{name: getattr(args, name) for name in NUMERIC}}
    tls = {name: getattr(args, f"tls_{name}") for name in TlsFiles.model_fields}
    if any(tls.values()):
        values["tls"] = {name: path for name, path in tls.items() if path is not None}
    return values


def run(args: argparse.Namespace) -> int:
    from robot_compress.edge.config import read_token, server_config
    from robot_compress.edge.logfmt import configure_logging
    from robot_compress.edge.server import serve
    from robot_compress.runtime.errors import RobotCompressError

    configure_logging(args.log_level)
    try:
        values = settings(args)
        token, source = read_token(args.token_file)
        if source is not None:
            values["token"] = token
        return serve(server_config(values, {"token": source} if source else None))
    except (OSError, ValueError, RobotCompressError) as exc:
        print(f"edge-serve: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """The `edge_server` console script and `python -m robot_compress.edge`: same options as
    `robot-compress edge-serve`."""
    parser = argparse.ArgumentParser(prog="edge_server", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
