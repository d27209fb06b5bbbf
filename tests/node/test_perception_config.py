"""Perception settings: config/perception.yaml is the defaults, and every bad value is a clear error."""

from __future__ import annotations

import pytest

from robot_compress.runtime.perception_config import (
    CONFIG_FILE,
    TASK_DEADLINE_MS,
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
    ({"deadline_ms": -1.0}, "field 'deadline_ms' must be in [0, 60000], got -1.0"),
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


def test_deadline_left_at_0_is_the_task_default():
    config = PerceptionConfig.from_flat({})
    assert config.router.deadline_ms == 0.0 and not config.router.resolved
    assert config.for_task("classification").router.deadline_ms == TASK_DEADLINE_MS["classification"] == 60.0
    assert config.for_task("detection").router.deadline_ms == TASK_DEADLINE_MS["detection"] == 250.0
    assert config.router.deadline_origin("detection") == "the detection default, deadline_ms 0"
    assert config.for_task("detection").node == config.node  # only the deadline is filled in


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_a_set_deadline_is_kept_for_every_task(task):
    config = PerceptionConfig.from_flat({"deadline_ms": 150.0, "hedge_after_ms": 100.0})
    assert config.for_task(task).router.deadline_ms == 150.0
    assert config.router.deadline_origin(task) == "set by deadline_ms"


def test_hedge_is_checked_against_the_task_default():
    config = PerceptionConfig.from_flat({"hedge_after_ms": 100.0})  # no deadline yet: nothing to check
    assert config.for_task("detection").router.hedge_after_ms == 100.0
    with pytest.raises(ConfigError, match=r"hedge_after_ms \(100\) must be below deadline_ms \(60, the "
                                          r"classification default\)"):
        config.for_task("classification")
    with pytest.raises(ConfigError, match="no default deadline_ms for task 'segmentation'"):
        config.for_task("segmentation")


def test_the_router_refuses_an_unresolved_deadline():
    from robot_compress.runtime.router import Router
    from tests.runtime.doubles import SlowLocal

    with pytest.raises(ValueError, match="deadline_ms 0 stands for the local model's task default"):
        Router(SlowLocal(), config=RouterConfig())
    router = Router(SlowLocal())
    try:
        assert router.config.deadline_ms == 60.0
    finally:
        router.close()


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
    assert (deadline.floating_point_range[0].from_value, deadline.floating_point_range[0].to_value) == (0.0, 60000.0)
    assert "0 = the local model's task default: classification 60, detection 250 ms" in deadline.description
    queue = descriptor(fields["queue_size"])
    assert (queue.integer_range[0].from_value, queue.integer_range[0].to_value) == (1, 100)
    assert "(one of: cpu, auto)" in descriptor(fields["local_providers"]).description
