"""Perception settings: config/perception.yaml is the defaults, and every bad value is a clear error."""

from __future__ import annotations

import pytest

from robot_compress.runtime.perception_config import (
    CONFIG_FILE,
    TOKEN_ENV,
    ConfigError,
    NodeConfig,
    PerceptionConfig,
    RouterConfig,
    edge_token,
    load_yaml,
    settings,
)


def test_yaml_file_holds_exactly_the_defaults():
    assert load_yaml(CONFIG_FILE) == PerceptionConfig()
    assert set(load_yaml(CONFIG_FILE).flat()) == set(settings())


def test_every_setting_has_a_description():
    assert all(f.description for f in settings().values())


@pytest.mark.parametrize("values, message", [
    ({"deadline_ms": 0.0}, "field 'deadline_ms' must be in [1, 60000], got 0.0"),
    ({"recovery_probes": 0}, "field 'recovery_probes' must be in [1, 1000], got 0"),
    ({"queue_size": 1000}, "field 'queue_size' must be in [1, 100], got 1000"),
    ({"top_k": "three"}, "field 'top_k' must be int, got str 'three'"),
    ({"failure_threshold": True}, "field 'failure_threshold' must be int, got bool"),
    ({"hedge_after_ms": 80.0, "deadline_ms": 50.0}, "hedge_after_ms (80) must be below deadline_ms (50)"),
    ({"deadline": 50}, "unknown setting(s) ['deadline']"),
    ({"local_providers": "gpu"}, "field 'local_providers' must be one of ['cpu', 'auto'], got 'gpu'"),
    ({"edge_token": "secret"}, "unknown setting(s) ['edge_token']"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError) as info:
        PerceptionConfig.from_flat(values)
    assert message in str(info.value)


def test_ints_are_accepted_for_float_settings():
    assert RouterConfig(deadline_ms=50).deadline_ms == 50.0
    assert PerceptionConfig.from_flat({"deadline_ms": 50}).router.deadline_ms == 50.0


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("perception_node:\n  ros__parameters:\n    probe_period_ms: -1.0\n")
    with pytest.raises(ConfigError, match=f"{path}: field 'probe_period_ms' must be in"):
        load_yaml(path)
    path.write_text("[not, a, mapping")
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(path)


def test_edge_token_comes_from_the_file_then_the_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    assert edge_token(NodeConfig(edge_token_file=str(token_file)), {TOKEN_ENV: "other"}) == "s3cret"
    assert edge_token(NodeConfig(), {TOKEN_ENV: " from-env "}) == "from-env"
    assert edge_token(NodeConfig(), {}) is None


@pytest.mark.parametrize("content", ["", "  \n\t"])
def test_blank_edge_token_is_an_error(tmp_path, content):
    token_file = tmp_path / "token"
    token_file.write_text(content)
    with pytest.raises(ConfigError, match=f"'edge_token_file': {token_file} is empty"):
        edge_token(NodeConfig(edge_token_file=str(token_file)), {})
    with pytest.raises(ConfigError, match=f"\\${TOKEN_ENV} is set but empty"):
        edge_token(NodeConfig(), {TOKEN_ENV: content})
    with pytest.raises(ConfigError, match="cannot read"):
        edge_token(NodeConfig(edge_token_file=str(tmp_path / "missing")), {})


def test_ros_descriptors_come_from_the_fields():
    from robot_compress.ros.parameters import descriptor

    fields = settings()
    deadline = descriptor(fields["deadline_ms"])
    assert deadline.read_only and deadline.description == fields["deadline_ms"].description
    assert (deadline.floating_point_range[0].from_value, deadline.floating_point_range[0].to_value) == (1.0, 60000.0)
    queue = descriptor(fields["queue_size"])
    assert (queue.integer_range[0].from_value, queue.integer_range[0].to_value) == (1, 100)
    assert "(one of: cpu, auto)" in descriptor(fields["local_providers"]).description
