"""One validation layer for every configuration the package reads: recipes, model manifests, the
perception node's and simulated cameras' parameters, the edge server's settings.

Each is a pydantic model (subclass of `Schema`) whose fields are declared once with `setting()`:
default, description and accepted range. The same declaration validates the input, gives the ROS
parameter descriptors (ros/parameters.py), the `robot-compress compress --help` reference and the
`edge-serve` options (edge/command.py), so they cannot drift apart. `validate()` turns pydantic's
errors into one message per problem that names the file, the field path (with the flag or
variable that gave it, from `names`) and what the field accepts.

Input is validated in pydantic's strict JSON mode: a bool is not a number, "3" is not an int, an
int is a float, a list is a tuple. Parsing JSON text with `validate_json()` caps nesting depth in
pydantic's own parser (a manifest nested thousands of levels deep is an error, not a RecursionError).

Cost on the robot (pydantic 2.12.5, pydantic-core 2.41.5, annotated-types 0.7.0, typing-inspection
0.4.2): 2.6 MB of wheels (x86_64), 7.0 MB installed; importing this module takes 73 ms and
runtime/model_contract.py (its classes built) 141 ms, medians over 15 fresh processes, paid once
per process start; validating a model directory and the node settings then takes 67 ms. Measured with `python benchmarks/schema_import.py` on a 2-core
AMD EPYC (Python 3.11), 2026-12-02; the wheel sizes with the `pip download` line in its docstring.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

S = TypeVar("S", bound="Schema")


@dataclass(frozen=True)
class Range:
    """An accepted interval; open ends (`low_open`, `high_open`) exclude the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}{')' if self.high_open or self.high is None else ']'}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def setting(default: Any = PydanticUndefined, description: str = "", low: float | None = None,
            high: float | None = None, *, low_open: bool = False, high_open: bool = False,
            default_factory: Any = None) -> Any:
    """A field declared once: its default, its description and, for numbers, its accepted range
    (checked on the value, or on each item of a list of numbers)."""
    extra: dict[str, Any] = {}
    if low is not None or high is not None:
        extra["range"] = [low, high, low_open, high_open]
    if default_factory is not None:
        return Field(default_factory=default_factory, description=description, json_schema_extra=extra or None)
    return Field(default, description=description, json_schema_extra=extra or None)


def field_range(info: FieldInfo) -> Range | None:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "range" in extra:
        return Range(*extra["range"])
    return None


def choices(info: FieldInfo) -> tuple[Any, ...]:
    """The values a Literal field (or an optional Literal) accepts; () for other fields."""
    hint = info.annotation
    if get_origin(hint) is Literal:
        return get_args(hint)
    for arg in get_args(hint):
        if get_origin(arg) is Literal:
            return get_args(arg)
    return ()


def is_float(info: FieldInfo) -> bool:
    return info.annotation is float or float in get_args(info.annotation)


class Schema(BaseModel):
    """Base of every validated configuration: frozen, strict, unknown keys refused with the list
    of known ones, ranges from `setting()` checked."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        accepted = field_range(cls.model_fields[info.field_name])
        if accepted is None or value is None:
            return value
        items = value if isinstance(value, (tuple, list)) else (value,)
        if any(item not in accepted for item in items):
            every = "have every item in" if items is value else "be in"
            raise ValueError(f"must {every} {accepted}, got {list(value) if items is value else value!r}")
        return value


def validate(model: type[S], data: Any, where: str, error: type[Exception] = ValueError,
             names: Mapping[str, str] | None = None) -> S:
    """`data` (parsed YAML/JSON, ROS parameter values, command-line options) as a `model`; `error`
    naming `where`, the field path and what it accepts otherwise. `names` maps a field path to how
    the user gives that field (a command-line flag, an environment variable), shown beside it."""
    try:
        text = json.dumps(data, allow_nan=True, default=_path_text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise error(f"{where}: {exc}") from exc
    return validate_json(model, text, where, error, names)


def _path_text(value: Any) -> str:
    """A file path is given as its text (pydantic reads it back as a Path field's value)."""
    if isinstance(value, PurePath):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def validate_json(model: type[S], text: str | bytes, where: str, error: type[Exception] = ValueError,
                  names: Mapping[str, str] | None = None) -> S:
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise error(f"{where}: {describe(exc, model, names)}") from None


def describe(exc: ValidationError, model: type[BaseModel], names: Mapping[str, str] | None = None) -> str:
    """pydantic's errors as `field 'a.b[0]' must be ...` lines (the first three, and a count);
    a path in `names` is followed by its name there: `field 'port' (--port) must be ...`."""
    names = names or {}
    errors = exc.errors(include_url=False)
    unknown: dict[tuple, list[str]] = {}
    for e in errors:
        if e["type"] == "extra_forbidden":
            unknown.setdefault(tuple(e["loc"][:-1]), []).append(str(e["loc"][-1]))
    lines = [_unknown(model, loc, keys, names) for loc, keys in unknown.items()]
    lines += [_one(e, model, names) for e in errors if e["type"] != "extra_forbidden"]
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return "; ".join(lines[:3]) + more


_KINDS = {"int": "int", "float": "float", "string": "str", "bool": "bool", "list": "list", "tuple": "list",
          "dict": "dict", "model": "dict", "model_attributes": "dict", "none": "null"}
_JSON_TYPES = {dict: "dict", list: "list", str: "str", int: "int", float: "float", bool: "bool", type(None): "null"}


def _field(model: type[BaseModel], loc: tuple, names: Mapping[str, str]) -> str:
    """`field 'a.b'`, with the name the user gives it where `names` has one."""
    path = _walk(model, loc)[0]
    return f"field '{path}'" + (f" ({names[path]})" if path in names else "")


def _unknown(model: type[BaseModel], loc: tuple, keys: list[str], names: Mapping[str, str]) -> str:
    known = _walk(model, loc)[1]
    where = _field(model, loc, names) if loc else "top level"
    allowed = f"; allowed: {sorted(known.model_fields)}" if known else ""
    return f"{where}: unknown key(s) {sorted(keys)}{allowed}"


def _walk(model: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """`loc` as a field path ("stages[1] (distill).epochs": a tagged union's tag in brackets) and
    the schema class it ends at (None where that is not one class), following fields, list items
    and tagged unions (a tag picks the member whose Literal field has that single value)."""
    text, hints = "", [model]
    for part in loc:
        following, tag = [], False
        for hint in (c for h in hints for c in _members(h)):
            if isinstance(part, int) and get_origin(hint) in (list, tuple):
                following.append(get_args(hint)[0])
            elif isinstance(hint, type) and issubclass(hint, BaseModel):
                if part in hint.model_fields:
                    following.append(hint.model_fields[part].annotation)
                elif any(choices(f) == (part,) for f in hint.model_fields.values()):
                    following.append(hint)
                    tag = True
        hints = following
        if isinstance(part, int):
            text += f"[{part}]"
        elif tag:
            text += f" ({part})"
        else:
            text += f".{part}" if text else str(part)
    models = [c for h in hints for c in _members(h) if isinstance(c, type) and issubclass(c, BaseModel)]
    return text, models[0] if len(models) == 1 else None


def _members(hint: Any) -> list[Any]:
    """A hint without Annotated and unions: the types a value of it can be."""
    if get_origin(hint) is Annotated:
        return _members(get_args(hint)[0])
    if get_origin(hint) in (Union, UnionType):
        return [m for a in get_args(hint) for m in _members(a)]
    return [hint]


def _one(e: dict[str, Any], model: type[BaseModel], names: Mapping[str, str]) -> str:
    kind, loc, value, ctx = e["type"], tuple(e["loc"]), e.get("input"), e.get("ctx") or {}
    field = _field(model, loc, names) if loc else "top level"
    got = f"{_JSON_TYPES.get(type(value), type(value).__name__)} {value!r:.60}"
    if kind == "missing" and loc and isinstance(loc[-1], int):
        return f"{_field(model, loc[:-1], names)} has too few items (no item [{loc[-1]}])"
    if kind == "missing":
        return f"missing {field}"
    if kind == "json_invalid":
        return f"not valid JSON: {ctx.get('error', e['msg'])}"
    if kind.endswith("_type") and kind[:-5] in _KINDS:
        return f"{field} must be {_KINDS[kind[:-5]]}, got {got}"
    if kind == "union_tag_invalid":
        accepted = re.findall(r"'((?:[^'\\]|\\.)*)'", ctx.get("expected_tags", ""))
        return f"{field}: unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; choose one of {accepted}"
    if kind == "union_tag_not_found":
        return f"{field}: missing key {ctx['discriminator']}"
    if kind in ("literal_error", "enum"):
        accepted = re.findall(r"'((?:[^'\\]|\\.)*)'", ctx.get("expected", ""))
        return f"{field} must be one of {accepted}, got {value!r}"
    if kind in ("too_short", "too_long"):
        count = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{field} must be a list of {count} items, got {ctx.get('actual_length')}"
    if kind == "finite_number":
        return f"{field} must be a finite number, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sign = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
                "less_than_equal": "<= {le}"}[kind].format(**ctx)
        return f"{field} must be {sign}, got {value!r}"
    message = str(ctx.get("error", e["msg"])) if kind == "value_error" else e["msg"]
    message = message.removeprefix("Value error, ")
    return f"{field} {message}" if message.startswith("must") else f"{field}: {message}"


def default_of(info: FieldInfo) -> Any:
    return info.get_default(call_default_factory=True)
