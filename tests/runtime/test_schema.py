"""The shared validation layer: strict types, ranges, unknown keys and field paths in every error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import pytest
from pydantic import Field

from robot_compress.runtime.schema import Range, Schema, field_range, setting, validate, validate_json


class Part(Schema):
    kind: Literal["part"] = "part"
    size: int = setting(1, "a size", 1, 10)


class Other(Schema):
    kind: Literal["other"] = "other"
    ratio: float = setting(0.5, "a fraction", 0, 1, low_open=True, high_open=True)


class Whole(Schema):
    name: str = setting(description="required")
    sides: tuple[int, int] = setting((1, 1), "two sides", 1, 100)
    items: tuple[Annotated[Union[Part, Other], Field(discriminator="kind")], ...] = ()  # noqa: UP007


@pytest.mark.parametrize("data, message", [
    ({}, "missing field 'name'"),
    ({"name": 3}, "field 'name' must be str, got int 3"),
    ({"name": "x", "sides": [1, True]}, "field 'sides[1]' must be int, got bool True"),
    ({"name": "x", "sides": [1]}, "field 'sides' has too few items"),
    ({"name": "x", "sides": [1, 500]}, "field 'sides' must have every item in [1, 100], got [1, 500]"),
    ({"name": "x", "items": [{"kind": "part", "size": 0}]}, "field 'items[0] (part).size' must be in [1, 10], got 0"),
    ({"name": "x", "items": [{"kind": "part"}, {"kind": "other", "ratio": 1}]}, "field 'items[1] (other).ratio' must be in (0, 1)"),
    ({"name": "x", "items": [{"kind": "whole"}]}, "field 'items[0]': unknown kind 'whole'; choose one of ['part', 'other']"),
    ({"name": "x", "items": [{"kind": "part", "colour": 1}]},
     "field 'items[0] (part)': unknown key(s) ['colour']; allowed: ['kind', 'size']"),
    ({"name": "x", "extra": 1}, "top level: unknown key(s) ['extra']; allowed: ['items', 'name', 'sides']"),
    ({"name": "x", "items": [{"kind": "other", "ratio": float("nan")}]}, "'items[0] (other).ratio' must be a finite number"),
])
def test_errors_name_the_field_path_and_what_it_accepts(data, message):
    with pytest.raises(ValueError) as info:
        validate(Whole, data, "w.yaml")
    assert str(info.value).startswith("w.yaml: ") and message in str(info.value)


def test_valid_data_is_typed():
    whole = validate(Whole, {"name": "x", "sides": [2, 3], "items": [{"kind": "other", "ratio": 1 / 4}, {"kind": "part"}]}, "w")
    assert whole.sides == (2, 3) and isinstance(whole.items[0], Other) and isinstance(whole.items[1], Part)


def test_json_nested_beyond_the_parsers_limit_is_an_error_not_a_recursion_error():
    with pytest.raises(ValueError, match="w.json: not valid JSON: recursion limit exceeded"):
        validate_json(Whole, "[" * 100_000, "w.json")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="^w: "):
        validate(Whole, {"name": "x", "items": deep}, "w")


def test_range_of_a_field_and_its_notation():
    assert field_range(Whole.model_fields["sides"]) == Range(1, 100)
    assert str(Range(0, 1, low_open=True, high_open=True)) == "(0, 1)" and str(Range(0.5, None)) == "[0.5, inf)"
    assert 1 in Range(0, 1) and 1 not in Range(0, 1, high_open=True) and float("nan") not in Range(0, 1)


class Located(Schema):
    place: Path = setting(description="a file")
    whole: Whole | None = None


def test_names_show_how_the_user_gives_a_field_beside_its_path():
    names = {"whole.sides": "--sides", "whole": "--whole-file", "place": "$PLACE"}
    with pytest.raises(ValueError) as info:
        validate(Located, {"place": "p", "whole": {"name": "x", "sides": [1, 500], "colour": 1}}, "cli", names=names)
    assert str(info.value) == ("cli: field 'whole' (--whole-file): unknown key(s) ['colour']; allowed: "
                               "['items', 'name', 'sides']; field 'whole.sides' (--sides) must have every item "
                               "in [1, 100], got [1, 500]")
    with pytest.raises(ValueError, match=r"^cli: missing field 'place' \(\$PLACE\)$"):
        validate(Located, {}, "cli", names=names)
    with pytest.raises(ValueError, match=r"^cli: field 'whole.name' must be str"):  # a path not in names
        validate_json(Located, '{"place": "p", "whole": {"name": 1}}', "cli", names=names)


def test_a_path_object_is_given_as_its_text():
    assert validate(Located, {"place": Path("a/b")}, "w").place == Path("a/b")
    with pytest.raises(ValueError, match="^w: Object of type set is not JSON serializable"):
        validate(Located, {"place": {1}}, "w")
