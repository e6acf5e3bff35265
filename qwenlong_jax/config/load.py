"""ConfigDict <-> frozen dataclasses: the checks every config section shares.

`build(path, value, tp)` turns a ConfigDict (or dict) into the dataclass `tp`, checking each
key against the fields (an unknown key gets a did-you-mean), each value against the field's type
(a Literal names its choices), and running the dataclass's own range checks; every failure is a
one-line `ConfigError` naming the field's path. A float field must be finite (nan and inf are
refused wherever they are set: a run would otherwise fail, or silently train nothing, steps
later). `to_config_dict` is the inverse.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import types
import typing
from typing import Any, Literal

import ml_collections


class ConfigError(ValueError):
    """A config value that is missing, unknown, of the wrong type or out of range."""


def finite(name, v):
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")


def positive(name, v):
    finite(name, v)
    if not v > 0:
        raise ConfigError(f"{name} must be > 0, got {v}")


def at_least(name, v, lo):
    finite(name, v)
    if v < lo:
        raise ConfigError(f"{name} must be >= {lo}, got {v}")


def check_type(path: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if value not in [m.value for m in tp]:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(repr(m.value) for m in tp)}")
        return tp(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        finite(path, float(value))
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(build(f"{path}[{i}]", v, item_tp) for i, v in enumerate(value))
    return value


def build(path: str, value: Any, tp: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, ml_collections.ConfigDict):
            value = value.to_dict()
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a section, got {value!r}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp)}
        kwargs = {}
        for key, v in value.items():
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{path}.{key}: unknown key{hint}")
            kwargs[key] = build(f"{path}.{key}", v, hints[key])
        try:
            return tp(**kwargs)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{path}: {e}") from None
    return check_type(path, value, tp)


def to_config_dict(cfg) -> ml_collections.ConfigDict:
    """The ConfigDict a config file would return for `cfg` (for writing it next to a run)."""

    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, enum.Enum):
            return x.value
        return x

    return ml_collections.ConfigDict(conv(cfg))
