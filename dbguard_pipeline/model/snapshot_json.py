"""The snapshot's JSON form (what ``dbguard introspect --out`` writes and ``dbguard diff`` reads): a lossless
round trip, ``load_snapshot(dump_snapshot(s)) == s``.

The file carries ``format_version`` as its first key (:data:`FORMAT_VERSION`). Files without it were written
by a dbguard before the key existed and are version 1; a newer version than this dbguard knows is refused
with a one-line error rather than half read. The version lives in the JSON only: the :class:`Snapshot`
dataclass (and its equality) does not carry it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any, Optional

from dbguard_pipeline.errors import DbguardError
from dbguard_pipeline.model.schema import Snapshot

FORMAT_VERSION = 1


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
    data = {"format_version": FORMAT_VERSION, **to_jsonable(snapshot)}
    return json.dumps(data, indent=indent, ensure_ascii=False, sort_keys=False)


def load_snapshot(text: str) -> Snapshot:
    data = json.loads(text)
    problem = _version_problem(data)
    if problem:
        raise DbguardError(problem)
    snapshot: Snapshot = from_jsonable(Snapshot, data)
    return snapshot


# --------------------------------------------------------------------------- checking a file before reading it
def newer_format(data: Any) -> Optional[str]:
    """The one-line refusal of a snapshot written by a newer dbguard (None for this format or an older one;
    a file without ``format_version`` is version 1)."""
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        return f"snapshot format {version} is newer than this dbguard understands ({FORMAT_VERSION})"
    return None


def _version_problem(data: Any) -> Optional[str]:
    if not isinstance(data, dict) or "format_version" not in data:
        return None
    version = data["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return "format_version should be a whole number from 1"
    return newer_format(data)


def check_snapshot_json(data: Any) -> Optional[str]:
    """None when ``data`` (parsed JSON) is a snapshot ``load_snapshot`` can read, else a one-line reason."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    if "findings" in data and "summary" in data:  # a validate report (it lists "tables" too, as names)
        return "it is a dbguard validate report"
    if "changes" in data and data.get("format") == "dbguard-diff":
        return "it is a dbguard diff report"
    return _version_problem(data) or _type_problem(Snapshot, data, "")


def _type_problem(tp: Any, value: Any, where: str) -> Optional[str]:
    """Why ``value`` (parsed JSON) does not fit the model type ``tp``, or None (mirrors :func:`_build`)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_problem(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, list):
            return f"{where} should be a list"
        inner = typing.get_args(tp)[0]
        for i, v in enumerate(value):
            problem = _type_problem(inner, v, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if origin is dict or tp is dict:
        return None if isinstance(value, dict) else f"{where} should be an object"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fields_problem(tp, value, where)
    if tp is bool:
        return None if isinstance(value, bool) else f"{where} should be true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"{where} should be a number"
    if tp is str:
        return None if isinstance(value, str) else f"{where} should be a string"
    return None


def _fields_problem(tp: type, value: Any, where: str) -> Optional[str]:
    if not isinstance(value, dict):
        return f"{where or 'the top level'} should be an object"
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        sub = f"{where}.{f.name}" if where else f.name
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return f"{sub} is missing"
            continue
        problem = _type_problem(hints[f.name], value[f.name], sub)
        if problem:
            return problem
    return None
