"""The edge server's settings: one schema gives the command line its options and defaults, and
every bad value is refused naming the field, how it was given and what it accepts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from robot_compress.edge.command import add_arguments, settings
from robot_compress.edge.config import FLAGS, TOKEN_ENV, ConfigError, ServerConfig, read_token, server_config


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--model-repository", "models", *argv])


def test_defaults_are_the_documented_ones():
    config = server_config(settings(parse()))
    assert config.model_dump() == {
        "repository": Path("models"), "host": "0.0.0.0", "port": 8001, "threads": 1, "max_concurrent_rpcs": 64,
        "max_message_mb": 16.0, "default_queue_size": 64, "adaptive_delay": True, "token": None, "tls": None,
        "grace_s": 5.0, "receive_timeout_s": 10.0, "max_streams_per_connection": 100, "max_open_calls": 4096}
    assert config.max_message_bytes == 16 * 1024 * 1024


def test_options_map_to_their_fields():
    config = server_config(settings(parse("--port", "0", "--max-message-mb", "0.5", "--strict-queue-delay",
                                          "--tls-cert", "c.pem", "--tls-key", "k.pem")))
    assert (config.port, config.max_message_mb, config.adaptive_delay) == (0, 0.5, False)
    assert (config.tls.cert, config.tls.key, config.tls.client_ca) == (Path("c.pem"), Path("k.pem"), None)


def test_help_shows_each_numeric_settings_range_and_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "(accepts [0, 65535]; default: 8001)" in text and "(accepts [0.001, 1023]; default: 16)" in text


@pytest.mark.parametrize("argv, message", [
    (("--port", "70000"), "field 'port' (--port) must be in [0, 65535], got 70000"),
    (("--threads", "0"), "field 'threads' (--threads) must be in [1, 256], got 0"),
    (("--max-message-mb", "5000"), "field 'max_message_mb' (--max-message-mb) must be in [0.001, 1023], got 5000.0"),
    (("--receive-timeout-s", "0"), "field 'receive_timeout_s' (--receive-timeout-s) must be in [0.01, 3600]"),
    (("--max-open-calls", "10"),
     "field 'max_open_calls' (--max-open-calls) must be at least max_concurrent_rpcs (--max-concurrent-rpcs) 64, "
     "got 10"),
    (("--tls-key", "k.pem"), "missing field 'tls.cert' (--tls-cert)"),
    (("--tls-client-ca", "ca.pem"), "missing field 'tls.cert' (--tls-cert); missing field 'tls.key' (--tls-key)"),
], ids=lambda value: value[0] if isinstance(value, tuple) else None)
def test_bad_option_names_the_field_its_flag_and_what_it_accepts(argv, message):
    with pytest.raises(ConfigError) as info:
        server_config(settings(parse(*argv)))
    assert str(info.value).startswith(f"settings: {message}"), info.value


@pytest.mark.parametrize("values, message", [
    ({"port": True}, "field 'port' (--port) must be int, got bool True"),
    ({"port": 8001.0}, "field 'port' (--port) must be int, got float 8001.0"),
    ({"host": None}, "field 'host' (--host) must be str, got null None"),
    ({"grace_s": float("nan")}, "field 'grace_s' (--grace-s) must be a finite number"),
    ({"tls": {"cert": "c", "key": "k", "ca": "x"}}, "field 'tls' (--tls-cert, --tls-key, --tls-client-ca): "
                                                    "unknown key(s) ['ca']; allowed: ['cert', 'client_ca', 'key']"),
    ({"workers": 3}, "top level: unknown key(s) ['workers']; allowed: ['adaptive_delay', "),
])
def test_bad_values_given_in_code_are_named_too(values, message):
    with pytest.raises(ConfigError) as info:
        server_config({"repository": "models", **values})
    assert str(info.value).startswith(f"settings: {message}"), info.value


@pytest.mark.parametrize("token, problem", [("", "is empty or only whitespace"), ("a b", "printable ASCII"),
                                            ("tök", "printable ASCII")])
def test_unusable_token_is_named_by_where_it_came_from_and_never_echoed(tmp_path, token, problem):
    (tmp_path / "token").write_text(f"  {token}\n")
    for token_file, environ, source in ((tmp_path / "token", {}, f"--token-file {tmp_path / 'token'}"),
                                        (None, {TOKEN_ENV: token}, f"${TOKEN_ENV}")):
        value, given_by = read_token(token_file, environ)
        assert given_by == source
        with pytest.raises(ConfigError) as info:
            server_config({"repository": "models", "token": value}, {"token": given_by})
        assert f"field 'token' ({source}): " in str(info.value) and problem in str(info.value)
        assert not token or token not in str(info.value)


def test_no_token_given_means_no_authentication_and_a_given_one_is_kept(tmp_path):
    assert read_token(None, {}) == (None, None)
    value, source = read_token(None, {TOKEN_ENV: " s3cret-token\n"})
    assert server_config({"repository": "models", "token": value}, {"token": source}).token == "s3cret-token"


def test_every_field_has_a_name_for_its_errors():
    assert set(ServerConfig.model_fields) <= set(FLAGS)
