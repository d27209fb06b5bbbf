"""Perception settings: config/perception.yaml is the defaults, and every bad value is a clear error."""

from __future__ import annotations

import pytest
import yaml

from robot_compress.runtime.perception_config import (
    CONFIG_FILE,
    ConfigError,
    PerceptionConfig,
    RouterConfig,
    settings,
)


def test_yaml_file_holds_exactly_the_defaults():
    parameters = yaml.safe_load(CONFIG_FILE.read_text())["perception_node"]["ros__parameters"]
    assert PerceptionConfig.from_flat(parameters) == PerceptionConfig()
    assert set(parameters) == {f.name for f in settings()}


def test_every_setting_has_a_description():
    assert all(f.metadata["description"] for f in settings())


@pytest.mark.parametrize("values, message", [
    ({"deadline_ms": 0.0}, "'deadline_ms' = 0.0 is out of range [1, 60000]"),
    ({"recovery_probes": 0}, "'recovery_probes' = 0 is out of range"),
    ({"queue_size": 1000}, "'queue_size' = 1000 is out of range [1, 100]"),
    ({"top_k": "three"}, "'top_k' must be int, got str"),
    ({"failure_threshold": True}, "'failure_threshold' must be int, got bool"),
    ({"hedge_after_ms": 80.0, "deadline_ms": 50.0}, "hedge_after_ms (80) must be below deadline_ms (50)"),
    ({"deadline": 50}, "unknown perception setting(s) ['deadline']"),
    ({"local_providers": "gpu"}, "'local_providers' must be one of ['cpu', 'auto'], got 'gpu'"),
])
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError) as info:
        PerceptionConfig.from_flat(values)
    assert message in str(info.value)


def test_ints_are_accepted_for_float_settings():
    assert RouterConfig(deadline_ms=50).deadline_ms == 50.0

