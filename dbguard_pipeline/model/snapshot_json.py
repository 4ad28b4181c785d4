"""The snapshot's JSON form: a lossless round trip, ``load_snapshot(dump_snapshot(s)) == s``."""
from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, Optional

from dbguard_pipeline.model.schema import Snapshot


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def _build(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _build(args[0], value)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_build(inner, v) for v in value)
    if origin is dict or tp is dict:
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    return value


def from_jsonable(tp: type, value: Any) -> Any:
    return _build(tp, value)


def dump_snapshot(snapshot: Snapshot, indent: Optional[int] = 2) -> str:
    return json.dumps(to_jsonable(snapshot), indent=indent, ensure_ascii=False, sort_keys=False)


def load_snapshot(text: str) -> Snapshot:
    return from_jsonable(Snapshot, json.loads(text))
